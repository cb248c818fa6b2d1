"""Check test characters with the THA3 teacher: do eyes close, the mouth open, head and body turn, and does
the hair follow the head without tearing? (issue 16 item 3)

For each character image this renders, with the teacher on CPU, the poses of POSES (rest, blink, wink,
happy closed eyes, mouth aaa / ooo, head left / right / down, neck tilt, body sway) and prints one markdown
table row per character:

  iris%    closed eyes (blink, both eyes): iris-coloured pixels left in the eye boxes, % of the rest pose's
           (benchmarks/closed_eyes.py's measure; 0 = a clean close). The worse eye.
  line     the closed lid line's width relative to the open lash line (closed_eyes.py; ≈1 = a full line).
  wink%    the same iris% for the winking eye (the character's left = the viewer's right).
  aaa/ooo  mouth pixels changed by more than 40 levels (max over RGB, over white) in the mouth box
           MOUTH_BOX, against rest. The bundled sample is the yardstick (THA3 opens its mouth).
  turn     mean |Δ| (0-255) in THA3's head box for head_y = ±1 (the mean of the two): the head moved.
  holes    new enclosed transparent pixels (holes inside the silhouette, alpha < 128) in any pose that
           the rest pose does not have: hair tearing open shows up here. The worst pose.
  parts    opaque pieces (alpha ≥ 128, ≥ 40 pixels) at rest → the most in any pose: a tail tip or a lock
           torn off the hair adds pieces; strands merging into the hair removes some. (The one-pixel loose
           strands are already dashed at alpha 128 in the rest pose; the 40-pixel floor leaves their
           fragments out.)

Usage:
  python benchmarks/characters/teacher_check.py [IMAGE ...] [--sheet PNG] [--save-dir DIR] [--renders DIR]
    (default: the three benchmarks/characters/*.png and the bundled sample as the yardstick; --renders
    scores the PNGs an earlier --save-dir run wrote instead of rendering)
--sheet writes the contact sheet (per character: full frames, then face crops, one column per pose).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHARACTERS = ("twin_tails", "long_straight", "high_ponytail")
MOUTH_BOX = (236, 160, 276, 200)  # x0, y0, x1, y1 (end exclusive): the mouth at y≈175 and the jaw below it
HEAD_BOX = (192, 64, 320, 192)    # THA3's head box
CHANGED = 40                      # levels: a pixel "changed" (the number docs/benchmarks.md uses for the mouth)
FACE_CROP = (168, 40, 344, 216)   # the sheet's face crop (176 px, shown at the tile size)
TILE = 176
# The uniform's sleeves touch the torso; body sway opens a sliver between them (~1000 px on the bundled
# sample too, not hair), so holes there are not counted.
ARM_GAP_BOX = (176, 300, 336, 512)


def poses() -> dict[str, object]:
    from kyara.pose import Pose

    return {
        "rest": Pose(),
        "blink": Pose(eye_wink_left=1.0, eye_wink_right=1.0),
        "wink": Pose(eye_wink_left=1.0),
        "happy": Pose(eye_happy_wink_left=1.0, eye_happy_wink_right=1.0),
        "aaa": Pose(mouth_aaa=1.0),
        "ooo": Pose(mouth_ooo=1.0),
        "head left": Pose(head_y=-1.0),
        "head right": Pose(head_y=1.0),
        "head down": Pose(head_x=-1.0),
        "neck tilt": Pose(neck_z=1.0),
        "body y": Pose(body_y=1.0, head_y=0.5),
        "body z": Pose(body_z=-1.0, neck_z=-0.5, breathing=1.0),
    }


def closed_eyes_module():
    spec = importlib.util.spec_from_file_location("closed_eyes", ROOT / "benchmarks" / "closed_eyes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    return np.rint(rgba[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)


def changed_pixels(a: np.ndarray, b: np.ndarray, box) -> int:
    x0, y0, x1, y1 = box
    d = np.abs(on_white(a)[y0:y1, x0:x1].astype(int) - on_white(b)[y0:y1, x0:x1].astype(int)).max(axis=2)
    return int((d > CHANGED).sum())


def mean_abs(a: np.ndarray, b: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(on_white(a)[y0:y1, x0:x1].astype(float) - on_white(b)[y0:y1, x0:x1]).mean())


def holes(rgba: np.ndarray) -> np.ndarray:
    """(512, 512) bool: transparent pixels (alpha < 128) enclosed by the character, outside ARM_GAP_BOX."""
    from scipy import ndimage

    opaque = rgba[..., 3] >= 128
    out = ndimage.binary_fill_holes(opaque) & ~opaque
    x0, y0, x1, y1 = ARM_GAP_BOX
    out[y0:y1, x0:x1] = False
    return out


def pieces(rgba: np.ndarray, min_px: int = 40) -> int:
    from scipy import ndimage

    labels, n = ndimage.label(rgba[..., 3] >= 128, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= min_px).sum())


def measure(frames: dict[str, np.ndarray], ce) -> dict[str, float]:
    rest = frames["rest"]
    rest_lab = ce.srgb_to_lab(ce.on_white(rest))
    refs = {side: ce.Reference(rest_lab, side) for side in ce.EYE_BOXES}

    def eye(name: str, sides) -> list[dict]:
        lab = ce.srgb_to_lab(ce.on_white(frames[name]))
        return [ce.score(refs[s], lab, s) for s in sides]

    blink = eye("blink", ("right", "left"))
    rest_holes = holes(rest)
    return {
        "iris": max(p["iris"] for p in blink),
        "line": min(p["line"] for p in blink),
        "wink": eye("wink", ("left",))[0]["iris"],
        "happy_iris": max(p["iris"] for p in eye("happy", ("right", "left"))),
        "aaa": changed_pixels(frames["aaa"], rest, MOUTH_BOX),
        "ooo": changed_pixels(frames["ooo"], rest, MOUTH_BOX),
        "turn": 0.5 * (mean_abs(frames["head left"], rest, HEAD_BOX) + mean_abs(frames["head right"], rest, HEAD_BOX)),
        "holes": max(int((holes(f) & ~rest_holes).sum()) for f in frames.values()),
        "holes_pose": max(frames, key=lambda k: int((holes(frames[k]) & ~rest_holes).sum())),
        "parts_rest": pieces(rest),
        "parts_max": max(pieces(f) for f in frames.values()),
    }


def load_renders(directory: Path, stem: str) -> dict[str, np.ndarray]:
    """The PNGs an earlier --save-dir run wrote for `stem`, by pose name."""
    from kyara.image import load_rgba

    return {name: load_rgba(directory / f"{stem}_{name.replace(' ', '_')}.png") for name in poses()}


def render_all(path: Path) -> dict[str, np.ndarray]:
    import torch

    from kyara.character import Character
    from kyara.image import tensor_to_rgba_u8
    from kyara.pose import stack

    character = Character.from_image(path, device="cpu")
    named = poses()
    out: dict[str, np.ndarray] = {}
    names = list(named)
    for i in range(0, len(names), 4):  # small batches: bounded memory on a shared CPU
        chunk = names[i:i + 4]
        with torch.inference_mode():
            frames = character.render(stack([named[n] for n in chunk]))
        for n, f in zip(chunk, frames):
            out[n] = tensor_to_rgba_u8(f)
    return out


def sheet(rows: list[tuple[str, dict[str, np.ndarray]]]) -> bytes:
    """Per character two rows (full frame; face crop), one column per pose → PNG bytes."""
    from PIL import Image, ImageDraw

    names = list(poses())
    label_h, gap = 14, 2
    width = len(names) * (TILE + gap) - gap
    height = label_h + len(rows) * (2 * (TILE + gap) + label_h) - gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(names):
        draw.text((c * (TILE + gap) + 4, 1), name, fill=(0, 0, 0))
    y = label_h
    for char_name, frames in rows:
        draw.text((4, y + 1), char_name, fill=(160, 0, 0))
        y += label_h
        for c, name in enumerate(names):
            rgb = Image.fromarray(on_white(frames[name]))
            x = c * (TILE + gap)
            canvas.paste(rgb.resize((TILE, TILE), Image.LANCZOS), (x, y))
            canvas.paste(rgb.crop(FACE_CROP).resize((TILE, TILE), Image.LANCZOS), (x, y + TILE + gap))
        y += 2 * (TILE + gap)
    buf = io.BytesIO()
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", type=Path, help="character PNGs (default: the test characters + sample)")
    parser.add_argument("--sheet", type=Path, help="write the contact sheet PNG here")
    parser.add_argument("--save-dir", type=Path, help="also write every render as PNG (<stem>_<pose>.png)")
    parser.add_argument("--renders", type=Path, help="score the PNGs an earlier --save-dir run wrote (no teacher)")
    args = parser.parse_args(argv)
    from kyara.character import SAMPLE_IMAGE
    from kyara.image import atomic_write_bytes, save_image

    images = args.images or [HERE / f"{n}.png" for n in CHARACTERS] + [SAMPLE_IMAGE]
    ce = closed_eyes_module()
    print("| character | blink iris % | blink lid line | wink iris % | happy iris % | aaa px | ooo px "
          "| head turn Δ | new hole px (pose) | pieces rest → max | render s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for path in images:
        t0 = time.perf_counter()
        frames = load_renders(args.renders, path.stem) if args.renders else render_all(path)
        seconds = time.perf_counter() - t0
        m = measure(frames, ce)
        rows.append((path.stem, frames))
        print(f"| {path.stem} | {m['iris']:.1f} | {m['line']:.2f} | {m['wink']:.1f} | {m['happy_iris']:.1f} "
              f"| {m['aaa']} | {m['ooo']} | {m['turn']:.1f} | {m['holes']} ({m['holes_pose']}) "
              f"| {m['parts_rest']} → {m['parts_max']} | {seconds:.0f} |", flush=True)
        if args.save_dir is not None and args.renders is None:
            for name, rgba in frames.items():
                save_image(rgba, args.save_dir / f"{path.stem}_{name.replace(' ', '_')}.png")
    if args.sheet is not None:
        data = sheet(rows)
        atomic_write_bytes(args.sheet, data)
        print(f"\nwrote {args.sheet} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
