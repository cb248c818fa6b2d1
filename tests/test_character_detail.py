"""benchmarks/character_detail.py: a character's line detail G and the PSNR fit on it (docs/benchmarks.md,
session 22)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from kyara.image import rgba_u8_to_tensor

from script_module import load_script


def _script():
    return load_script("benchmarks/character_detail.py")


def _stripes(width: int) -> Image.Image:
    """Vertical black and white stripes `width` px wide, opaque but for a transparent last row (load_image wants
    a transparent background; the last row lies outside G's grid of differences)."""
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[..., :3] = ((((np.arange(512) // width) % 2) * 255).astype(np.uint8))[None, :, None]
    rgba[:511, :, 3] = 255
    return Image.fromarray(rgba, "RGBA")


def test_g_counts_the_steps_between_neighbours():
    cd = _script()
    # G's grid is rows 0–510 × columns 0–510, differences to the right and down. Across a column boundary of
    # the stripes: a step of 1 in the three colour channels, none in alpha; down the columns none, except from
    # row 510 to the transparent row 511 (colour × alpha and alpha both drop): white 3 + 1, black 0 + 1. Black and
    # white survive the sRGB → linear → sRGB round trip exactly (tolerance: float32 rounding only).
    last_row = (4 + 1) / 2 / 4 / 511           # row 510's mean over the 4 channels and the 511 rows
    one = cd.detail(rgba_u8_to_tensor(np.asarray(_stripes(1))))
    two = cd.detail(rgba_u8_to_tensor(np.asarray(_stripes(2))))
    assert one == pytest.approx(3 / 4 + last_row, abs=1e-5)
    assert two == pytest.approx(3 / 4 * 255 / 511 + last_row, abs=1e-5)


def test_the_fit_passes_through_two_points_and_unknown_names_are_refused(tmp_path, monkeypatch, capsys):
    cd = _script()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _stripes(1).save(a)
    _stripes(4).save(b)
    monkeypatch.setattr(sys, "argv", ["character_detail.py", str(a), str(b), "--psnr", "a=30", "--psnr", "b=33"])
    cd.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert len(rows) == 2 and all(line.endswith("| +0.00 dB |") or line.endswith("| -0.00 dB |") for line in rows)
    monkeypatch.setattr(sys, "argv", ["character_detail.py", str(a), "--psnr", "c=30"])
    with pytest.raises(SystemExit):
        cd.main()
    assert "c, which are not among" in capsys.readouterr().err


def test_shift_sensitivity_of_stripes_is_the_moved_transitions():
    cd = _script()
    from kyara.image import linear_to_srgb

    # Vertical stripes 2 px wide (0, 0, 1, 1, …): moved by dx (|dx| < 1) along x, bilinear, two pixels in four sit
    # beside a transition and take dx (or 1 − dx) of the other colour, in linear light; the display space is sRGB,
    # so they show srgb(dx) against 0 and srgb(1 − dx) against 1, in the three colour channels (alpha stays 1).
    # The y component moves nothing but the last, transparent row's neighbour (the bound below), and the border
    # clamp leaves the first and last columns' errors a little different (2 of 512).
    e = 0.5
    angles = (np.arange(8) + 0.5) * np.pi / 4
    dx = np.abs(e * np.cos(angles))
    per_transition = (linear_to_srgb(torch.tensor(dx)) ** 2 + (1 - linear_to_srgb(torch.tensor(1 - dx))) ** 2).mean()
    expected = 3 / 4 * 1 / 4 * float(per_transition)
    got = cd.shift_sensitivity(rgba_u8_to_tensor(np.asarray(_stripes(2))), e)
    # Off the model: the transparent last row has no transitions and the clamped border columns lose one each
    # (≤ 4/512 of the expected value), and rows 510–511 mix colour with transparency by |dy| ≤ 0.5 (≤ 0.25 a
    # channel, squared, on ≤ 1 row of 512). Measured: 0.4 % below the model.
    assert got == pytest.approx(expected, abs=0.25 / 512 + 4 / 512 * expected)
    assert cd.shift_sensitivity(rgba_u8_to_tensor(np.asarray(_stripes(1))), e) > got      # more lines, more cost
