"""How cleanly does the THA3 teacher (or a .kyara student) close a character's eyes? (issue 12 item 3)

For each character image this renders the neutral pose and the eyes-closed poses (presets happy, laugh,
wink, sleepy; eye_relaxed=1 and eye_happy_wink=1 on both sides), and measures inside two fixed eye boxes
(where THA3's face morpher expects the eyes, see docs/benchmarks.md):

  iris%   iris-coloured pixels left, as a percentage of the neutral image's iris pixels (0 = clean close).
          An iris pixel is saturated (CIELAB chroma > 28), away from the skin colour (ΔE > 25) and
          within 25° of hue of the neutral iris colour (the mean hue direction of the saturated pixels at
          the centre of the eye box).
  line    the closed lid line's width: the fraction of the eye box's columns with a dark pixel (L* < 45),
          relative to the neutral upper lash line's width. A clean close draws a line (~1); a smudge
          leaves only beige (~0). The worse of the two eyes is reported.
  lid L*  how dark that line is: the 1st percentile of L* in the eye box (a lash-coloured line is ~15-35,
          beige smudges with ghost lashes ~75-80). The worse of the two eyes is reported.
  brow%   (happy only) dark pixels (L* < 45) left in the boxes above the eyes, as a percentage of the
          neutral image's (mean of the two sides). These boxes hold the brows and the bang tips' lines.

wink closes the character's left eye (the viewer's right box) only, so only that box is scored.
Head rotation in sleepy/laugh/wink moves the face by a few pixels; the boxes are large enough for it.
The boxes are fixed and sized for kyara's sample: on other characters, hair or glasses inside them skew
the numbers.

Usage:
  python benchmarks/closed_eyes.py [IMAGE_OR_KYARA ...] [--save-dir DIR] [--renders DIR] [--grid PNG]
    (default: the bundled sample character, with the teacher; --renders scores the PNGs an earlier
    --save-dir run wrote instead of rendering; --grid writes the before/after face picture)
Prints one markdown table row per image and pose.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# Eye boxes in 512-pixel image coordinates, (x0, y0, x1, y1), end exclusive. They cover the eye positions
# of THA3's own sample images (eye centres at x≈233–240 / 274–278, y≈140–148) and of kyara's sample.
# Their inner edges stop short of the nose bridge, their outer edges and top short of kyara's side locks and
# bang tips, so that hair lines do not count as lid lines.
EYE_BOXES = {"right": (222, 127, 252, 159), "left": (260, 127, 290, 159)}  # character's right = viewer's left
BROW_BOXES = {"right": (222, 101, 252, 127), "left": (260, 101, 290, 127)}
CLOSED_POSES = ("happy", "laugh", "wink", "sleepy", "eye_relaxed", "eye_happy_wink")
CHROMA_MIN = 28.0    # iris pixels are saturated; skin, sclera, lashes and beige smudges are not
SKIN_DE_MIN = 25.0   # and far from the skin colour
HUE_TOL_DEG = 25.0   # and close in hue to the neutral iris
DARK_L = 45.0        # L* below this is a line (lashes, lid line, brows)
SKIN_BOX = (252, 136, 260, 156)  # between the eyes: the skin reference


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB → (..., 3) float CIELAB (D65)."""
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 straight RGBA → (H, W, 3) uint8 over white."""
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    return np.rint(rgba[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)


def crop(lab: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return lab[y0:y1, x0:x1]


def hue_deg(lab: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))


def chroma(lab: np.ndarray) -> np.ndarray:
    return np.hypot(lab[..., 1], lab[..., 2])


class Reference:
    """What the neutral render tells about one eye: skin colour, iris hue, iris pixel count, lash width."""

    def __init__(self, neutral_lab: np.ndarray, side: str) -> None:
        box = EYE_BOXES[side]
        eye = crop(neutral_lab, box)
        # skin: the median of the light pixels of the strip between the eyes (the nose bridge)
        bridge = crop(neutral_lab, SKIN_BOX).reshape(-1, 3)
        bridge = bridge[bridge[:, 0] > 60]
        self.skin = np.median(bridge, axis=0) if len(bridge) else np.array([93.0, 6.0, 9.0])
        h, w = eye.shape[:2]
        core = eye[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3)
        sat = core[(chroma(core) > CHROMA_MIN) & (np.linalg.norm(core - self.skin, axis=1) > SKIN_DE_MIN)]
        if len(sat) == 0:
            raise ValueError(f"no iris colour found in the {side} eye box {box} of the neutral image")
        # circular median-ish: mean direction of the saturated core pixels
        ang = np.radians(hue_deg(sat))
        self.iris_hue = float(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())))
        self.iris_pixels = int(self.iris_mask(eye).sum())
        dark_cols = (eye[..., 0] < DARK_L).any(axis=0)
        self.lash_width = max(int(dark_cols.sum()), 1)
        self.brow_dark = int((crop(neutral_lab, BROW_BOXES[side])[..., 0] < DARK_L).sum())

    def iris_mask(self, eye: np.ndarray) -> np.ndarray:
        d_hue = np.abs((hue_deg(eye) - self.iris_hue + 180.0) % 360.0 - 180.0)
        return ((chroma(eye) > CHROMA_MIN) & (np.linalg.norm(eye - self.skin, axis=-1) > SKIN_DE_MIN)
                & (d_hue < HUE_TOL_DEG))


def score(ref: Reference, posed_lab: np.ndarray, side: str) -> dict[str, float]:
    eye = crop(posed_lab, EYE_BOXES[side])
    iris_left = 100.0 * ref.iris_mask(eye).sum() / max(ref.iris_pixels, 1)
    line = float((eye[..., 0] < DARK_L).any(axis=0).sum()) / ref.lash_width
    # how dark the lid line is: the 1st percentile of L* in the box (a smudge stays light, ~60-70)
    lid_l = float(np.percentile(eye[..., 0], 1.0))
    brow = 100.0 * (crop(posed_lab, BROW_BOXES[side])[..., 0] < DARK_L).sum() / max(ref.brow_dark, 1)
    return {"iris": float(iris_left), "line": min(line, 1.5), "lid_l": lid_l, "brow": float(brow)}


def closed_pose(name: str):
    from kyara.pose import Pose

    if name == "eye_relaxed":
        return Pose(eye_relaxed_left=1.0, eye_relaxed_right=1.0)
    if name == "eye_happy_wink":
        return Pose(eye_happy_wink_left=1.0, eye_happy_wink_right=1.0)
    return Pose.preset(name)


def closed_sides(name: str) -> tuple[str, ...]:
    return ("left",) if name == "wink" else ("right", "left")


def measure(character, save_dir: Path | None = None, label: str = "", renders: Path | None = None,
            frames: dict | None = None) -> list[dict]:
    """Render neutral + CLOSED_POSES with `character` (a kyara Character) → one dict per pose.
    renders: score the PNGs a previous run wrote with --save-dir (DIR/<label>_<pose>.png) instead.
    frames: if given, filled with pose name → (512, 512, 4) uint8 render."""
    from kyara.image import load_rgba
    from kyara.pose import Pose

    def render(name: str, pose) -> np.ndarray:
        if renders is not None:
            return load_rgba(renders / f"{label}_{name}.png")
        return character.render_rgba(pose)

    neutral = render("neutral", Pose())
    n_lab = srgb_to_lab(on_white(neutral))
    refs = {side: Reference(n_lab, side) for side in EYE_BOXES}
    rows = []
    frames = {} if frames is None else frames
    frames["neutral"] = neutral
    for name in CLOSED_POSES:
        rgba = render(name, closed_pose(name))
        frames[name] = rgba
        lab = srgb_to_lab(on_white(rgba))
        per_side = [score(refs[s], lab, s) for s in closed_sides(name)]
        rows.append({"pose": name,
                     "iris": max(p["iris"] for p in per_side),
                     "line": min(p["line"] for p in per_side),
                     "lid_l": max(p["lid_l"] for p in per_side),
                     "brow": float(np.mean([score(refs[s], lab, s)["brow"] for s in EYE_BOXES]))})
    if save_dir is not None:
        from kyara.image import save_image

        save_dir.mkdir(parents=True, exist_ok=True)
        for name, rgba in frames.items():
            save_image(rgba, save_dir / f"{label}_{name}.png")
    return rows


GRID_POSES = ("neutral", "happy", "wink", "sleepy", "laugh")
GRID_BOX = (184, 88, 328, 200)  # the face, in 512-pixel image coordinates


def face_grid(rows: list[dict[str, np.ndarray]], scale: int = 2) -> np.ndarray:
    """One row per character, one column per GRID_POSES: face crops over white, `scale`× (nearest) →
    (H, W, 3) uint8."""
    x0, y0, x1, y1 = GRID_BOX
    gap = 4
    tile_w, tile_h = (x1 - x0) * scale, (y1 - y0) * scale
    out = np.full((len(rows) * (tile_h + gap) - gap, len(GRID_POSES) * (tile_w + gap) - gap, 3), 255, np.uint8)
    for r, frames in enumerate(rows):
        for c, name in enumerate(GRID_POSES):
            tile = on_white(frames[name])[y0:y1, x0:x1].repeat(scale, axis=0).repeat(scale, axis=1)
            out[r * (tile_h + gap): r * (tile_h + gap) + tile_h, c * (tile_w + gap): c * (tile_w + gap) + tile_w] = tile
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="character images (.png, teacher) or .kyara students")
    parser.add_argument("--save-dir", type=Path, help="also write every render here as PNG")
    parser.add_argument("--renders", type=Path, help="score the PNGs an earlier --save-dir run wrote (no poser)")
    parser.add_argument("--grid", type=Path, help=f"write a PNG of the face in {', '.join(GRID_POSES)}, "
                        "one row per input (the docs' before/after picture)")
    args = parser.parse_args(argv)
    from kyara.character import SAMPLE_IMAGE, Character, load_character

    inputs = args.inputs or [SAMPLE_IMAGE]
    print("| character | poser | pose | iris left % (0 = clean) | lid line width (≈1 = drawn) "
          "| lid line L* (low = dark line) | brow-box strokes kept % |")
    print("|---|---|---|---:|---:|---:|---:|")
    grid_rows: list[dict[str, np.ndarray]] = []
    for path in inputs:
        poser = "student" if path.suffix == ".kyara" else "teacher"
        if args.renders is not None:
            character = None
        elif poser == "student":
            character = load_character(path, device="cpu")
        else:
            character = Character.from_image(path, device="cpu")
        frames: dict[str, np.ndarray] = {}
        grid_rows.append(frames)
        for row in measure(character, args.save_dir, path.stem, args.renders, frames):
            brow = f"{row['brow']:.0f}" if row["pose"] == "happy" else ""
            print(f"| {path.name} | {poser} | {row['pose']} | {row['iris']:.1f} | {row['line']:.2f} "
                  f"| {row['lid_l']:.0f} | {brow} |", flush=True)
    if args.grid is not None:
        import io

        from PIL import Image

        from kyara.image import atomic_write_bytes

        buf = io.BytesIO()
        Image.fromarray(face_grid(grid_rows)).save(buf, format="PNG", optimize=True)
        atomic_write_bytes(args.grid, buf.getvalue())
        print(f"\nwrote {args.grid} ({len(buf.getvalue())} bytes)")


if __name__ == "__main__":
    main()
