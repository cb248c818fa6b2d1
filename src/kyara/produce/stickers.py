"""Expression sticker pack: one transparent PNG, animated WebP and GIF per expression, plus a
labelled contact sheet.

Each animation is a short loop: neutral → expression (eased) → hold (with a blink unless the
expression already closes the eyes) → back to neutral → short rest. The ease-out reuses the
ease-in poses, so the frame cache renders each loop's distinct poses once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kyara.image import atomic_write_bytes, encode_image
from kyara.pose import INDEX, NUM_PARAMETERS, PRESETS, Pose
from kyara.produce.frames import RenderStats, render_track
from kyara.produce.motion import EYE_CLOSING, smoothstep

# Extra expressions beyond the presets: combinations and head angles (values validated at import).
EXTRA_EXPRESSIONS: dict[str, dict[str, float]] = {
    "look_left": {"head_y": 0.7, "body_y": 0.3, "iris_rotation_y": 0.6, "mouth_raised_corner_left": 0.3,
                  "mouth_raised_corner_right": 0.3},
    "look_right": {"head_y": -0.7, "body_y": -0.3, "iris_rotation_y": -0.6, "mouth_raised_corner_left": 0.3,
                   "mouth_raised_corner_right": 0.3},
    "look_up": {"head_x": 0.6, "iris_rotation_x": 0.7, "eyebrow_raised_left": 0.5, "eyebrow_raised_right": 0.5},
    "shy": {"head_x": -0.4, "neck_z": -0.3, "eyebrow_troubled_left": 0.7, "eyebrow_troubled_right": 0.7,
            "eye_relaxed_left": 0.4, "eye_relaxed_right": 0.4, "iris_rotation_y": 0.5,
            "mouth_raised_corner_left": 0.5, "mouth_raised_corner_right": 0.5},
    "thinking": {"neck_z": 0.35, "head_y": -0.3, "iris_rotation_x": 0.8, "iris_rotation_y": -0.5,
                 "eyebrow_serious_left": 0.6, "eyebrow_lowered_right": 0.5, "mouth_smirk": 0.4},
    "excited": {"eyebrow_raised_left": 1.0, "eyebrow_raised_right": 1.0, "eye_surprised_left": 0.6,
                "eye_surprised_right": 0.6, "mouth_aaa": 0.9, "mouth_raised_corner_left": 1.0,
                "mouth_raised_corner_right": 1.0, "head_x": 0.2},
    "pout": {"mouth_uuu": 0.8, "mouth_lowered_corner_left": 0.4, "mouth_lowered_corner_right": 0.4,
             "eyebrow_angry_left": 0.4, "eyebrow_angry_right": 0.4, "neck_z": -0.2},
}
BLINK = [INDEX["eye_wink_left"], INDEX["eye_wink_right"]]
for _values in EXTRA_EXPRESSIONS.values():
    Pose(**_values)


def expressions() -> dict[str, Pose]:
    """Every sticker expression name → its pose: the presets (except neutral) then the extras."""
    out = {name: Pose.preset(name) for name in PRESETS if name != "neutral"}
    out.update({name: Pose(**values) for name, values in EXTRA_EXPRESSIONS.items()})
    return out


@dataclass(frozen=True)
class StickerConfig:
    fps: float = 15.0
    ease_s: float = 0.35        # neutral → expression and back
    hold_s: float = 1.2
    rest_s: float = 0.4         # neutral pause before the loop restarts
    blink_s: float = 0.2
    size: int = 512             # output size in pixels (square)
    batch_size: int = 4
    animations: bool = True     # also write .webp and .gif loops
    sheet_columns: int = 4


def loop_track(pose: Pose, config: StickerConfig = StickerConfig()) -> np.ndarray:
    """(T, 45) float32 loop for one expression; poses repeat exactly so the cache can reuse them."""
    fps = config.fps
    ease = [float(smoothstep(np.array((i + 1) / max(1, round(config.ease_s * fps))))) for i in
            range(max(1, round(config.ease_s * fps)))]
    target = pose.vector.astype(np.float32)
    ease_in = [w * target for w in ease]
    hold = [target.copy() for _ in range(max(1, round(config.hold_s * fps)))]
    eyes_closed = float(target[EYE_CLOSING].max())
    if eyes_closed < 0.5:
        blink_n = max(2, round(config.blink_s * fps))
        start = len(hold) // 2 - blink_n // 2
        for i in range(blink_n):
            w = np.sin(np.pi * (i + 0.5) / blink_n) * (1.0 - eyes_closed)
            row = hold[start + i].copy()
            # Blink levels on a 1/4 grid, so blinks in different stickers share renders' poses.
            row[BLINK] = np.clip(row[BLINK] + round(w * 4) / 4, 0.0, 1.0)
            hold[start + i] = row
    rest = [np.zeros(NUM_PARAMETERS, np.float32) for _ in range(max(1, round(config.rest_s * fps)))]
    return np.stack(ease_in + hold + ease_in[::-1][1:] + rest).astype(np.float32)


def _resize(rgba: np.ndarray, size: int) -> np.ndarray:
    if rgba.shape[0] == size and rgba.shape[1] == size:
        return rgba
    img = Image.fromarray(rgba, "RGBA").convert("RGBa").resize((size, size), Image.LANCZOS)
    return np.asarray(img.convert("RGBA"), dtype=np.uint8)


def contact_sheet(stills: dict[str, np.ndarray], columns: int = 4, cell: int = 256,
                  background: tuple[int, int, int] = (245, 245, 245)) -> np.ndarray:
    """Labelled grid of (H, W, 4) uint8 stills → (H', W', 4) uint8 RGBA sheet on an opaque background."""
    names = list(stills)
    rows = (len(names) + columns - 1) // columns
    label_h = 24
    sheet = Image.new("RGBA", (columns * cell, rows * (cell + label_h)), (*background, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=16)
    except TypeError:   # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    for i, name in enumerate(names):
        x, y = (i % columns) * cell, (i // columns) * (cell + label_h)
        tile = Image.fromarray(_resize(stills[name], cell), "RGBA")
        sheet.alpha_composite(tile, (x, y))
        text_w = draw.textlength(name, font=font)
        draw.text((x + (cell - text_w) / 2, y + cell + 5), name, fill=(20, 20, 20, 255), font=font)
    return np.asarray(sheet, dtype=np.uint8)


def make_stickers(character, out_dir: str | Path, config: StickerConfig = StickerConfig(),
                  names: list[str] | None = None, progress: bool = True, stats: RenderStats | None = None) -> dict[str, list[Path]]:
    """Write the sticker pack into out_dir → {expression: [files written]} (plus "contact_sheet").

    character: anything with ``render(poses (N, 45)) → (N, 4, H, W)`` model space (a Character).
    names: a subset of ``expressions()`` (default: all, at least 16).
    """
    from tqdm import tqdm

    from kyara.errors import KyaraError
    from kyara.render.video import open_writer

    out_dir = Path(out_dir)
    table = expressions()
    names = list(table) if names is None else names
    unknown = [n for n in names if n not in table]
    if unknown:
        raise KyaraError(f"unknown sticker expression {unknown[0]!r}; choose from: {', '.join(table)}")
    stats = stats if stats is not None else RenderStats()
    written: dict[str, list[Path]] = {}
    stills: dict[str, np.ndarray] = {}
    for name in tqdm(names, unit="sticker", desc="stickers", disable=not progress):
        files = []
        pose = table[name]
        if config.animations:
            track = loop_track(pose, config)
            hold_index = max(1, round(config.ease_s * config.fps))   # first frame at full expression
            frames = [_resize(f, config.size) for f in render_track(character, track, config.batch_size, stats)]
            still = frames[hold_index]
            for ext in (".webp", ".gif"):
                files.append(open_writer(out_dir / f"{name}{ext}", fps=config.fps).write_all(frames))
        else:
            still = _resize(next(render_track(character, pose.vector[None].copy(), 1, stats)), config.size)
        png = out_dir / f"{name}.png"
        atomic_write_bytes(png, encode_image(still, "PNG"))
        files.insert(0, png)
        stills[name] = still
        written[name] = files
    sheet = out_dir / "contact_sheet.png"
    atomic_write_bytes(sheet, encode_image(contact_sheet(stills, config.sheet_columns), "PNG"))
    written["contact_sheet"] = [sheet]
    index = {name: Pose.as_dict(table[name], nonzero=True) for name in names}
    atomic_write_bytes(out_dir / "stickers.json", json.dumps({"character": getattr(character, "name", None),
                                                             "expressions": index}, indent=2).encode())
    return written
