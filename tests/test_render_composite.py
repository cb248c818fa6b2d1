"""kyara.render.composite: canvases, premultiplied scaling, straight-alpha 'over', scene layout."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kyara.render.composite import Placement, alpha_over, compose, make_canvas, scale_frame


def solid(h: int, w: int, rgba) -> np.ndarray:
    return np.broadcast_to(np.array(rgba, np.uint8), (h, w, 4)).copy()


def test_make_canvas_colours_and_transparency():
    assert not make_canvas(3, 2, None).any() and make_canvas(3, 2, None).shape == (2, 3, 4)
    assert not make_canvas(3, 2, "transparent").any()
    assert (make_canvas(3, 2, "green") == [0, 255, 0, 255]).all()
    assert (make_canvas(3, 2, (1, 2, 3)) == [1, 2, 3, 255]).all()
    assert (make_canvas(3, 2, "#102030") == [16, 32, 48, 255]).all()
    with pytest.raises(ValueError, match="positive"):
        make_canvas(0, 2, None)


def test_make_canvas_image_covers_and_centre_crops(tmp_path):
    # 40×10: left half red, right half blue → an 8×8 canvas shows the middle (both colours), full height
    img = np.zeros((10, 40, 4), np.uint8)
    img[:, :20] = [255, 0, 0, 255]
    img[:, 20:] = [0, 0, 255, 255]
    Image.fromarray(img, "RGBA").save(tmp_path / "bg.png")
    canvas = make_canvas(8, 8, tmp_path / "bg.png")
    assert canvas.shape == (8, 8, 4) and (canvas[..., 3] == 255).all()
    assert canvas[4, 0, 0] > 200 and canvas[4, 0, 2] < 50          # red on the left
    assert canvas[4, 7, 2] > 200 and canvas[4, 7, 0] < 50          # blue on the right


def test_scale_frame_is_premultiplied_so_hidden_colour_does_not_bleed():
    frame = solid(4, 4, (0, 0, 255, 255))
    frame[:, :2] = (255, 0, 0, 0)                                     # red, but fully transparent
    assert scale_frame(frame, 1.0) is frame
    half = scale_frame(frame, 0.5)
    assert half.shape == (2, 2, 4)
    assert (half[:, 0, 3] == 0).all() and (half[:, 1] == [0, 0, 255, 255]).all()
    mixed = scale_frame(frame, 0.25)[0, 0]                            # the 4×4 box average
    assert mixed[3] == 128 and mixed[0] == 0 and mixed[2] >= 254, "no red from the transparent half"
    assert scale_frame(frame, 2.0).shape == (8, 8, 4)


def test_alpha_over_follows_the_straight_alpha_over_operator():
    canvas = solid(2, 2, (0, 0, 0, 255))
    alpha_over(canvas, solid(2, 2, (255, 255, 255, 0)), 0, 0)        # transparent: nothing changes
    assert (canvas == [0, 0, 0, 255]).all()
    alpha_over(canvas, solid(2, 2, (200, 100, 50, 255)), 0, 0)       # opaque: replaces
    assert (canvas == [200, 100, 50, 255]).all()
    alpha_over(canvas, solid(2, 2, (0, 0, 250, 51)), 0, 0)           # 20 % over opaque
    assert (canvas == [160, 80, 90, 255]).all()
    empty = np.zeros((1, 1, 4), np.uint8)
    alpha_over(empty, solid(1, 1, (100, 0, 0, 128)), 0, 0)           # over transparent: the layer itself
    assert (empty == [100, 0, 0, 128]).all()


def test_alpha_over_clips_at_the_canvas_edges():
    canvas = np.zeros((4, 4, 4), np.uint8)
    layer = solid(3, 3, (9, 9, 9, 255))
    alpha_over(canvas, layer, -2, 2)                                   # only its top-right 1×2 lands
    assert (canvas[..., 3] > 0).sum() == 2 and (canvas[2:4, 0, 3] == 255).all()
    before = canvas.copy()
    alpha_over(canvas, layer, 10, 0)                                   # entirely outside
    alpha_over(canvas, layer, 0, -3)
    assert np.array_equal(canvas, before)


def test_compose_places_frames_by_bottom_centre_and_draws_later_ones_on_top():
    background = make_canvas(10, 10, (0, 0, 0))
    red, blue = solid(4, 2, (255, 0, 0, 255)), solid(2, 2, (0, 0, 255, 255))
    out = compose(background, [(red, Placement(center_x=5, bottom_y=10)), (blue, Placement(center_x=5, bottom_y=8))])
    assert not background[..., :3].any(), "the background is not modified"
    assert (out[6:8, 4:6] == [0, 0, 255, 255]).all()                 # blue on top of red's upper half
    assert (out[8:10, 4:6] == [255, 0, 0, 255]).all()
    assert (out[:6, :, :3] == 0).all() and (out[:, :4, :3] == 0).all() and (out[:, 6:, :3] == 0).all()
    doubled = compose(background, [(blue, Placement(center_x=5, bottom_y=10, scale=2.0))])
    assert (doubled[6:10, 3:7] == [0, 0, 255, 255]).all() and (doubled[:6, :, :3] == 0).all()
