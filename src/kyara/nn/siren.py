"""SIREN building blocks (Sitzmann et al. 2020) as used by the THA4 student.

Layers are 1×1 convolutions so a network maps a (N, C_in, H, W) grid of per-pixel inputs to
(N, C_out, H, W) outputs; every sine layer computes sin(omega_0 · (W x + b)) with omega_0 = 30.
Attribute names (``linear``, ``sine_layers``, ``last_linear``) follow the official THA4 state dicts.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

OMEGA_0 = 30.0


class SineLinear(nn.Module):
    """sin(omega_0 · conv1x1(x)). x: (N, C_in, H, W) → (N, C_out, H, W) in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, *, is_first: bool = False, omega_0: float = OMEGA_0):
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
        # SIREN init: first layer U(-1/in, 1/in); later layers U(±sqrt(6/in)/omega_0) so that
        # pre-activations stay ~unit-variance through the stack.
        bound = 1.0 / in_channels if is_first else math.sqrt(6.0 / in_channels) / omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


def linear_head(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Final 1×1 linear layer, He-initialised (fan_in) as in THA4."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
    with torch.no_grad():
        conv.bias.zero_()
    return conv


class Siren(nn.Module):
    """A stack of sine layers followed by a linear head.

    in_channels → hidden (num_layers sine layers) → out_channels (linear, no activation).
    """

    def __init__(self, in_channels: int, hidden: int, num_layers: int, out_channels: int):
        super().__init__()
        widths = [in_channels] + [hidden] * num_layers
        self.sine_layers = nn.ModuleList(
            SineLinear(a, b, is_first=(i == 0)) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.last_linear = linear_head(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.sine_layers:
            x = layer(x)
        return self.last_linear(x)


def sine(z: torch.Tensor, omega_0: float = OMEGA_0) -> torch.Tensor:
    return torch.sin(omega_0 * z)


def linear_nhwc(x: torch.Tensor, conv: nn.Conv2d, bias: bool = True) -> torch.Tensor:
    """Apply a 1×1 conv's weights to a channels-last (..., C_in) tensor → (..., C_out).

    Same math as ``conv(x_nchw)``; as one GEMM over all pixels it is several times faster than
    cuDNN's 1×1 convolution for these narrow layers, forward and backward.
    """
    return F.linear(x, conv.weight.flatten(1), conv.bias if bias else None)


def conditioned_first_layer(conv: nn.Conv2d, position_nhwc: torch.Tensor, pose: torch.Tensor,
                            features_low_res: torch.Tensor | None = None) -> torch.Tensor:
    """Pre-activation of a layer whose input is cat([upsample2x(features), position, pose]).

    conv: 1×1 conv over (C_f + 2 + P) channels; position_nhwc: (H, W, 2); pose: (N, P);
    features_low_res: (N, H/2, W/2, C_f) or None. Returns (N, H, W, C_out).
    Exact rewrites of the concatenation (no (N, H, W, C_f + 2 + P) tensor is built):
    the pose term is a per-image bias, the position term is shared by the batch, and
    W·upsample(f) = upsample(W·f) because bilinear upsampling is linear (4× fewer MACs).
    """
    w = conv.weight.flatten(1)
    c_f = w.shape[1] - 2 - pose.shape[1]
    z = F.linear(position_nhwc, w[:, c_f:c_f + 2]).unsqueeze(0)                     # (1, H, W, C_out)
    z = z + F.linear(pose, w[:, c_f + 2:], conv.bias)[:, None, None, :]               # (N, H, W, C_out)
    if features_low_res is not None:
        low = F.linear(features_low_res, w[:, :c_f])                                  # (N, H/2, W/2, C_out)
        z = z + upsample2x(low.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return z


def position_grid(height: int, width: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, H, W) pixel-centre coordinates in (-1, 1): channel 0 is x, channel 1 is y.

    Same values as ``affine_grid(identity, align_corners=False)``.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0)


def broadcast_pose(pose: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, P) → (N, P, H, W) view (no copy)."""
    return pose[:, :, None, None].expand(-1, -1, height, width)


def upsample2x(features: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2, align_corners=False (as THA4's multi-resolution SIREN)."""
    return F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
