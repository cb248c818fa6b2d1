"""kyara stickers: expression table, loop shape, files written (PNG, animated WebP/GIF, contact sheet)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from kyara.pose import INDEX, PRESETS
from kyara.produce.stickers import StickerConfig, contact_sheet, expressions, loop_track, make_stickers
from test_produce_fakes import FakeCharacter


def test_at_least_twelve_expressions_including_every_preset():
    table = expressions()
    assert len(table) >= 12
    assert set(PRESETS) - {"neutral"} <= set(table)
    assert len({p for p in table.values()}) == len(table), "no two expressions share a pose"


def test_loop_goes_out_and_back_with_a_blink():
    config = StickerConfig(fps=10)
    track = loop_track(expressions()["angry"], config)
    assert np.abs(track[-1]).max() == 0 and np.abs(track[0]).max() > 0
    assert track[:, INDEX["eyebrow_angry_left"]].max() == 1.0
    assert track[:, INDEX["eye_wink_left"]].max() >= 0.5, "a blink in the hold"
    # The happy preset closes the eyes already: no extra blink on top.
    assert loop_track(expressions()["happy"], config)[:, INDEX["eye_wink_left"]].max() == 0


def test_make_stickers_writes_the_pack(tmp_path):
    ch = FakeCharacter(size=32)
    names = ["happy", "wink", "look_left"]
    written = make_stickers(ch, tmp_path / "pack", StickerConfig(size=32, fps=8), names=names, progress=False)
    assert set(written) == {*names, "contact_sheet"}
    for name in names:
        png, webp, gif = written[name]
        assert (png.suffix, webp.suffix, gif.suffix) == (".png", ".webp", ".gif")
        still = np.asarray(Image.open(png))
        assert still.shape == (32, 32, 4) and still[0, 0, 3] == 0, "transparent background"
        with Image.open(webp) as anim:
            assert anim.n_frames > 5
        with Image.open(gif) as anim:
            assert anim.n_frames > 5 and "transparency" in anim.info
    # wink closes the left eye in the fake's green channel; happy opens the mouth (red).
    assert np.asarray(Image.open(written["wink"][0]))[16, 16, 1] > 200
    sheet = Image.open(written["contact_sheet"][0])
    assert sheet.size[0] == 4 * 256 and sheet.size[1] >= 256
    meta = json.loads((tmp_path / "pack" / "stickers.json").read_text())
    assert list(meta["expressions"]) == names
    # Ease-out reuses the ease-in poses: far fewer renders than frames.
    frames_per_loop = len(loop_track(expressions()["happy"], StickerConfig(fps=8)))
    assert ch.rendered_poses < len(names) * frames_per_loop / 2


def test_contact_sheet_layout():
    stills = {f"e{i}": np.full((20, 20, 4), 255, np.uint8) for i in range(5)}
    sheet = contact_sheet(stills, columns=2, cell=40)
    assert sheet.shape[1] == 80 and sheet.shape[0] == 3 * (40 + 24)
