"""Expression sticker pack: one transparent PNG, animated WebP and GIF per expression, plus a
labelled contact sheet.

Each animation is a short loop: neutral → expression (eased) → hold (with a blink unless the
expression already closes the eyes) → back to neutral → short rest. The ease-out reuses the
ease-in poses, so the frame cache renders each loop's distinct poses once.

Stickers are cropped to the bust by default (``BUST_BOX``: head and shoulders, derived from the
head box every input image follows), so the face fills the sticker. The expressions are sticker
recipes, stronger than the pose presets of the same name: each one combines its own brow shape,
eye shape, mouth shape and head/iris angle, so no two look alike at sticker size
(``face_distances`` measures it; benchmarks/stickers_distinct.py prints the table).

Animations are encoded small: identical consecutive frames become one longer frame, the GIF uses
one shared palette without dithering (so unchanged pixels stay unchanged and only the changed
rectangle of each frame is stored), and the WebP is lossy colour with exact alpha.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kyara.geometry import CANVAS, HEAD_BOX, Box
from kyara.image import atomic_write_bytes, encode_image
from kyara.pose import INDEX, NUM_PARAMETERS, PRESETS, Pose, both
from kyara.produce.frames import RenderStats, render_track
from kyara.produce.motion import EYE_CLOSING, smoothstep

# Head and shoulders: the head box every input follows (top-centre 128×128) plus room for hair,
# head turns and tilts, and the shoulders. In 512-pixel canvas coordinates.
BUST_BOX = Box(top=HEAD_BOX.top - 48, left=HEAD_BOX.left - 64, height=2 * HEAD_BOX.height, width=2 * HEAD_BOX.width)
FULL_BOX = Box(top=0, left=0, height=CANVAS, width=CANVAS)
FRAMINGS: dict[str, Box] = {"bust": BUST_BOX, "full": FULL_BOX}
# Where the distinctness of two expressions is measured: the face (brows, eyes, mouth).
FACE_BOX = HEAD_BOX


# The 16 sticker expressions: the 9 non-neutral preset names (recipes pushed further than the
# presets, so each reads at sticker size) then 7 extras. Each differs from every other in at least
# two of: brow shape, eye shape, mouth shape, head/iris direction (values validated at import).
STICKER_EXPRESSIONS: dict[str, dict[str, float]] = {
    "happy": {**both("eyebrow_happy", 1.0), **both("eye_happy_wink", 1.0), "mouth_aaa": 0.5,
              **both("mouth_raised_corner", 1.0), "neck_z": 0.25, "head_x": 0.1},
    "sad": {**both("eyebrow_troubled", 1.0), **both("eye_relaxed", 0.6), **both("mouth_lowered_corner", 1.0),
            "mouth_ooo": 0.2, "iris_rotation_x": -0.8, "head_x": -0.6, "neck_z": -0.15},
    "angry": {**both("eyebrow_angry", 1.0), **both("eye_raised_lower_eyelid", 0.8), **both("iris_small", 0.4),
              "mouth_delta": 1.0, **both("mouth_lowered_corner", 0.6), "head_x": -0.3},
    "surprised": {**both("eyebrow_raised", 1.0), **both("eye_surprised", 1.0), **both("iris_small", 0.6),
                  "mouth_ooo": 1.0, "head_x": 0.15},
    "wink": {"eyebrow_happy_left": 0.8, "eyebrow_raised_right": 0.6, "eye_wink_left": 1.0, "mouth_aaa": 0.25,
             **both("mouth_raised_corner", 1.0), "iris_rotation_y": -0.3, "neck_z": 0.55},
    "sleepy": {**both("eye_relaxed", 1.0), **both("eyebrow_lowered", 0.8), "mouth_ooo": 0.55,
               "head_x": -0.6, "neck_z": 0.6},
    "smug": {**both("eye_unimpressed", 0.9), "mouth_smirk": 1.0, "eyebrow_raised_left": 0.9,
             "eyebrow_serious_right": 0.8, "iris_rotation_y": -0.5, "head_y": 0.6, "head_x": 0.25, "neck_z": -0.25},
    "laugh": {**both("eyebrow_happy", 1.0), **both("eye_happy_wink", 1.0), "mouth_aaa": 1.0,
              **both("mouth_raised_corner", 1.0), "head_x": 0.6, "neck_z": -0.3},
    "troubled": {**both("eyebrow_troubled", 1.0), **both("eye_surprised", 0.3), "mouth_eee": 0.8,
                 **both("mouth_lowered_corner", 0.7), "iris_rotation_y": 0.9, "head_x": -0.25, "neck_z": -0.2},
    "look_left": {"head_y": 1.0, "body_y": 0.6, "iris_rotation_y": 1.0, **both("mouth_raised_corner", 0.4)},
    "look_right": {"head_y": -1.0, "body_y": -0.6, "iris_rotation_y": -1.0, **both("mouth_raised_corner", 0.4)},
    "look_up": {"head_x": 1.0, "iris_rotation_x": 1.0, **both("eyebrow_raised", 0.7), "mouth_ooo": 0.35},
    "shy": {"head_x": -0.5, "neck_z": -0.5, **both("eyebrow_troubled", 0.8), **both("eye_relaxed", 0.5),
            "iris_rotation_y": 0.9, "iris_rotation_x": -0.5, "mouth_uuu": 0.4, **both("mouth_raised_corner", 0.5)},
    "thinking": {"neck_z": 0.5, "head_y": -0.6, "head_x": 0.2, "iris_rotation_x": 1.0, "iris_rotation_y": -0.9,
                 "eyebrow_serious_left": 0.9, "eyebrow_raised_right": 0.9, "mouth_uuu": 0.5,
                 "mouth_lowered_corner_left": 0.5},
    "excited": {**both("eyebrow_raised", 1.0), **both("eye_surprised", 0.8), "mouth_aaa": 1.0,
                **both("mouth_raised_corner", 1.0), "head_x": 0.35, "neck_z": 0.3},
    "pout": {"mouth_uuu": 1.0, **both("mouth_lowered_corner", 0.6), **both("eyebrow_angry", 0.7),
             **both("eye_unimpressed", 0.4), "iris_rotation_y": -0.9, "head_y": 0.45, "neck_z": -0.35},
}
BLINK = [INDEX["eye_wink_left"], INDEX["eye_wink_right"]]
for _values in STICKER_EXPRESSIONS.values():
    Pose(**_values)
assert set(PRESETS) - {"neutral"} <= set(STICKER_EXPRESSIONS), "every preset has a sticker"


def expressions() -> dict[str, Pose]:
    """Every sticker expression name → its pose (the preset names first, then the extras)."""
    return {name: Pose(**values) for name, values in STICKER_EXPRESSIONS.items()}


@dataclass(frozen=True)
class StickerConfig:
    fps: float = 12.0
    ease_s: float = 0.35        # neutral → expression and back
    hold_s: float = 1.2
    rest_s: float = 0.4         # neutral pause before the loop restarts
    blink_s: float = 0.2
    size: int = 256             # output size in pixels (square); 256 = the bust's own resolution
    framing: str = "bust"       # a key of FRAMINGS: "bust" (head and shoulders) or "full" (the whole frame)
    gif_colors: int = 48        # GIF palette size, the transparent entry included
    webp_quality: int = 60      # lossy WebP colour quality; alpha stays exact
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


def _crop(rgba: np.ndarray, box: Box) -> np.ndarray:
    """`box` (in 512-canvas units) of an (S, S, 4) frame of any size S."""
    k = rgba.shape[0] / CANVAS
    return rgba[round(box.top * k):round((box.top + box.height) * k),
                round(box.left * k):round((box.left + box.width) * k)]


def frame_crop(rgba: np.ndarray, framing: str, size: int) -> np.ndarray:
    """A rendered (S, S, 4) uint8 frame (any S) → (size, size, 4) sticker."""
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    return _resize(np.ascontiguousarray(_crop(rgba, FRAMINGS[framing])), size)


def face_distances(stills: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Full (S, S, 4) uint8 renders (any S) → (names, (N, N) float64 matrix): the mean absolute
    difference (0..255 sRGB levels) between each pair's FACE_BOX, composited over mid-grey.

    How different two stickers look where expressions live; the diagonal is 0.
    """
    names = list(stills)
    faces = []
    for name in names:
        face = _crop(stills[name], FACE_BOX).astype(np.float64)
        alpha = face[..., 3:4] / 255.0
        faces.append(face[..., :3] * alpha + 128.0 * (1.0 - alpha))
    n = len(names)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = float(np.abs(faces[i] - faces[j]).mean())
    return names, out


