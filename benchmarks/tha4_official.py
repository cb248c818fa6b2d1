"""Official THA4 students rendered by the official code and by kyara; kyara exports run by the official code.

Needs the official THA4 demo repository (code and the two example students; CC BY-NC, read here, never
copied): ``--tha4-demo DIR``. Its code is imported from DIR/src (it needs ``omegaconf``); kyara never
imports it.

Direction 1, official → kyara: each official student (data/character_models/*) is rendered by the
official runtime (``CharacterModel`` + mode_14 poser, which premultiplies the character image) and by
kyara (``load_character(dir).render``, straight model space, premultiplied back for the comparison).
The row "kyara, straight input" is the behaviour before issue 17 (the character's colour convention
ignored), for reference.

Direction 2, kyara → official: a character is exported with ``export_tha4_directory`` and that
directory is rendered by the official runtime; compared with kyara's own render of the character.

Figures: PSNR in model space over all 4 channels of the premultiplied images (the official runtime's
output space), peak-to-peak 2 (range [-1, 1]); and the largest 8-bit difference of any channel of the
images as shown (straight sRGB, 8 bits, composited over black and over white).

    PYTHONPATH= .venv/bin/python benchmarks/tha4_official.py --tha4-demo /tmp/tha4demo --poses 32
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def model_psnr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """(N, 4, H, W) ×2 model space → per-image PSNR (dB, peak-to-peak 2, float64)."""
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    return [math.inf if m == 0 else 10 * math.log10(4.0 / float(m)) for m in mse]


def max_u8_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest visible 8-bit difference: both premultiplied images shown as kyara shows them (straight
    sRGB RGBA, 8 bits) composited over black and over white; max over pixels, channels, backgrounds.
    (Colour under alpha 0 is invisible and not counted.)"""
    from kyara.image import composite_over, tensor_to_rgba_u8, to_straight

    worst = 0
    for x, y in zip(a, b):
        u, v = tensor_to_rgba_u8(to_straight(x)), tensor_to_rgba_u8(to_straight(y))
        for background in ((0, 0, 0), (255, 255, 255)):
            d = composite_over(u, background).astype(int) - composite_over(v, background).astype(int)
            worst = max(worst, int(np.abs(d).max()))
    return worst


def same_files(original: Path, exported: Path) -> bool:
    """The exported student's tensors equal the original's and its PNG has the same alpha and the same
    colour wherever alpha > 0 (so the official loader makes the same premultiplied tensor)."""
    from PIL import Image

    for name in ("face_morpher.pt", "body_morpher.pt"):
        a = torch.load(original / name, map_location="cpu", weights_only=True)
        b = torch.load(exported / name, map_location="cpu", weights_only=True)
        if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
            return False
    a = np.asarray(Image.open(original / "character.png").convert("RGBA"))
    b = np.asarray(Image.open(exported / "character.png").convert("RGBA"))
    visible = a[..., 3] > 0   # colour under alpha 0 is multiplied by 0 by the official loader: irrelevant
    return np.array_equal(a[..., 3], b[..., 3]) and np.array_equal(a[visible], b[visible])


class OfficialRuntime:
    """The official THA4 student runtime on the CPU, loaded from a character_model.yaml."""

    def __init__(self, yaml_path: Path) -> None:
        from tha4.charmodel.character_model import CharacterModel

        model = CharacterModel.load(str(yaml_path))
        self.poser = model.get_poser(torch.device("cpu"))
        self.image = model.get_character_image(torch.device("cpu"))   # (4, 512, 512), premultiplied

    def render(self, poses: torch.Tensor, batch: int) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in range(0, len(poses), batch):
                p = poses[s:s + batch]
                out.append(self.poser.get_posing_outputs(self.image.unsqueeze(0).expand(len(p), -1, -1, -1), p)[0])
        return torch.cat(out)


def kyara_render(character, poses: torch.Tensor, batch: int) -> torch.Tensor:
    """kyara's render (straight model space) → premultiplied model space for the comparison."""
    from kyara.image import to_premultiplied

    return to_premultiplied(torch.cat([character.render(poses[s:s + batch]) for s in range(0, len(poses), batch)]))


