"""kyara.image: THA pixel conventions (facts §2), exact round trips, fit_to_canvas, atomic writes, errors."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from kyara import image as I
from kyara.image import ImageError, tensor_to_rgba_u8


def srgb_reference(v: float) -> float:
    """The standard sRGB decoding curve, written out independently (threshold 0.04045)."""
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def save_png(path, rgba: np.ndarray) -> None:
    Image.fromarray(rgba).save(path)


def all_values_image(alpha: np.ndarray) -> np.ndarray:
    """(N, 256, 4) uint8: every 8-bit value in each colour channel, combined with each alpha in `alpha`."""
    v = np.arange(256, dtype=np.uint8)
    rows = []
    for a in alpha:
        rows.append(np.stack([v, v[::-1], np.roll(v, 85), np.full(256, a, np.uint8)], axis=1))
    return np.stack(rows)


# -- colour curves and ranges --------------------------------------------------------------------
def test_srgb_to_linear_matches_standard_curve():
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(I.srgb_to_linear(x), [srgb_reference(v) for v in x], rtol=0, atol=1e-15)
    assert I.srgb_to_linear(np.array(0.5)) == pytest.approx(0.21404114048223255, abs=1e-15)
    # torch variant keeps dtype and agrees
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert I.srgb_to_linear(t).dtype == torch.float64
    np.testing.assert_allclose(I.srgb_to_linear(t).numpy(), I.srgb_to_linear(x), atol=1e-15)


def test_srgb_linear_round_trip():
    x = np.linspace(0.0, 1.0, 4097)
    np.testing.assert_allclose(I.linear_to_srgb(I.srgb_to_linear(x)), x, atol=1e-12)
    np.testing.assert_allclose(I.srgb_to_linear(I.linear_to_srgb(x)), x, atol=1e-12)
    t = torch.rand(1000, dtype=torch.float64)
    torch.testing.assert_close(I.linear_to_srgb(I.srgb_to_linear(t)), t, atol=1e-12, rtol=0)
    # inputs outside [0, 1] are clipped first
    assert I.srgb_to_linear(np.array([-0.5, 1.5])).tolist() == [0.0, 1.0]


def test_unit_signed_round_trip():
    x = np.arange(256) / 255.0
    assert I.unit_to_signed(0.0) == -1.0 and I.unit_to_signed(1.0) == 1.0 and I.unit_to_signed(0.5) == 0.0
    np.testing.assert_allclose(I.signed_to_unit(I.unit_to_signed(x)), x, atol=1e-15)
    t = torch.rand(100)
    torch.testing.assert_close(I.unit_to_signed(I.signed_to_unit(t)), t)


def test_premultiply():
    img = torch.tensor([0.8, 0.4, 0.2, 0.5]).reshape(4, 1, 1)
    out = I.premultiply(img)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.4, 0.2, 0.1, 0.5]))


# -- file space <-> model space ------------------------------------------------------------------------
def test_u8_to_tensor_values_follow_tha3():
    rgba = np.array([[[255, 255, 255, 255], [0, 0, 0, 255], [128, 64, 10, 128], [200, 100, 50, 0]]], np.uint8)
    t = I.rgba_u8_to_tensor(rgba)
    assert t.shape == (4, 1, 4) and t.dtype == torch.float32
    assert t[:, 0, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert t[:, 0, 1].tolist() == [-1.0, -1.0, -1.0, 1.0]
    expected = [srgb_reference(128 / 255) * 2 - 1, srgb_reference(64 / 255) * 2 - 1, srgb_reference(10 / 255) * 2 - 1,
                128 / 255 * 2 - 1]
    np.testing.assert_allclose(t[:, 0, 2].numpy(), expected, atol=1e-7)  # straight alpha: RGB not multiplied
    assert t[:, 0, 3].tolist() == [-1.0, -1.0, -1.0, -1.0]  # fully transparent pixel zeroed first


def test_u8_tensor_u8_identity_opaque_and_semi_transparent():
    rgba = all_values_image(np.array([255, 254, 200, 128, 64, 2, 1], np.uint8))
    back = I.tensor_to_rgba_u8(I.rgba_u8_to_tensor(rgba))
    assert back.dtype == np.uint8 and back.shape == rgba.shape
    np.testing.assert_array_equal(back, rgba)


def test_transparent_pixels_zeroed():
    rgba = all_values_image(np.array([0], np.uint8))
    assert rgba[..., :3].any()
    back = I.tensor_to_rgba_u8(I.rgba_u8_to_tensor(rgba))
    np.testing.assert_array_equal(back, np.zeros_like(rgba))


def test_input_array_not_modified():
    rgba = all_values_image(np.array([0, 255], np.uint8))
    copy = rgba.copy()
    I.rgba_u8_to_tensor(rgba)
    np.testing.assert_array_equal(rgba, copy)


def test_tensor_to_rgba_clips_out_of_range():
    t = torch.tensor([2.0, -3.0, 0.0, 1.5]).reshape(4, 1, 1)
    assert I.tensor_to_rgba_u8(t)[0, 0].tolist() == [255, 0, round(I.linear_to_srgb(0.5) * 255), 255]


def test_shape_errors():
    with pytest.raises(ImageError, match="uint8 RGBA"):
        I.rgba_u8_to_tensor(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageError, match=r"\(4, H, W\)"):
        I.tensor_to_rgba_u8(torch.zeros(3, 4, 4))


# -- colours and compositing --------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [("transparent", None), ("green", (0, 255, 0)), ("#FF8000", (255, 128, 0)),
                                           ("0, 0, 255", (0, 0, 255)), (None, None)])
def test_parse_color(text, expected):
    assert I.parse_color(text) == expected


@pytest.mark.parametrize("bad", ["chartreuse-ish", "#12345", "#gggggg", "1,2", "0,0,256"])
def test_parse_color_errors(bad):
    with pytest.raises(ImageError, match="cannot parse colour"):
        I.parse_color(bad)


def test_composite_over():
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [255, 0, 0, 128]]], np.uint8)
    out = I.composite_over(rgba, (0, 255, 0))
    assert out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 255, 0]
    assert out[0, 2].tolist() == [128, 127, 0]


# -- fit_to_canvas -----------------------------------------------------------------------------------------
def opaque_bbox(rgba: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


@pytest.mark.parametrize("h,w", [(100, 200), (300, 150), (1024, 512), (64, 64)])
def test_fit_to_canvas_keeps_aspect_and_centres(h, w):
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[...] = (200, 40, 90, 255)
    out = I.fit_to_canvas(rgba, 512)
    assert out.shape == (512, 512, 4) and out.dtype == np.uint8
    top, bottom, left, right = opaque_bbox(out)
    assert max(bottom - top, right - left) == 512
    assert (right - left) / (bottom - top) == pytest.approx(w / h, rel=0.01)
    assert abs((top + bottom) - 512) <= 1 and abs((left + right) - 512) <= 1  # centred
    inner = out[top + 2:bottom - 2, left + 2:right - 2]
    assert (inner == (200, 40, 90, 255)).all()  # uniform colour survives resampling
    assert (out[..., 3] == 0).sum() == 512 * 512 - (bottom - top) * (right - left)


def test_fit_to_canvas_no_colour_bleed_from_transparent_pixels():
    rgba = np.zeros((256, 128, 4), np.uint8)
    rgba[..., :3] = (0, 255, 0)        # transparent but green: must not leak into edges
    rgba[64:192, 32:96] = (255, 0, 0, 255)
    out = I.fit_to_canvas(rgba, 512)
    visible = out[..., 3] > 8
    assert visible.any()
    assert out[visible][:, 1].max() <= 2  # no green in any visible pixel, edges included


def test_load_rgba_fit(tmp_path):
    rgba = np.zeros((300, 600, 4), np.uint8)
    rgba[100:200, 200:400] = (10, 20, 30, 255)
    save_png(tmp_path / "wide.png", rgba)
    out = I.load_rgba(tmp_path / "wide.png", fit=True)
    assert out.shape == (512, 512, 4)
    top, bottom, left, right = opaque_bbox(out)
    assert abs((top + bottom) - 512) <= 2 and abs((left + right) - 512) <= 2
    t = I.load_image(tmp_path / "wide.png", fit=True)
    assert t.shape == (4, 512, 512) and t.dtype == torch.float32


# -- saving -------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[:256] = all_values_image(np.array([255, 128], np.uint8)).repeat(128, axis=0).repeat(2, axis=1)[:256, :512]
    tensor = I.rgba_u8_to_tensor(rgba)
    path = I.save_image(tensor, tmp_path / "out.png")
    np.testing.assert_array_equal(I.load_rgba(path), rgba)
    webp = I.save_image(rgba, tmp_path / "out.webp")
    np.testing.assert_array_equal(np.asarray(Image.open(webp).convert("RGBA"))[..., 3], rgba[..., 3])


def test_save_with_background(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    path = I.save_image(rgba, tmp_path / "g.png", background="green")
    img = Image.open(path)
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[1, 1].tolist() == [0, 255, 0]
    big = np.zeros((32, 32, 4), np.uint8)
    big[:4, :4] = (255, 0, 0, 255)
    jpg = np.asarray(Image.open(I.save_image(big, tmp_path / "w.jpg")))
    assert jpg[24:, 24:].min() >= 250  # JPEG has no alpha: composited over white by default


def test_save_unsupported_extension(tmp_path):
    with pytest.raises(ImageError, match=r"unsupported output extension"):
        I.save_image(np.zeros((4, 4, 4), np.uint8), tmp_path / "out.gif")
    assert not (tmp_path / "out.gif").exists()


def test_atomic_write_leaves_no_temp_file_on_error(tmp_path):
    target = tmp_path / "sub" / "out.png"
    I.atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        I.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert sorted(os.listdir(target.parent)) == ["out.png"]
    assert target.read_bytes() == b"old"  # the previous file is untouched
    I.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and sorted(os.listdir(target.parent)) == ["out.png"]


def test_atomic_write_file_mode(tmp_path):
    old = os.umask(0o027)
    try:
        I.atomic_write_bytes(tmp_path / "new.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640  # umask applies, not mkstemp's 0600
    os.chmod(tmp_path / "new.bin", 0o604)
    I.atomic_write_bytes(tmp_path / "new.bin", b"y")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o604  # an existing file keeps its mode


# -- each input error --------------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height RGBA but carries no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def character_png_bytes(size=(512, 512)) -> bytes:
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[100:400, 150:350] = (250, 200, 180, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


def test_error_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: file not found"):
        I.load_image(tmp_path / "missing.png")


def test_error_directory(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        I.load_image(tmp_path)


def test_error_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: file is empty"):
        I.load_image(tmp_path / "empty.png")


def test_error_unreadable(tmp_path):
    (tmp_path / "text.png").write_text("this is not an image")
    with pytest.raises(ImageError, match=r"text\.png: not a readable image"):
        I.load_image(tmp_path / "text.png")


def test_error_truncated(tmp_path):
    data = character_png_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: image data is truncated or corrupt"):
        I.load_image(tmp_path / "cut.png")


def test_error_no_alpha_channel(tmp_path):
    Image.new("RGB", (512, 512), (255, 255, 255)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageError, match=r"rgb\.png: image has no alpha channel \(mode RGB\).*transparent"):
        I.load_image(tmp_path / "rgb.png")


def test_error_alpha_but_no_transparent_pixels(tmp_path):
    Image.new("RGBA", (512, 512), (255, 255, 255, 255)).save(tmp_path / "opaque.png")
    with pytest.raises(ImageError, match=r"opaque\.png: image has an alpha channel but no transparent pixels"):
        I.load_image(tmp_path / "opaque.png")


def test_palette_with_transparency_accepted(tmp_path):
    img = Image.new("P", (512, 512), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (100, 100, 200, 200))
    img.save(tmp_path / "pal.png", transparency=0)
    t = I.load_image(tmp_path / "pal.png")
    assert t[3, 0, 0] == -1.0 and t[:, 150, 150].tolist() == [1.0, -1.0, -1.0, 1.0]


def test_error_wrong_size_suggests_fit(tmp_path):
    (tmp_path / "small.png").write_bytes(character_png_bytes((256, 300)))
    with pytest.raises(ImageError, match=r"small\.png: image is 256×300; THA needs 512×512\. Use --fit"):
        I.load_image(tmp_path / "small.png")


def test_error_decompression_bomb(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(10_000, 5_000))
    with pytest.raises(ImageError, match=r"bomb\.png: image is 10000×5000 = 50 MP; the limit is 40 MP"):
        I.load_image(tmp_path / "bomb.png")


def test_error_file_too_large(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(character_png_bytes())
    monkeypatch.setattr(I, "MAX_IMAGE_BYTES", 1024)
    with pytest.raises(ImageError, match=r"big\.png: file is .* MiB; the limit is"):
        I.load_image(tmp_path / "big.png")


def test_device_side_u8_conversion_matches_the_cpu_path_within_one_level():
    from kyara.image import _tensor_to_rgba_u8_on_device

    g = torch.Generator().manual_seed(3)
    image = torch.rand(4, 64, 64, generator=g) * 2.4 - 1.2   # includes out-of-range values
    cpu = tensor_to_rgba_u8(image)
    dev = _tensor_to_rgba_u8_on_device(image)
    assert dev.dtype == np.uint8 and dev.shape == cpu.shape == (64, 64, 4)
    diff = np.abs(dev.astype(int) - cpu.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_display_space_has_a_finite_gradient_everywhere():
    """A loss in the metric's display space differentiates through the sRGB curve: black (linear 0), the curve's
    threshold, values clipped at 0 and 1 and transparent pixels must give finite gradients (the curve's power
    branch has an infinite slope at 0, which torch.where used to turn into nan)."""
    values = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], dtype=torch.float64)
    signed_threshold = 2 * I.LINEAR_TO_SRGB_THRESHOLD - 1
    values = torch.cat([values, torch.tensor([signed_threshold], dtype=torch.float64)])
    image = torch.stack(torch.meshgrid(values, values, indexing="ij")).repeat(2, 1, 1)   # (4, 7, 7): every pairing
    image.requires_grad_(True)
    I.display_space(image).sum().backward()
    assert torch.isfinite(image.grad).all()
