"""Student frames from raw body-morpher outputs on a pixel subset: warp, blend, 8-bit, background.

The student's last step (facts §4.2, ``Student.compose`` on the whole canvas) is per pixel:
warped = grid_sample(face-edited image, identity + flow), blended = lerp(warped, colour, alpha).
``SubsetCompositor`` runs that step only on the pixels of a ``PixelLevel`` (the canvas area the
character can reach) and writes them into a frame whose other pixels are the input image. It converts
with lookup tables built from ``kyara.image``'s own conversions (``tensor_to_rgba_u8``,
``composite_over``), so the frames match the full-frame path: alpha and background compositing
exactly, sRGB colour to within one level on values that fall within 1/65536 of a rounding edge.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kyara.geometry import STUDENT_FACE_BOX
from kyara.image import composite_over, tensor_to_rgba_u8
from kyara.student.pixels import PixelLevel

SRGB_LUT_CELLS = 65536   # model-space [-1, 1] → 8-bit sRGB table resolution


def srgb_lut(cells: int = SRGB_LUT_CELLS) -> torch.Tensor:
    """(cells + 1,) uint8: 8-bit sRGB of model-space value -1 + 2·i/cells (via tensor_to_rgba_u8)."""
    v = torch.linspace(-1.0, 1.0, cells + 1, dtype=torch.float64).float()
    probe = torch.stack([v, v, v, torch.ones_like(v)]).view(4, 1, -1)
    return torch.from_numpy(np.ascontiguousarray(tensor_to_rgba_u8(probe)[0, :, 0]))


def background_lut(background: tuple[int, int, int]) -> torch.Tensor:
    """(65536, 3) uint8: row alpha·256 + value → composite_over of (value, alpha) on background,
    one column per RGB channel."""
    value, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    rgba = np.stack([value, value, value, alpha], axis=2)                     # (256 alpha, 256 value, 4)
    return torch.from_numpy(composite_over(rgba, background).reshape(65536, 3))


class SubsetCompositor:
    """Student frames from face RGBA and raw body outputs at `pixels`: (512, 512, 4) RGBA or
    (512, 512, 3) RGB uint8.

    image: (4, 512, 512) model-space character image; its face box is replaced by each frame's face.
    pixels: the output PixelLevel (size 512) where the body outputs are given. Every other pixel
    is the input image (the body network's identity there), converted once: transparent pixels as
    (0, 0, 0, 0), or exactly `background` (RGB, when background is given).
    """

    def __init__(self, image: torch.Tensor, pixels: PixelLevel, background: tuple[int, int, int] | None = None):
        if image.shape != (4, pixels.size, pixels.size):
            raise ValueError(f"image {tuple(image.shape)} does not match a {pixels.size}² pixel set")
        self.edited = image.detach().float().unsqueeze(0).clone()          # (1, 4, S, S), face pasted in place
        self.index = pixels.index
        if self.index.numel() and self.index.max() >= pixels.size ** 2:
            raise ValueError("pixel index outside the canvas")
        self.base_grid = pixels.position                                     # identity grid at the pixels
        self.channels = 3 if background is not None else 4
        self.srgb = srgb_lut()
        # Channel c's table starts at row c·65536 of the flattened (3 × 65536) background table.
        self.composite = background_lut(background).t().reshape(-1).contiguous() if background is not None else None
        self.channel_offset = (torch.arange(3, dtype=torch.int32) * 65536).view(3, 1)
        still = tensor_to_rgba_u8(self.edited[0])
        still[still[..., 3] == 0] = 0
        self.template = torch.from_numpy(composite_over(still, background) if background is not None else still)

    @staticmethod
    def prepare(features: torch.Tensor) -> torch.Tensor:
        """(N, M, 7) body outputs → the same values stored channel-major, so that interpolating two
        keyframes and reading one channel at a time (``frame``) run over contiguous memory."""
        return features.transpose(-1, -2).contiguous().transpose(-1, -2)

    def frame(self, face: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        """face: (4, 128, 128) model-space face-morpher output for STUDENT_FACE_BOX; features: (M, 7)
        [flow x, flow y, alpha, colour RGBA] at the pixels → a new (S, S, channels) uint8 frame."""
        with torch.inference_mode():
            STUDENT_FACE_BOX.crop(self.edited)[0].copy_(face)
            grid = (self.base_grid + features[:, 0:2]).view(1, 1, -1, 2)
            warped = F.grid_sample(self.edited, grid, mode="bilinear", padding_mode="border",
                                   align_corners=False).view(4, -1)           # (4, M)
            blended = torch.lerp(warped, features[:, 3:7].t(), features[:, 2])
            cells = SRGB_LUT_CELLS
            index = blended[:3].add(1.0).mul_(cells / 2).round_().clamp_(0, cells).int()
            rgb = self.srgb.index_select(0, index.view(-1)).view(3, -1)        # (3, M) uint8
            # tensor_to_rgba_u8's alpha: rint(clip((a + 1) / 2, 0, 1) · 255).
            alpha = blended[3].add(1.0).mul_(0.5).clamp_(0.0, 1.0).mul_(255.0).round_()
            if self.composite is not None:
                key = rgb.int().add_(alpha.int().mul_(256)).add_(self.channel_offset)   # (3, M)
                values = self.composite.index_select(0, key.view(-1)).view(3, -1).t()
            else:
                values = torch.cat([rgb, alpha.to(torch.uint8).unsqueeze(0)]).t()
            out = self.template.clone()
            out.view(-1, self.channels).index_copy_(0, self.index, values.contiguous())
            return out.numpy()