def render_stills(character, names: Iterable[str] | None = None, batch_size: int = 4,
                  stats: RenderStats | None = None) -> dict[str, np.ndarray]:
    """Each expression at full strength → {name: (S, S, 4) uint8} uncropped renders."""
    table = expressions()
    names = list(table) if names is None else list(names)
    poses = np.stack([table[n].vector for n in names]).astype(np.float32)
    return dict(zip(names, render_track(character, poses, batch_size, stats)))


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


def palette_png(rgb_or_rgba: np.ndarray, colors: int = 256) -> bytes:
    """(H, W, 3|4) uint8 opaque picture → a palette PNG (about a third of an RGB PNG for drawings)."""
    img = Image.fromarray(np.ascontiguousarray(rgb_or_rgba[..., :3]), "RGB")
    buf = io.BytesIO()
    img.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# -- compact animation encoders ---------------------------------------------------------------------
def _runs(frames: list[np.ndarray], fps: float, unit_ms: int = 1) -> tuple[list[np.ndarray], list[int]]:
    """Merge identical consecutive frames → (distinct frames, duration of each in ms, a multiple of unit_ms)."""
    step = 1000.0 / fps
    out, counts = [], []
    for f in frames:
        if out and np.array_equal(out[-1], f):
            counts[-1] += 1
        else:
            out.append(f)
            counts.append(1)
    # Round cumulative times, so the loop keeps its length whatever the merging and the unit.
    ends = (np.round(np.cumsum(counts) * step / unit_ms) * unit_ms).astype(int)
    return out, [int(d) for d in np.diff(np.concatenate([[0], ends])).clip(min=unit_ms)]