def row(label: str, a: torch.Tensor, b: torch.Tensor, seconds: float, u8: bool = True) -> None:
    p = model_psnr(a, b)
    finite = [x for x in p if math.isfinite(x)]
    mean = sum(finite) / len(finite) if finite else math.inf
    visible = max_u8_diff(a, b) if u8 else "–"
    print(f"| {label} | {len(p)} | {min(p):.1f} | {mean:.1f} | {visible} | {seconds:.0f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tha4-demo", type=Path, required=True, help="the official THA4 demo repository")
    parser.add_argument("--poses", type=int, default=32)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--straight", type=Path, action="append", default=[],
                        help="a straight-colour .kyara to export (default: the bundled sample)")
    parser.add_argument("--straight-poses", type=int, default=8, help="poses for the straight-student rows")
    parser.add_argument("--export-all", action="store_true",
                        help="run the official code on every export (default: the first; the others are "
                             "checked file-identical to the originals and reuse the official render)")
    parser.add_argument("--skip-direction1", action="append", default=[], metavar="NAME",
                        help="skip official-vs-kyara for this student (e.g. already measured); export still runs")
    parser.add_argument("--straight-only", action="store_true", help="only the straight-student rows")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tha4_demo / "src"))
    torch.set_grad_enabled(False)

    from kyara.character import COLOUR_KEY, SAMPLE_CHARACTER, export_tha4_directory, load_character
    from kyara.pose_sampler import sample_poses

    poses = torch.cat([torch.zeros(1, 45), sample_poses(args.poses - 1, torch.Generator().manual_seed(args.seed))])
    students = sorted(p.parent for p in (args.tha4_demo / "data" / "character_models").glob("*/character_model.yaml"))
    straight = args.straight or [SAMPLE_CHARACTER]
    print(f"{len(poses)} poses (the rest pose + kyara.pose_sampler, seed {args.seed}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| comparison | poses | min PSNR dB | mean PSNR dB | max 8-bit Δ | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for directory in ([] if args.straight_only else students):
            character = load_character(directory)
            t0 = time.perf_counter()
            ours = kyara_render(character, poses, args.batch)
            t_ours = time.perf_counter() - t0
            if directory.name in args.skip_direction1:
                official = None
            else:
                t0 = time.perf_counter()
                official = OfficialRuntime(directory / "character_model.yaml").render(poses, args.batch)
                row(f"{directory.name}: official vs kyara", official, ours, t_ours + time.perf_counter() - t0)
            # Before issue 17: the same student fed straight colour, its output read as straight.
            if official is not None:
                old = load_character(directory)
                old.metadata.pop(COLOUR_KEY)
                t0 = time.perf_counter()
                row(f"{directory.name}: official vs kyara, straight input (before issue 17)", official,
                    torch.cat([old.render(poses[s:s + args.batch]) for s in range(0, len(poses), args.batch)]),
                    time.perf_counter() - t0)
            # Direction 2: kyara's export of the imported student, run by the official code.
            t0 = time.perf_counter()
            exported = export_tha4_directory(character, Path(tmp) / f"{directory.name}_export")
            same = same_files(directory, exported)
            if directory == students[0] or args.export_all or not same or official is None:
                back = OfficialRuntime(exported / "character_model.yaml").render(poses, args.batch)
                label = "kyara export run by the official code vs kyara"
            else:   # CPU time: identical files are the identical official computation (checked just above)
                back = official
                label = "kyara export (weights and pixels identical to the original: official render reused) vs kyara"
            row(f"{directory.name}: {label}", back, ours, time.perf_counter() - t0)
            print(f"<!-- {directory.name}: exported files identical to the official ones: {same} -->", flush=True)
        poses = poses[:args.straight_poses]
        for path in straight:
            # A straight-colour student (distilled by kyara from THA3): exported as it is (no exact
            # conversion exists); this measures how far the official runtime's render is from kyara's.
            character = load_character(path)
            region = getattr(character.poser, "region", None)
            t0 = time.perf_counter()
            ours = kyara_render(character, poses, args.batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # the region warning: reported by the rows below
                exported = export_tha4_directory(character, Path(tmp) / f"{path.stem}_export", allow_straight=True)
            back = OfficialRuntime(exported / "character_model.yaml").render(poses, args.batch)
            row(f"{path.name} (straight): export run by the official code vs kyara, whole canvas", back, ours,
                time.perf_counter() - t0)
            if region is not None:
                # The official runtime runs the body morpher on every pixel, and this student is untrained
                # outside its region; inside it, the two differ only by the colour convention.
                inside = region.cpu()[None, None].expand_as(ours)
                row(f"{path.name} (straight): the same, inside the student's region only", back[inside].reshape(len(poses), 1, 1, -1),
                    ours[inside].reshape(len(poses), 1, 1, -1), 0, u8=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
