"""Image I/O and THA's pixel conventions, as pure functions.

Model space ("signed linear"): float32 tensors (C=4, H, W) or (N, 4, H, W); RGB is *linear* light,
every channel in [-1, 1] (x*2-1 of [0, 1]); alpha is straight (not premultiplied); fully
transparent pixels are (0, 0, 0, 0) in [0, 1] terms, i.e. (-1, -1, -1, -1) in model space.
File space: 8-bit sRGB RGBA (H, W, 4) uint8.

Every conversion between the two lives here (tha3-tha4-facts.md §2). Nothing else in kyara writes
``* 2 - 1``, ``/ 255`` or an sRGB curve.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kyara.errors import ImageError, OutputError  # noqa: F401 (ImageError re-exported)
from kyara.geometry import CANVAS

# Decompression-bomb guard: refuse images above this many pixels before decoding them.
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 200 * 1024 * 1024
SRGB_TO_LINEAR_THRESHOLD = 0.04045
LINEAR_TO_SRGB_THRESHOLD = 0.003130804953560372


# -- colour curves (numpy float64 in, same out; torch variants keep dtype) --------------------------
def _piecewise(x, threshold: float, low, high):
    """x clipped to [0, 1], then low(x) up to threshold and high(x) above it (numpy or torch).

    high gets its input clamped to the threshold: the same values (where picks low below it), but no infinite
    derivative of a power at 0 to turn the gradient into nan (0 × inf) when a loss differentiates through it."""
    if isinstance(x, torch.Tensor):
        x = x.clamp(0.0, 1.0)
        return torch.where(x <= threshold, low(x), high(x.clamp_min(threshold)))
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= threshold, low(x), high(x))


def srgb_to_linear(x):
    """sRGB-encoded values in [0, 1] → linear light in [0, 1] (input clipped first)."""
    return _piecewise(x, SRGB_TO_LINEAR_THRESHOLD, lambda v: v / 12.92, lambda v: ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """Linear light in [0, 1] → sRGB-encoded values in [0, 1] (input clipped first)."""
    return _piecewise(x, LINEAR_TO_SRGB_THRESHOLD, lambda v: v * 12.92, lambda v: 1.055 * v ** (1.0 / 2.4) - 0.055)


def unit_to_signed(x):
    """[0, 1] → [-1, 1]."""
    return x * 2.0 - 1.0


def signed_to_unit(x):
    """[-1, 1] → [0, 1] (no clipping)."""
    return (x + 1.0) * 0.5


def premultiply(image_unit: torch.Tensor) -> torch.Tensor:
    """(..., 4, H, W) straight RGBA in [0, 1] → premultiplied RGBA in [0, 1]."""
    return torch.cat([image_unit[..., :3, :, :] * image_unit[..., 3:4, :, :], image_unit[..., 3:4, :, :]], dim=-3)


def display_space(images: torch.Tensor) -> torch.Tensor:
    """(..., 4, H, W) model space → display space in [0, 1], same dtype: sRGB colour × alpha (over
    black) and alpha, clipped: what a saved PNG shows, up to 8-bit rounding (what metrics compare)."""
    unit = signed_to_unit(images)
    srgb = linear_to_srgb(unit[..., :3, :, :])
    alpha = unit[..., 3:4, :, :].clamp(0.0, 1.0)
    return premultiply(torch.cat([srgb, alpha], dim=-3))


def to_premultiplied(image: torch.Tensor) -> torch.Tensor:
    """(..., 4, H, W) model space, straight → model space with linear RGB multiplied by alpha (the
    official THA4 input convention: premultiplied in [0, 1] linear light, then x*2-1). Same dtype."""
    return unit_to_signed(premultiply(signed_to_unit(image)))


def to_straight(image: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_premultiplied`` for network outputs: linear RGB divided by alpha where alpha > 0,
    colour 0 where alpha ≤ 0 (invisible). Exact inverse wherever alpha > 0: to_premultiplied(to_straight(x))
    equals x up to float rounding. Not clipped: a network output with colour > alpha gives colour > 1,
    which the display conversion clips like any other out-of-range value."""
    unit = signed_to_unit(image)
    alpha = unit[..., 3:4, :, :]
    visible = alpha > 0
    rgb = torch.where(visible, unit[..., :3, :, :] / torch.where(visible, alpha, torch.ones_like(alpha)), 0.0)
    return unit_to_signed(torch.cat([rgb, alpha], dim=-3))