def gif_bytes(frames: list[np.ndarray], fps: float, colors: int = 48) -> bytes:
    """(H, W, 4) uint8 RGBA frames → a looping GIF with one shared palette of `colors` entries
    (the last is transparent: alpha < 128), no dithering, identical frames merged and only each
    frame's changed rectangle stored."""
    if not 2 <= colors <= 256:
        raise ValueError(f"GIF colours must be in 2..256, got {colors}")
    frames, durations = _runs(frames, fps, unit_ms=10)     # GIF delays are in 1/100 s
    opaque = np.concatenate([f[f[..., 3] >= 128][:, :3] for f in frames]) if frames else np.zeros((0, 3), np.uint8)
    if len(opaque) == 0:
        opaque = np.zeros((1, 3), np.uint8)
    sample = opaque[:: max(1, len(opaque) // 200_000)]
    palette_img = Image.fromarray(sample[None], "RGB").quantize(colors - 1, method=Image.Quantize.MEDIANCUT,
                                                                dither=Image.Dither.NONE)
    palette = palette_img.getpalette()[: 3 * (colors - 1)]
    palette += palette[:3] * (colors - 1 - len(palette) // 3)     # fewer colours than asked: pad
    # Pillow maps to all 256 entries: fill the unused ones with copies of entry 0 (mapped back to 0
    # below), so no opaque pixel lands on the transparent index.
    palette_img.putpalette(palette + palette[:3] * (256 - colors + 1))
    palette += [0, 0, 0] * (256 - colors + 1)
    transparent = colors - 1
    indexed = []
    for f in frames:
        idx = np.asarray(Image.fromarray(np.ascontiguousarray(f[..., :3]), "RGB")
                         .quantize(palette=palette_img, dither=Image.Dither.NONE), dtype=np.uint8).copy()
        idx[idx >= transparent] = 0
        idx[f[..., 3] < 128] = transparent
        indexed.append(idx)
    images = [Image.fromarray(idx, "P") for idx in indexed]
    for img in images:
        img.putpalette(palette)
    # Keep the previous frame (disposal 1) so a frame stores only what changed, except before a
    # frame where an opaque pixel turns transparent: only restoring to the background clears it.
    disposal = [2 if np.any((idx != transparent) & (indexed[(k + 1) % len(indexed)] == transparent)) else 1
                for k, idx in enumerate(indexed)]
    buf = io.BytesIO()
    if len(images) == 1:     # Pillow takes per-frame lists only for several frames
        durations, disposal = durations[0], disposal[0]
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], loop=0, duration=durations,
                   disposal=disposal, transparency=transparent, optimize=True)
    return buf.getvalue()


def webp_bytes(frames: list[np.ndarray], fps: float, quality: int = 60) -> bytes:
    """(H, W, 4) uint8 RGBA frames → a looping animated WebP (lossy colour, exact alpha), identical
    frames merged."""
    frames, durations = _runs(frames, fps)
    images = [Image.fromarray(np.ascontiguousarray(f), "RGBA") for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, "WEBP", save_all=True, append_images=images[1:], loop=0, duration=durations,
                   quality=quality, alpha_quality=100, method=4)   # method 6 / minimize_size: 1-2 % smaller, ~100× slower
    return buf.getvalue()


def make_stickers(character, out_dir: str | Path, config: StickerConfig = StickerConfig(),
                  names: list[str] | None = None, progress: bool = True, stats: RenderStats | None = None) -> dict[str, list[Path]]:
    """Write the sticker pack into out_dir → {expression: [files written]} (plus "contact_sheet").

    character: anything with ``render(poses (N, 45)) → (N, 4, H, W)`` model space (a Character).
    names: a subset of ``expressions()`` (default: all 16).
    """
    from tqdm import tqdm

    from kyara.errors import KyaraError

    out_dir = Path(out_dir)
    table = expressions()
    names = list(table) if names is None else names
    unknown = [n for n in names if n not in table]
    if unknown:
        raise KyaraError(f"unknown sticker expression {unknown[0]!r}; choose from: {', '.join(table)}")
    if config.framing not in FRAMINGS:
        raise KyaraError(f"unknown sticker framing {config.framing!r}; choose from: {', '.join(FRAMINGS)}")
    stats = stats if stats is not None else RenderStats()
    written: dict[str, list[Path]] = {}
    stills: dict[str, np.ndarray] = {}
    for name in tqdm(names, unit="sticker", desc="stickers", disable=not progress):
        files = []
        pose = table[name]
        if config.animations:
            track = loop_track(pose, config)
            hold_index = max(1, round(config.ease_s * config.fps))   # first frame at full expression
            frames = [frame_crop(f, config.framing, config.size)
                      for f in render_track(character, track, config.batch_size, stats)]
            still = frames[hold_index]
            for ext, data in ((".webp", webp_bytes(frames, config.fps, config.webp_quality)),
                              (".gif", gif_bytes(frames, config.fps, config.gif_colors))):
                atomic_write_bytes(out_dir / f"{name}{ext}", data)
                files.append(out_dir / f"{name}{ext}")
        else:
            still = frame_crop(next(render_track(character, pose.vector[None].copy(), 1, stats)),
                               config.framing, config.size)
        png = out_dir / f"{name}.png"
        atomic_write_bytes(png, encode_image(still, "PNG", optimize=True))
        files.insert(0, png)
        stills[name] = still
        written[name] = files
    sheet = out_dir / "contact_sheet.png"
    atomic_write_bytes(sheet, palette_png(contact_sheet(stills, config.sheet_columns)))
    written["contact_sheet"] = [sheet]
    index = {name: Pose.as_dict(table[name], nonzero=True) for name in names}
    atomic_write_bytes(out_dir / "stickers.json", json.dumps({"character": getattr(character, "name", None),
                                                             "framing": config.framing,
                                                             "expressions": index}, indent=2).encode())
    return written
