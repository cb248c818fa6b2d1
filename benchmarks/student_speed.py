"""Student frames/s at 512×512: batches of poses of one character.

    python benchmarks/student_speed.py [--device cpu|cuda] [--character FILE] [--frames N] [--batches 1,4,16]

Prints a markdown table: one character, B poses per call (fp16/bf16 rows on CUDA report the max |Δ|
against fp32 in model space and the PSNR of the low-precision output vs fp32).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from kyara.character import SAMPLE_CHARACTER, load_character, random_character
from kyara.pose_sampler import sample_poses
from kyara.eval.metrics import psnr


def timed(fn, frames: int, device: torch.device) -> float:
    """Seconds per call of fn, after warm-up."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(frames):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--batches", default="1,4,16")
    args = ap.parse_args()
    device = torch.device(args.device)
    try:
        ch = load_character(args.character, device=str(device))
    except Exception:
        ch = random_character(0, device=str(device))
    student = ch.poser
    image = ch.image.to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    print(f"student speed on {name}, torch {torch.__version__}, character {ch.name}\n")
    print("| dtype | batch | ms/batch | frames/s | max abs diff vs fp32 | PSNR vs fp32 (dB) |")
    print("|---|---|---|---|---|---|")
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    for b in [int(x) for x in args.batches.split(",")]:
        poses = sample_poses(b, torch.Generator().manual_seed(b)).to(device)
        ref = student.pose(image, poses).float()
        for dt in dtypes:
            s = student.to(dt)
            img = image.to(dt)
            p = poses.to(dt)
            out = s.pose(img, p).float()
            frames = max(3, args.frames // b) if device.type == "cuda" else max(2, args.frames // (4 * b))
            sec = timed(lambda: s.pose(img, p), frames, device)
            diff = (out - ref).abs().max().item()
            q = float(psnr(out, ref).mean()) if dt != torch.float32 else float("inf")
            print(f"| {str(dt).replace('torch.', '')} | {b} | {sec * 1000:.2f} | {b / sec:.1f} | {diff:.2e} | {q:.1f} |")
        student.to(torch.float32)


if __name__ == "__main__":
    main()
