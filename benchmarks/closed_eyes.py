"""How cleanly does the THA3 teacher (or a .kyara student) close a character's eyes? (issue 12 item 3)

For each character image this renders the neutral pose and the eyes-closed poses (presets happy, laugh,
wink, sleepy; eye_relaxed=1 and eye_happy_wink=1 on both sides), and measures inside two fixed eye boxes
(where THA3's face morpher expects the eyes, see docs/benchmarks.md):

  iris%   iris-coloured pixels left, as a percentage of the neutral image's iris pixels (0 = clean close).
          An iris pixel is saturated (CIELAB chroma > 28), away from the skin colour (ΔE > 25) and
          within 25° of hue of the neutral iris colour (the median hue of the saturated pixels at the
          centre of the eye box).
  line    the closed lid line: the fraction of the eye box's width with a dark pixel (L* < 45) in it,
          relative to the neutral upper lash line's width. A clean close draws a line (~1); a smudge
          leaves only beige (~0). Reported for the closed eye(s) only.
  brow%   (happy only) dark pixels (L* < 45) left in the eyebrow boxes above the eyes, as a percentage
          of the neutral image's.

wink closes the character's left eye (the viewer's right box) only, so only that box is scored.
Head rotation in sleepy/laugh/wink moves the face by a few pixels; the boxes are large enough for it.

Usage:
  python benchmarks/closed_eyes.py [IMAGE_OR_KYARA ...] [--save-dir DIR]
    (default: the bundled sample character, with the teacher)
Prints one markdown table row per image and pose.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# Eye boxes in 512-pixel image coordinates, (x0, y0, x1, y1), end exclusive. They cover the eye positions
# of THA3's own sample images (eye centres at x≈233–240 / 274–278, y≈140–148) and of kyara's sample.
EYE_BOXES = {"right": (216, 128, 254, 166), "left": (258, 128, 296, 166)}  # character's right = viewer's left
BROW_BOXES = {"right": (216, 104, 254, 128), "left": (258, 104, 296, 128)}
CLOSED_POSES = ("happy", "laugh", "wink", "sleepy", "eye_relaxed", "eye_happy_wink")
CHROMA_MIN = 28.0    # iris pixels are saturated; skin, sclera, lashes and beige smudges are not
SKIN_DE_MIN = 25.0   # and far from the skin colour
HUE_TOL_DEG = 25.0   # and close in hue to the neutral iris
DARK_L = 45.0        # L* below this is a line (lashes, lid line, brows)
SKIN_DE_MAX = 10.0   # within this CIELAB ΔE of the skin colour a pixel counts as skin
SKIN_BOX = (252, 136, 260, 156)  # between the eyes: the skin reference
CHANGED_DE = 6.0     # a pixel the pose changed by less than this is not part of the closing eye


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
        # the eye itself: everything in the box that is not skin (lashes, sclera, iris, lids)
        self.eye_mask = np.linalg.norm(eye - self.skin, axis=-1) > SKIN_DE_MAX
        self.eye = eye
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
    dark = eye[..., 0] < DARK_L
    line = float(dark.any(axis=0).sum()) / ref.lash_width
    # smudge: former eye pixels that became neither skin nor the lid line (or its anti-aliased rim)
    rim = dark.copy()
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1), (-2, 0), (2, 0)):
        rim |= np.roll(dark, (dy, dx), axis=(0, 1))
    off_skin = np.linalg.norm(eye - ref.skin, axis=-1) > SKIN_DE_MAX
    # pixels the pose did not touch (hair over the box, blush) are not the eye: leave them out
    changed = ref.eye_mask & (np.linalg.norm(eye - ref.eye, axis=-1) > CHANGED_DE)
    smudge = 100.0 * (changed & off_skin & ~rim).sum() / max(int(changed.sum()), 1)
    brow = 100.0 * (crop(posed_lab, BROW_BOXES[side])[..., 0] < DARK_L).sum() / max(ref.brow_dark, 1)
    return {"iris": float(iris_left), "line": min(line, 1.5), "smudge": float(smudge), "brow": float(brow)}


def closed_pose(name: str):
    from kyara.pose import Pose

    if name == "eye_relaxed":
        return Pose(eye_relaxed_left=1.0, eye_relaxed_right=1.0)
    if name == "eye_happy_wink":
        return Pose(eye_happy_wink_left=1.0, eye_happy_wink_right=1.0)
    return Pose.preset(name)


def closed_sides(name: str) -> tuple[str, ...]:
    return ("left",) if name == "wink" else ("right", "left")


def measure(character, save_dir: Path | None = None, label: str = "") -> list[dict]:
    """Render neutral + CLOSED_POSES with `character` (a kyara Character) → one dict per pose."""
    from kyara.pose import Pose

    neutral = character.render_rgba(Pose())
    n_lab = srgb_to_lab(on_white(neutral))
    refs = {side: Reference(n_lab, side) for side in EYE_BOXES}
    rows = []
    frames = {"neutral": neutral}
    for name in CLOSED_POSES:
        rgba = character.render_rgba(closed_pose(name))
        frames[name] = rgba
        lab = srgb_to_lab(on_white(rgba))
        per_side = [score(refs[s], lab, s) for s in closed_sides(name)]
        rows.append({"pose": name,
                     "iris": max(p["iris"] for p in per_side),
                     "line": min(p["line"] for p in per_side),
                     "brow": float(np.mean([score(refs[s], lab, s)["brow"] for s in EYE_BOXES]))})
    if save_dir is not None:
        from kyara.image import save_image

        save_dir.mkdir(parents=True, exist_ok=True)
        for name, rgba in frames.items():
            save_image(rgba, save_dir / f"{label}_{name}.png")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="character images (.png, teacher) or .kyara students")
    parser.add_argument("--save-dir", type=Path, help="also write every render here as PNG")
    args = parser.parse_args(argv)
    from kyara.character import SAMPLE_IMAGE, Character, load_character

    inputs = args.inputs or [SAMPLE_IMAGE]
    print("| character | poser | pose | iris left % (0 = clean) | lid line (≈1 = drawn) | brows kept % |")
    print("|---|---|---|---:|---:|---:|")
    for path in inputs:
        if path.suffix == ".kyara":
            character, poser = load_character(path, device="cpu"), "student"
        else:
            character, poser = Character.from_image(path, device="cpu"), "teacher"
        for row in measure(character, args.save_dir, path.stem):
            brow = f"{row['brow']:.0f}" if row["pose"] == "happy" else ""
            print(f"| {path.name} | {poser} | {row['pose']} | {row['iris']:.1f} | {row['line']:.2f} | {brow} |",
                  flush=True)


if __name__ == "__main__":
    main()
