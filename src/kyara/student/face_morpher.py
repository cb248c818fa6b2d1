"""Student face morpher: a SIREN that paints the character's movable face parts for a pose.

It never reads the image: the character is baked into its weights (THA4 §4.1, facts §4.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kyara.geometry import STUDENT_FACE_BOX
from kyara.nn import fused_siren
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

    def forward_at(self, face_pose: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``forward`` at M pixels only (training on a pixel subset): face_pose (N, 39), index (M,) flat
        indices (row · size + col) into the face box → (N, 4, M), forward's values at those pixels."""
        layers = self.siren.sine_layers
        position = self.position[0].permute(1, 2, 0).reshape(-1, 2).index_select(0, index)   # (M, 2)
        x = sine(conditioned_first_layer(layers[0].linear, position.unsqueeze(0).to(face_pose.dtype), face_pose))
        for layer in layers[1:]:                                                            # (N, 1, M, hidden)
            x = sine(linear_nhwc(x, layer.linear))
        return linear_nhwc(x, self.siren.last_linear)[:, 0].transpose(1, 2)                  # (N, 4, M)

    def fused_forward(self, face_pose: torch.Tensor) -> torch.Tensor:
        """``forward`` through the fused Triton kernels (kyara.nn.fused_siren): same maths and shapes,
        the first layer one position + pose + sine kernel, every other sine layer one matmul + sine
        kernel; differentiable. Without autograd the whole network is one kernel (fused_siren.sine_chain)."""
        layers = self.siren.sine_layers
        w = layers[0].linear.weight.flatten(1)
        n, size = face_pose.shape[0], self.size
        inference = not torch.is_grad_enabled() or not (face_pose.requires_grad or any(p.requires_grad for p in self.parameters()))
        terms = torch.float32 if inference else face_pose.dtype   # fp16 inference: the pose term in fp32 (×ω₀ = 30)
        pose_bias = F.linear(face_pose.to(terms), w[:, 2:].to(terms), layers[0].linear.bias.to(terms))   # (N, C)
        position = self.position[0].permute(1, 2, 0).reshape(size * size, 2)              # (S·S, 2)
        hidden = [(layer.linear.weight.flatten(1), layer.linear.bias) for layer in layers[1:]]
        head = self.siren.last_linear
        if inference and fused_siren.chain_fits(w.shape[0], hidden):   # the whole network in one kernel
            tensors = [t for pair in hidden for t in pair] + [head.weight, head.bias]
            key = (face_pose.dtype, face_pose.device, tuple((t.data_ptr(), t._version) for t in tensors))
            try:
                if self.__dict__.get("_chain", (None,))[0] != key:
                    self._chain = (key, fused_siren.make_chain(hidden, head.weight.flatten(1), head.bias, w.shape[0],
                                                               face_pose.dtype))
                out = fused_siren.sine_chain(position, w[:, :2], pose_bias, None, None, None, self._chain[1], len(hidden),
                                             out_dtype=face_pose.dtype)
                return out.view(n, size, size, -1).permute(0, 3, 1, 2)
            except Exception as e:   # noqa: BLE001 - e.g. out of on-chip memory on this GPU: layer by layer
                fused_siren.disable_chains(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        x = fused_siren.sine_first_layer(position, w[:, :2], pose_bias, out_dtype=face_pose.dtype)   # (N, S·S, C)
        for weight, bias in hidden:
            x = fused_siren.sine_linear(x, weight, bias)
        return linear_nhwc(x, head).view(n, size, size, -1).permute(0, 3, 1, 2)
