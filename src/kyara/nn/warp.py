"""Appearance flow and alpha blending: the image operations the posing networks end with.

A *flow* is (N, 2, H, W): channel 0 is the x offset and channel 1 the y offset of the sampling
position, in normalized [-1, 1] image coordinates (align_corners=False convention). Because the
offsets are normalized, a flow can be bilinearly resized to another resolution without rescaling.
Images are (N, C, H, W) in any float dtype; the functions are pure and keep the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


_IDENTITY_GRIDS: dict[tuple, torch.Tensor] = {}


def identity_grid(height: int, width: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, H, W, 2) sampling grid that reproduces the image: (x, y) pixel centres in [-1, 1].

    Cached per (size, dtype, device): read-only, created outside inference mode and autograd so it
    can be shared by any caller (and so a captured CUDA graph never has to build it).
    """
    device = torch.device(device)
    key = (height, width, dtype, device)
    grid = _IDENTITY_GRIDS.get(key)
    if grid is None:
        with torch.inference_mode(False), torch.no_grad():
            theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype, device=device)
            grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)
        _IDENTITY_GRIDS[key] = grid
    return grid


def apply_flow(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` (N, C, H, W) by ``flow`` (N, 2, H, W) → (N, C, H, W).

    Output pixel p takes the bilinear sample of ``image`` at identity(p) + flow(p); samples outside
    the image clamp to the border.
    """
    n, _, h, w = flow.shape
    if image.shape[-2:] != (h, w) or image.shape[0] != n:
        raise ValueError(f"apply_flow: image {tuple(image.shape)} and flow {tuple(flow.shape)} disagree")
    grid = identity_grid(h, w, dtype=flow.dtype, device=flow.device) + flow.permute(0, 2, 3, 1)  # (N, H, W, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_flow_at(image: torch.Tensor, flow: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``apply_flow`` at M pixels only: image (N, C, H, W), flow (N, 2, M) at the pixels whose flat indices
    (row · W + col) are index (M,) → (N, C, M), apply_flow's output at those pixels (the same sampling
    positions, identity_grid's, so the same numbers)."""
    n, c, h, w = image.shape
    if flow.dim() != 3 or flow.shape[:2] != (n, 2) or index.shape != (flow.shape[2],):
        raise ValueError(f"apply_flow_at: image {tuple(image.shape)}, flow {tuple(flow.shape)} and index "
                         f"{tuple(index.shape)} disagree (want (N, C, H, W), (N, 2, M), (M,))")
    centres = identity_grid(h, w, dtype=flow.dtype, device=flow.device).view(h * w, 2).index_select(0, index)
    grid = (centres.unsqueeze(0) + flow.transpose(1, 2)).unsqueeze(1)                  # (N, 1, M, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False).squeeze(2)


def apply_color_change(alpha: torch.Tensor, color_change: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """color_change·alpha + image·(1 − alpha), on every channel.

    alpha (N, 1 or C, H, W) in [0, 1]; color_change, image (N, C, H, W) → (N, C, H, W).
    """
    return color_change * alpha + image * (1 - alpha)


def apply_rgb_change(alpha: torch.Tensor, color_change: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Like ``apply_color_change`` on the RGB channels only; the alpha channel is ``image``'s.

    alpha (N, 1, H, W) in [0, 1]; color_change, image (N, 4, H, W) RGBA → (N, 4, H, W).
    """
    rgb = color_change[:, :3] * alpha + image[:, :3] * (1 - alpha)
    return torch.cat([rgb, image[:, 3:4]], dim=1)
