"""Student face morpher: a SIREN that paints the character's movable face parts for a pose.

It never reads the image: the character is baked into its weights (THA4 §4.1, facts §4.2).
"""
from __future__ import annotations

import torch
from torch import nn

from kyara.geometry import STUDENT_FACE_BOX
from kyara.nn.siren import Siren, conditioned_first_layer, linear_nhwc, position_grid, sine
from kyara.pose import FACE_ALL

FACE_POSE_DIM = FACE_ALL.stop - FACE_ALL.start   # 39 eyebrow + face parameters


class FaceMorpher(nn.Module):
    """pose (N, 39) → RGBA (N, 4, 128, 128) for STUDENT_FACE_BOX, model space (linear, [-1, 1], no tanh).

    41 inputs per pixel (x, y, 39 pose values), 8 sine layers of width 128, linear head to 4.
    121,476 parameters; state-dict keys ``siren.sine_layers.{0..7}.linear.*``, ``siren.last_linear.*``.
    """

    def __init__(self, hidden: int = 128, num_layers: int = 8, size: int = STUDENT_FACE_BOX.height):
        super().__init__()
        self.size = size
        self.siren = Siren(2 + FACE_POSE_DIM, hidden, num_layers, 4)
        self.register_buffer("position", position_grid(size, size), persistent=False)

    def forward(self, face_pose: torch.Tensor) -> torch.Tensor:
        """Channels-last evaluation, exactly the official conv formulation (tests/reference_student.py)."""
        layers = self.siren.sine_layers
        position = self.position[0].permute(1, 2, 0).to(face_pose.dtype)                 # (S, S, 2)
        x = sine(conditioned_first_layer(layers[0].linear, position, face_pose))         # (N, S, S, hidden)
        for layer in layers[1:]:
            x = sine(linear_nhwc(x, layer.linear))
        return linear_nhwc(x, self.siren.last_linear).permute(0, 3, 1, 2)              # (N, 4, S, S)
