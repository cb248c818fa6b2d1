"""The bundled sample character: format, THA3 framing, and that the script reproduces it exactly."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from script_module import load_script

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
    module = load_script(SCRIPT)
    drawn = module.render()
    assert drawn.dtype == np.uint8 and drawn.shape == (512, 512, 4)
    committed = _load_png()
    # If this fails after a Pillow/numpy upgrade, rerun scripts/make_sample_character.py and review the diff.
    np.testing.assert_array_equal(drawn, committed)


# -- the eyes (issue 12): THA3 closes them cleanly only where its training faces have their eyes ---------
def _closed_eyes_module():
    return load_script("benchmarks/closed_eyes.py")


def test_eyes_sit_where_tha3_closes_them():
    ce = _closed_eyes_module()
    lab = ce.srgb_to_lab(ce.on_white(_load_png()))
    centres = {}
    for side, box in ce.EYE_BOXES.items():
        reference = ce.Reference(lab, side)
        ys, xs = np.nonzero(reference.iris_mask(ce.crop(lab, box)))
        assert len(xs) > 100, side  # a real iris, not a few stray pixels
        centres[side] = (xs.mean() + box[0], ys.mean() + box[1])
    # Measured iris centroids of the design (EYE_Y=145, EYE_X=237/275): (235.7, 148.6) and (275.3, 148.6).
    # Lower eyes (152) closed more cleanly but left THA3 unable to open the mouth; higher ones (139, the first
    # design) smeared the closed eyes; 2 px outwards already hurts (docs/benchmarks.md), so ±1 px.
    for (x, y), (ex, ey) in zip((centres["right"], centres["left"]), ((235.7, 148.6), (275.3, 148.6))):
        assert abs(x - ex) <= 1.0 and abs(y - ey) <= 1.0, (x, y)
    # symmetric about the face's centre line
    assert abs((centres["right"][0] + centres["left"][0]) / 2 - 255.5) <= 0.5


def test_upper_lash_spans_a_wide_almond_eye():
    ce = _closed_eyes_module()
    lab = ce.srgb_to_lab(ce.on_white(_load_png()))
    # the upper lash line (rows 129..142, above the iris centre) is ≥ 28 px wide on each side: wide eyes
    # (EYE_WIDTH=1.2) made THA3 draw a full-width lid line; the first, rounder design had 18 px here.
    for x0, x1 in ((220, 254), (258, 292)):
        dark_columns = (lab[129:143, x0:x1, 0] < ce.DARK_L).any(axis=0)
        assert dark_columns.sum() >= 28, (x0, int(dark_columns.sum()))
    # the blush sits below the eye (lower lid at y≈155.6), not on the lids THA3 paints when closing:
    # centroid of the pink pixels on the viewer's left cheek, measured 159.8 (the first design: 157.7 with
    # its eyes 6 px higher)
    cheek = lab[133:178, 212:250]
    pink = (cheek[..., 1] > 14) & (cheek[..., 0] > 70) & (cheek[..., 2] < 20)
    assert pink.sum() > 40 and np.nonzero(pink)[0].mean() + 133 >= 158.5


@pytest.mark.slow
def test_teacher_closes_the_sample_eyes_in_happy():
    """THA3 on the bundled sample, preset 'happy': no iris colour left and a dark lid arc per eye."""
    from kyara.character import SAMPLE_IMAGE, Character
    from kyara.pose import Pose

    ce = _closed_eyes_module()
    character = Character.from_image(SAMPLE_IMAGE, device="cpu")
    neutral = ce.srgb_to_lab(ce.on_white(character.render_rgba(Pose())))
    happy = ce.srgb_to_lab(ce.on_white(character.render_rgba(Pose.preset("happy"))))
    for side in ce.EYE_BOXES:
        result = ce.score(ce.Reference(neutral, side), happy, side)
        assert result["iris"] < 1.0, (side, result)   # old design: 0 too (beige), so the next two matter
        assert result["lid_l"] < 45.0, (side, result)  # a lash-dark arc; the old beige smudge: L* ≈ 60+
        # spanning most of the eye: the y=145 drawing measures 0.48 (viewer-left) and 0.70 (viewer-right) with
        # THA3 on this CPU, the old design 0.19; 0.4 separates them with margin for other CPUs' rounding
        assert result["line"] > 0.4, (side, result)
