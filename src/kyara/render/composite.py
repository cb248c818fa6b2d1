"""Layout and alpha compositing of several character frames on one canvas.

All images are (H, W, 4) uint8 sRGB straight-alpha RGBA (file space, see ``kyara.image``).
Compositing happens in sRGB, like ``kyara.image.composite_over`` and the official puppeteers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kyara.image import open_image, parse_color


@dataclass(frozen=True)
class Placement:
    """Where a character frame goes on the canvas.

    center_x: horizontal centre of the frame in canvas pixels; bottom_y: canvas row of the frame's
    bottom edge (characters stand on it); scale: frame size multiplier (1 = 512 px for THA frames).
    """
    center_x: float
    bottom_y: float
    scale: float = 1.0


def make_canvas(width: int, height: int, background: str | tuple[int, int, int] | Path | None) -> np.ndarray:
    """A (height, width, 4) uint8 canvas: transparent (None / 'transparent'), a colour
    ('green', '#rrggbb', 'r,g,b', a tuple) or an image file scaled to cover and centre-cropped."""
    if width < 1 or height < 1:
        raise ValueError(f"canvas size must be positive, got {width}×{height}")
    canvas = np.zeros((height, width, 4), dtype=np.uint8)
    if background is None:
        return canvas
    if isinstance(background, Path) or (isinstance(background, str) and Path(background).suffix.lower()
                                         in (".png", ".jpg", ".jpeg", ".webp")):
        img = open_image(background).convert("RGBA")
        scale = max(width / img.width, height / img.height)
        w, h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
        img = img.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        return np.asarray(img.crop((left, top, left + width, top + height)), dtype=np.uint8).copy()
    rgb = parse_color(background)
    if rgb is not None:
        canvas[:, :, :3] = rgb
        canvas[:, :, 3] = 255
    return canvas


def scale_frame(rgba: np.ndarray, scale: float) -> np.ndarray:
    """Resize (H, W, 4) uint8 RGBA by `scale`, premultiplied so transparent colours do not bleed."""
    if abs(scale - 1.0) < 1e-6:
        return rgba
    h, w = rgba.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = Image.fromarray(rgba, "RGBA").convert("RGBa").resize(size, Image.BILINEAR if scale > 1 else Image.BOX)
    return np.asarray(img.convert("RGBA"), dtype=np.uint8)


def alpha_over(canvas: np.ndarray, layer: np.ndarray, left: int, top: int) -> None:
    """Draw straight-alpha `layer` (h, w, 4) uint8 over `canvas` (H, W, 4) uint8 in place, with its
    top-left corner at (left, top); parts outside the canvas are clipped."""
    H, W = canvas.shape[:2]
    h, w = layer.shape[:2]
    x0, y0, x1, y1 = max(0, left), max(0, top), min(W, left + w), min(H, top + h)
    if x0 >= x1 or y0 >= y1:
        return
    src = layer[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.float32)
    dst = canvas[y0:y1, x0:x1].astype(np.float32)
    a_src = src[:, :, 3:4] / 255.0
    a_dst = dst[:, :, 3:4] / 255.0
    a_out = a_src + a_dst * (1.0 - a_src)
    rgb = (src[:, :, :3] * a_src + dst[:, :, :3] * a_dst * (1.0 - a_src)) / np.maximum(a_out, 1e-6)
    canvas[y0:y1, x0:x1, :3] = np.rint(np.clip(rgb, 0, 255)).astype(np.uint8)
    canvas[y0:y1, x0:x1, 3:4] = np.rint(a_out * 255.0).astype(np.uint8)


def compose(background: np.ndarray, layers: list[tuple[np.ndarray, Placement]]) -> np.ndarray:
    """Copy of `background` (H, W, 4) with each (frame, placement) drawn in list order (later on top)."""
    canvas = background.copy()
    for rgba, place in layers:
        scaled = scale_frame(rgba, place.scale)
        h, w = scaled.shape[:2]
        alpha_over(canvas, scaled, round(place.center_x - w / 2), round(place.bottom_y - h))
    return canvas
