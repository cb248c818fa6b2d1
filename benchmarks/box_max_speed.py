"""The flow mask's dilation: one square max pool against losses.box_max (a column and a row pass), side by side.

    python benchmarks/box_max_speed.py [--device cpu] [--batch 16] [--radius 8] [--repeats 5]

Times both on a (batch, 1, 512, 512) 0/1 mask, alternately, and prints the minimum of each and whether the
values are equal (they must be: a maximum over a rectangle is the maximum of its columns' maxima).
"""
from __future__ import annotations

import argparse
import time

import torch

from kyara.distill.losses import box_max


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--radius", type=int, default=8, help="8: losses.flow_weight's 17 × 17 window")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev, r = torch.device(args.device), args.radius
    x = (torch.rand(args.batch, 1, 512, 512, generator=torch.Generator().manual_seed(0)) > 0.5).float().to(dev)
    paths = {"square max pool": lambda: torch.nn.functional.max_pool2d(x, 2 * r + 1, 1, r),
             "column + row passes (box_max)": lambda: box_max(x, r)}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = {name: [] for name in paths}
    for fn in paths.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in paths.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1000)
    square, separable = (min(v) for v in times.values())
    print(f"{dev}, ({args.batch}, 1, 512, 512), radius {r}, min of {args.repeats} alternating runs")
    print("| path | ms |\n|---|---|")
    for name, v in times.items():
        print(f"| {name} | {min(v):.2f} |")
    print(f"\n× {square / separable:.2f}; equal: {torch.equal(*(fn() for fn in paths.values()))}")


if __name__ == "__main__":
    main()
