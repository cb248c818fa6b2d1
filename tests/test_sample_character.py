"""The bundled sample character: format, THA3 framing, and that the script reproduces it exactly."""
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "src" / "kyara" / "data" / "sample_character.png"
SCRIPT = ROOT / "scripts" / "make_sample_character.py"


def _load_png() -> np.ndarray:
    img = Image.open(PNG)
    assert img.mode == "RGBA"
    return np.asarray(img)


def test_file_is_512_rgba_and_small():
    assert PNG.is_file()
    assert PNG.stat().st_size < 300 * 1024
    assert _load_png().shape == (512, 512, 4)


def test_background_transparent_character_opaque():
    alpha = _load_png()[:, :, 3]
    for y, x in [(0, 0), (0, 511), (511, 0), (511, 511), (20, 20), (20, 490), (300, 40), (300, 470)]:
        assert alpha[y, x] == 0, (y, x)
    assert alpha.min() == 0 and alpha.max() == 255
    # the character is opaque where it is drawn (anti-aliased edges aside)
    assert (alpha == 255).mean() > 0.25
    assert ((alpha > 0) & (alpha < 255)).mean() < 0.02


def test_head_fills_the_tha3_head_box():
    alpha = _load_png()[:, :, 3]
    head = alpha[64:192, 192:320]
    assert (head > 0).mean() > 0.9
    # face centred: the column x=256 is opaque from the hair top down through the chin and neck
    assert (alpha[70:230, 256] == 255).all()
    # nothing above the hair crown
    assert (alpha[:50] == 0).all()


def test_script_reproduces_the_committed_png():
    spec = importlib.util.spec_from_file_location("make_sample_character", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.render()
    assert drawn.dtype == np.uint8 and drawn.shape == (512, 512, 4)
    committed = _load_png()
    # If this fails after a Pillow/numpy upgrade, rerun scripts/make_sample_character.py and review the diff.
    np.testing.assert_array_equal(drawn, committed)
