"""The optional stages a farm job runs after distilling a character (``--stages``).

Each stage renders with the freshly distilled student into a local scratch folder and then publishes
its output into the farm dir (kyara.farm.outdir: atomic files, a folder swapped in by a rename):

* stickers → DIR/<name>.stickers/   (kyara.produce.stickers: the 16-expression pack, PNG + WebP + GIF)
* preview  → DIR/<name>.preview.webp (a 4-second animated WebP: breathing, sway, talking, blinks, a smile)
* export   → DIR/<name>.tha4/        (the official THA4 character_model directory)
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from kyara.farm.outdir import FarmDir
from kyara.pose import INDEX, NUM_PARAMETERS, PRESETS

PREVIEW_SECONDS, PREVIEW_FPS = 4.0, 20.0


def preview_track(seconds: float = PREVIEW_SECONDS, fps: float = PREVIEW_FPS) -> np.ndarray:
    """(T, 45) float32 poses: breathing and a head sway throughout, 'a-i-u-e-o' talking in the first
    half, two blinks, and the 'happy' preset fading in over the last quarter."""
    t = np.arange(max(2, int(round(seconds * fps)))) / fps
    poses = np.zeros((len(t), NUM_PARAMETERS), np.float32)
    poses[:, INDEX["breathing"]] = 0.5 - 0.5 * np.cos(2 * math.pi * t / 2.5)
    poses[:, INDEX["head_y"]] = 0.4 * np.sin(2 * math.pi * t / seconds)
    poses[:, INDEX["neck_z"]] = 0.2 * np.sin(2 * math.pi * t / seconds + 0.8)
    vowels = ["mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo"]
    talking = t < seconds / 2
    for i in np.flatnonzero(talking):
        syllable = int(t[i] / 0.25)
        poses[i, INDEX[vowels[syllable % len(vowels)]]] = 0.8 * math.sin(math.pi * (t[i] / 0.25 % 1.0))
    for blink_s in (0.3 * seconds, 0.7 * seconds):
        closed = np.clip(1 - np.abs(t - blink_s) / 0.08, 0, 1)
        poses[:, INDEX["eye_wink_left"]] = np.maximum(poses[:, INDEX["eye_wink_left"]], closed)
        poses[:, INDEX["eye_wink_right"]] = np.maximum(poses[:, INDEX["eye_wink_right"]], closed)
    smile = np.clip((t / seconds - 0.75) / 0.15, 0, 1)
    for name, value in PRESETS["happy"].values.items():
        poses[:, INDEX[name]] = np.maximum(poses[:, INDEX[name]], smile * value)
    return poses


def run_stage(stage: str, character, farm: FarmDir, name: str, scratch: Path) -> tuple[list[str], list[str]]:
    """Run one stage for `character` (a kyara.character.Character) → (outputs relative to the farm dir,
    notes for the user)."""
    notes: list[str] = []
    if stage == "stickers":
        from kyara.produce.stickers import make_stickers

        make_stickers(character, scratch / "stickers", progress=False)
        farm.put_tree(scratch / "stickers", f"{name}.stickers")
        return [f"{name}.stickers/"], notes
    if stage == "preview":
        from kyara.produce.frames import render_track
        from kyara.render.video import open_writer

        path = scratch / f"{name}.preview.webp"
        with open_writer(path, fps=PREVIEW_FPS) as writer:
            for frame in render_track(character, preview_track(PREVIEW_SECONDS, PREVIEW_FPS), batch_size=8):
                writer.write(frame)
        farm.put_file(path, f"{name}.preview.webp")
        return [f"{name}.preview.webp"], notes
    if stage == "export":
        from kyara.character import STRAIGHT_EXPORT_NOTE, export_tha4_directory

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # the farm exports whatever it distilled; the caveat of a straight-colour (THA3) student is
            # recorded as a note instead of refusing, as `kyara export --allow-straight` does
            export_tha4_directory(character, scratch / "tha4", allow_straight=True)
        notes += [str(w.message) for w in caught]
        if not character.premultiplied:
            notes.append(STRAIGHT_EXPORT_NOTE)
        farm.put_tree(scratch / "tha4", f"{name}.tha4")
        return [f"{name}.tha4/"], notes
    raise ValueError(f"unknown stage {stage!r}")
