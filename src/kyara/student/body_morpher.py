"""Student body morpher: a multi-resolution SIREN that turns head and body by warping the image
with an appearance flow and blending in directly generated pixels (THA4 §4.1, facts §4.2).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kyara.nn.siren import SineLinear, conditioned_first_layer, linear_head, linear_nhwc, position_grid, sine
from kyara.nn.warp import apply_flow
from kyara.pose import NUM_PARAMETERS

if TYPE_CHECKING:
    from kyara.student.pixels import PixelSet

# (resolution, width, output width) per level; the last layer of a level emits the next level's width.
LEVELS: tuple[tuple[int, int, int], ...] = ((128, 360, 180), (256, 180, 90), (512, 90, 90))


class BodyMorpherOutput(NamedTuple):
    """All (N, C, 512, 512) float, model space where images.

    image: blended result (N, 4); alpha: (N, 1) raw blend weight (no sigmoid, as THA4);
    color: directly generated RGBA (N, 4); warped: input warped by flow (N, 4);
    flow: (N, 2) offsets in normalized [-1, 1] coordinates (x then y), added to the identity grid.
    """
    image: torch.Tensor
    alpha: torch.Tensor
    color: torch.Tensor
    warped: torch.Tensor
    flow: torch.Tensor


class BodyMorpher(nn.Module):
    """(image (N, 4, 512, 512), pose (N, 45)) → BodyMorpherOutput. 331,567 parameters.

    Each level sees [upsampled features of the previous level, position, pose] (pose and
    position re-injected at every level); state-dict keys ``siren_layers.{level}.{j}.linear.*``,
    ``last_linear.*``.
    """

    def __init__(self, levels: tuple[tuple[int, int, int], ...] = LEVELS, layers_per_level: int = 3):
        super().__init__()
        self.levels = levels
        cond = 2 + NUM_PARAMETERS
        blocks = []
        prev_out = 0
        for i, (_, width, out_width) in enumerate(levels):
            widths = [prev_out + cond] + [width] * (layers_per_level - 1) + [out_width]
            blocks.append(nn.ModuleList(
                SineLinear(a, b, is_first=(i == 0 and j == 0)) for j, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
            ))
            prev_out = out_width
        self.siren_layers = nn.ModuleList(blocks)
        self.last_linear = linear_head(prev_out, 7)
        for i, (res, _, _) in enumerate(levels):
            self.register_buffer(f"position_{i}", position_grid(res, res), persistent=False)

    def features(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (N, 45) → (N, 7, 512, 512) raw head outputs [flow(2), alpha(1), color(4)].

        Channels-last evaluation of exactly the official formulation (1×1 convs over concatenations;
        tests/reference_student.py).
        """
        x = None
        for i, layers in enumerate(self.siren_layers):
            position = getattr(self, f"position_{i}")[0].permute(1, 2, 0).to(pose.dtype)   # (H, W, 2)
            x = sine(conditioned_first_layer(layers[0].linear, position, pose, x))         # (N, H, W, C)
            for layer in layers[1:]:
                x = sine(linear_nhwc(x, layer.linear))
        return linear_nhwc(x, self.last_linear).permute(0, 3, 1, 2)                       # (N, 7, H, W)

    def features_at(self, pose: torch.Tensor, pixels: "PixelSet") -> torch.Tensor:
        """pose (N, 45) → (N, M, 7) raw head outputs at the M pixels of pixels.output (its index order).

        Exactly ``features`` restricted to a pixel subset (kyara.student.pixels.PixelSet with one
        level per SIREN level, on pose's device), differentiable: region-restricted training and
        rendering evaluate only the canvas a character can reach. Upsampling is a 4-tap gather of
        the previous level's output already projected by this level's first layer (W·up(f) = up(W·f)).
        """
        if len(pixels.levels) != len(self.siren_layers):
            raise ValueError(f"pixel set has {len(pixels.levels)} levels, the body morpher {len(self.siren_layers)}")
        x = None
        for layers, level in zip(self.siren_layers, pixels.levels):
            w = layers[0].linear.weight.flatten(1)
            c_f = w.shape[1] - 2 - pose.shape[1]
            z = (F.linear(level.position.to(pose.dtype), w[:, c_f:c_f + 2]).unsqueeze(0)         # (1, M, C)
                 + F.linear(pose, w[:, c_f + 2:], layers[0].linear.bias).unsqueeze(1))          # (N, 1, C)
            if x is not None:
                low = F.linear(x, w[:, :c_f])                                                  # (N, M_prev, C)
                weights = level.tap_weights.to(pose.dtype)
                for k in range(weights.shape[1]):
                    z = z + low[:, level.taps[:, k]] * weights[:, k, None]
            x = sine(z)
            for layer in layers[1:]:
                x = sine(linear_nhwc(x, layer.linear))
        return linear_nhwc(x, self.last_linear)

    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> BodyMorpherOutput:
        return self.compose(image, self.features(pose))

    @staticmethod
    def compose(image: torch.Tensor, out: torch.Tensor) -> BodyMorpherOutput:
        """Warp image (N, 4, 512, 512) by the head outputs out (N, 7, 512, 512) = [flow, alpha, colour]
        and blend in the colour: the body morpher's last step, shared with the CPU evaluator."""
        flow, alpha, color = out[:, 0:2], out[:, 2:3], out[:, 3:7]
        warped = apply_flow(image, flow)
        blended = (1 - alpha) * warped + alpha * color
        return BodyMorpherOutput(blended, alpha, color, warped, flow)
