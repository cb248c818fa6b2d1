"""CPU time of one 512×512 student frame with the body network on the whole canvas vs on the region.

    python benchmarks/region_cpu_frame.py [--character FILE.kyara] [--poses 12]

Same student, same process, alternating the two modes pose by pose (so background load hits both
alike); the whole-canvas mode simply clears the student's region (its pixels outside the region are
untrained, so only the time is meaningful there). Prints a markdown table: mode, region share,
median and best seconds per frame.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.pose_sampler import sample_poses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--poses", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    region_student = load_character(args.character)
    if region_student.poser.region is None:
        raise SystemExit(f"{args.character}: this student has no region (distilled with --no-region or older kyara)")
    whole = copy.copy(region_student)
    whole.poser = copy.deepcopy(region_student.poser)
    whole.poser.set_region(None)
    share = float(region_student.poser.region.float().mean())
    poses = sample_poses(args.poses, torch.Generator().manual_seed(7))
    times: dict[str, list[float]] = {"whole canvas": [], "region": []}
    for i in range(args.poses):
        for name, ch in (("whole canvas", whole), ("region", region_student)):
            t0 = time.perf_counter()
            ch.render(poses[i:i + 1])
            times[name].append(time.perf_counter() - t0)
    print(f"{args.character}, torch {torch.__version__}, {args.threads} threads, {args.poses} poses (first 2 dropped)\n")
    print("| body network on | share of canvas | median s/frame | best s/frame |\n|---|---|---|---|")
    for name, values in times.items():
        v = sorted(values[2:])
        print(f"| {name} | {share if name == 'region' else 1.0:.2f} | {v[len(v) // 2]:.3f} | {v[0]:.3f} |")


if __name__ == "__main__":
    main()
