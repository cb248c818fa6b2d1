"""The three long-hair test characters (benchmarks/characters, issue 16 item 3): THA3's input format and
framing, the sample's face layout (where THA3 closes eyes and opens the mouth), long hair, and that
scripts/make_test_characters.py reproduces the committed PNGs."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from script_module import load_script

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "benchmarks" / "characters"
NAMES = ("twin_tails", "long_straight", "high_ponytail")
SAMPLE = ROOT / "src" / "kyara" / "data" / "sample_character.png"
LASH = (38, 24, 34)            # the sample's lash colour (make_sample_character.LASH)
EYES_BOX = (218, 128, 296, 162)  # x0, y0, x1, y1 around both eyes
MOUTH_BOX = (242, 162, 270, 182)  # the mouth (y≈175) and the chin above the hair behind the neck


def _load(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "RGBA", path
    return np.asarray(img)


def _crop(a: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return a[y0:y1, x0:x1]


@pytest.mark.parametrize("name", NAMES)
def test_png_is_a_small_512_rgba_with_transparent_background(name):
    path = DIR / f"{name}.png"
    assert path.stat().st_size < 300 * 1024
    a = _load(path)
    assert a.shape == (512, 512, 4)
    alpha = a[:, :, 3]
    for y, x in [(0, 0), (0, 511), (511, 0), (511, 511), (20, 20), (20, 490), (250, 30), (250, 482)]:
        assert alpha[y, x] == 0, (y, x)
    assert (a[alpha == 0] == 0).all()   # fully transparent pixels stored as (0, 0, 0, 0), as THA3 expects
    assert (alpha == 255).mean() > 0.2
    assert ((alpha > 0) & (alpha < 255)).mean() < 0.03   # anti-aliased edges only (thin strands add some)


@pytest.mark.parametrize("name", NAMES)
def test_head_sits_in_the_tha3_head_box(name):
    alpha = _load(DIR / f"{name}.png")[:, :, 3]
    assert (alpha[64:192, 192:320] > 0).mean() > 0.95
    assert (alpha[70:230, 256] == 255).all()   # face, chin and neck on the centre line


@pytest.mark.parametrize("name", NAMES)
def test_face_layout_is_the_samples(name):
    """Eyes and mouth exactly where the sample has them (THA3 closes eyes / opens mouths only there): the
    pixels of pure lash colour are the same set, and the mouth is pixel-identical."""
    a, s = _load(DIR / f"{name}.png"), _load(SAMPLE)
    lash = lambda img: (_crop(img, EYES_BOX)[:, :, :3] == LASH).all(axis=2)   # noqa: E731
    assert lash(s).sum() > 100
    np.testing.assert_array_equal(lash(a), lash(s))
    np.testing.assert_array_equal(_crop(a, MOUTH_BOX), _crop(s, MOUTH_BOX))
    # a different eye colour from the sample's (amber) in the light lower part of the left iris; the closest
    # one (long_straight's red) differs by 65 levels in green there
    assert np.abs(a[152, 237, :3].astype(int) - s[152, 237, :3]).max() > 40


def test_characters_differ_and_have_long_hair():
    sample_alpha = _load(SAMPLE)[:, :, 3] > 0
    images = {n: _load(DIR / f"{n}.png") for n in NAMES}
    crowns = {n: a[62, 256, :3].astype(int) for n, a in images.items()}   # hair colour at the crown
    for i, n in enumerate(NAMES):
        alpha = images[n][:, :, 3] > 0
        # long hair: thousands of pixels where the sample (hair to the shoulders) has none
        assert (alpha & ~sample_alpha).sum() > 15_000, n
        for m in NAMES[i + 1:]:
            other = images[m][:, :, 3] > 0
            assert (alpha & other).sum() / (alpha | other).sum() < 0.9, (n, m)   # different silhouettes
            assert np.abs(crowns[n] - crowns[m]).max() > 60, (n, m)              # different palettes


def test_script_reproduces_the_committed_pngs():
    module = load_script("scripts/make_test_characters.py")
    assert tuple(module.CHARACTERS) == NAMES
    for name in NAMES:
        drawn = module.render(name)
        assert drawn.dtype == np.uint8 and drawn.shape == (512, 512, 4)
        # If this fails after a Pillow/numpy upgrade, rerun scripts/make_test_characters.py and review the PNGs.
        np.testing.assert_array_equal(drawn, _load(DIR / f"{name}.png"), err_msg=name)
    with pytest.raises(ValueError, match="unknown test character"):
        module.render("bob")