# -- file space <-> model space --------------------------------------------------------------------
def rgba_u8_to_tensor(rgba: np.ndarray) -> torch.Tensor:
    """(H, W, 4) uint8 sRGB straight RGBA → (4, H, W) float32 model space.

    Fully transparent pixels are zeroed first (THA3 convention), then sRGB→linear in float64,
    then [-1, 1]. Bit-identical to the official tha3 loader.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ImageError(f"expected an (H, W, 4) uint8 RGBA array, got {rgba.shape} {rgba.dtype}")
    rgba = rgba.copy()
    rgba[rgba[:, :, 3] == 0] = 0
    unit = rgba / 255.0
    unit[:, :, :3] = srgb_to_linear(unit[:, :, :3])
    return torch.from_numpy(np.ascontiguousarray(unit_to_signed(unit).transpose(2, 0, 1))).float()


def tensor_to_rgba_u8(image: torch.Tensor) -> np.ndarray:
    """(4, H, W) model space → (H, W, 4) uint8 sRGB straight RGBA.

    A GPU tensor is converted on its device and only the uint8 bytes cross to the host (the float
    sRGB curve on the CPU costs ~20 ms a frame, more than the student itself); values can differ
    from the CPU path by one level where a value sits on a rounding boundary.
    """
    if image.device.type != "cpu":
        return _tensor_to_rgba_u8_on_device(image)
    _check_image_tensor(image)
    unit = signed_to_unit(image.detach().float().numpy().transpose(1, 2, 0))
    rgba = np.concatenate([linear_to_srgb(unit[:, :, :3]), np.clip(unit[:, :, 3:4], 0.0, 1.0)], axis=2)
    return np.rint(rgba * 255.0).astype(np.uint8)


def _tensor_to_rgba_u8_on_device(image: torch.Tensor) -> np.ndarray:
    _check_image_tensor(image)
    unit = signed_to_unit(image.detach().float())
    rgba = torch.cat([linear_to_srgb(unit[:3]), unit[3:4].clamp(0.0, 1.0)])
    return torch.round(rgba * 255.0).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def _check_image_tensor(image: torch.Tensor) -> None:
    if image.ndim != 3 or image.shape[0] != 4:
        raise ImageError(f"expected a (4, H, W) image tensor, got {tuple(image.shape)}")


def parse_color(color: str | tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """'transparent'/None → None; 'green', '#00ff00', '0,255,0' or a tuple → (r, g, b) 0..255."""
    if color is None:
        return None
    if isinstance(color, tuple):
        return tuple(int(c) for c in color)  # type: ignore[return-value]
    s = color.strip().lower()
    named = {"transparent": None, "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0),
             "white": (255, 255, 255), "magenta": (255, 0, 255), "gray": (128, 128, 128)}
    if s in named:
        return named[s]
    try:
        if s.startswith("#") and len(s) == 7:
            return tuple(int(s[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(p) for p in s.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return tuple(parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise ImageError(f"cannot parse colour {color!r}: use a name ({', '.join(named)}), '#rrggbb' or 'r,g,b'")


def composite_over(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 4) uint8 straight sRGB RGBA over an opaque colour → (H, W, 3) uint8.

    Blends in sRGB space after conversion, as the official puppeteers do.
    """
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    out = rgba[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.rint(out).astype(np.uint8)


# -- loading ----------------------------------------------------------------------------------------
def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file with clear errors (missing, unreadable, truncated, bomb)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: file is empty")
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: file is {size / 2**20:.0f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB")
    return decode_image_bytes(path.read_bytes(), name=str(path))


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (PNG, WebP or JPEG expected)") from None
    except Exception as e:
        raise ImageError(f"{name}: cannot read image: {e}") from None
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: image is {w}×{h} = {w * h / 1e6:.0f} MP; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                         "(decompression-bomb guard)")
    try:
        img.load()
    except OSError as e:
        raise ImageError(f"{name}: image data is truncated or corrupt ({e})") from None
    except Exception as e:
        raise ImageError(f"{name}: cannot decode image: {e}") from None
    return img


def to_rgba_array(img: Image.Image, name: str = "image", require_alpha: bool = True) -> np.ndarray:
    """PIL image → (H, W, 4) uint8, checking that it really has transparency."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha and require_alpha:
        raise ImageError(
            f"{name}: image has no alpha channel (mode {img.mode}). THA needs a character on a transparent "
            "background (alpha = 0 outside the character); remove the background first."
        )
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
    if require_alpha and rgba[:, :, 3].min() == 255:
        raise ImageError(
            f"{name}: image has an alpha channel but no transparent pixels. THA needs the background "
            "to be transparent (alpha = 0); remove the background first."
        )
    return rgba


def fit_to_canvas(rgba: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """Scale (H, W, 4) uint8 RGBA to fit a size×size canvas keeping the aspect ratio, centred, padded
    with transparent pixels."""
    h, w = rgba.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # Resize premultiplied so transparent pixels' colours do not bleed into edges.
    img = Image.fromarray(rgba, "RGBA").convert("RGBa").resize((nw, nh), Image.LANCZOS).convert("RGBA")
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load_rgba(path: str | Path, fit: bool = False, size: int = CANVAS) -> np.ndarray:
    """Load a character image as (size, size, 4) uint8 sRGB RGBA, validated for THA.

    fit=True scales and pads other sizes to size×size keeping the aspect ratio; otherwise any other
    size is an error that suggests --fit.
    """
    img = open_image(path)
    rgba = to_rgba_array(img, name=str(path))
    h, w = rgba.shape[:2]
    if (h, w) != (size, size):
        if not fit:
            raise ImageError(f"{path}: image is {w}×{h}; THA needs {size}×{size}. Use --fit to scale and pad it "
                             "(keeps the aspect ratio), or crop it yourself so the head sits in the top-centre.")
        rgba = fit_to_canvas(rgba, size)
    return rgba


def load_image(path: str | Path, fit: bool = False) -> torch.Tensor:
    """Load a character image file → (4, 512, 512) float32 model space (see module docstring)."""
    return rgba_u8_to_tensor(load_rgba(path, fit=fit))


# -- saving -----------------------------------------------------------------------------------------
def _new_file_mode(path: Path) -> int:
    """An existing file's permission bits, else 0666 minus the process umask (what open() would give)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path via a temp file in the same directory and an atomic rename.

    Any OS failure (read-only or full filesystem, permission denied, a file where a folder should be)
    raises kyara.errors.OutputError naming `path`; the target is left untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _new_file_mode(path))  # mkstemp files are 0600; give the mode open() would
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise OutputError.writing(path, e) from e


def encode_image(rgba: np.ndarray, fmt: str = "PNG", background: tuple[int, int, int] | None = None, **opts) -> bytes:
    """(H, W, 4) uint8 RGBA → encoded bytes (PNG/WEBP/JPEG); over `background` if given (JPEG needs one)."""
    fmt = fmt.upper()
    if background is None and fmt == "JPEG":
        background = (255, 255, 255)
    img = Image.fromarray(composite_over(rgba, background), "RGB") if background else Image.fromarray(rgba, "RGBA")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **opts)
    return buf.getvalue()


FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def save_image(image: torch.Tensor | np.ndarray, path: str | Path, background: str | tuple | None = None) -> Path:
    """Save a (4, H, W) model-space tensor or (H, W, 4) uint8 array to PNG/WebP/JPEG, atomically."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: unsupported output extension; use one of {', '.join(FORMATS)}")
    rgba = tensor_to_rgba_u8(image) if isinstance(image, torch.Tensor) else image
    opts = {"lossless": True} if fmt == "WEBP" else {}
    atomic_write_bytes(path, encode_image(rgba, fmt, parse_color(background) if isinstance(background, str) else background, **opts))
    return path
