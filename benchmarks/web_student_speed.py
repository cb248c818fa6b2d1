"""Browser renderer speed (issue 14): the WGSL full and lite students (server/static/render/student.wgsl)
run natively through wgpu, side by side with the PyTorch student, on the bundled character at 512×512.

    python benchmarks/web_student_speed.py --frames 200            # any wgpu adapter + torch's best device
    python benchmarks/web_student_speed.py --frames 3 --max-seconds 120   # a CPU (lavapipe) machine

Prints markdown tables: frames/s, ms/frame and achieved TFLOP/s per renderer, then (``--check N``)
the PSNR of each WGSL student against its PyTorch counterpart on N exactness poses (the full one
against PyTorch on ``--device``, the lite one against kyara.student.lite.LiteStudent, whose lite
path runs on the CPU only). FLOPs per frame are counted from the passes each plan runs
(multiply-adds × 2 over the pixels each pass's mask selects — the student's region, the coarse taps,
the movable face pixels — with channels padded to groups of 4); the PyTorch row uses the full count.
On a GPU the PyTorch LiteStudent renders exactly as the full student (its lite path is the CPU's),
so there is no PyTorch lite row unless ``--cpu-lite`` asks for one on the CPU.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.web.plan import Plan, build_plan
from kyara.web.poses import exactness_poses
from kyara.web.weights import parse_web_bytes, student_to_web_bytes


def flops_per_frame(plan: Plan) -> float:
    """Multiply-adds × 2 of every dense pass over the pixels its mask selects (first layers and the
    compose pass are a few FLOPs per pixel and ignored)."""
    ends = list(plan.mask_offsets[1:]) + [plan.masks.size]
    counts = [int(plan.masks[o:e].sum()) for o, e in zip(plan.mask_offsets, ends)]
    total = 0.0
    for p in plan.passes:
        if p.kind == "dense":
            pixels = p.size * p.size if p.mask is None else counts[p.mask]
            total += 2.0 * 16 * p.g_in * p.g_out * pixels
    return total


def wgsl_renderer(kyw: bytes, lite: bool):
    from kyara.web.wgsl import WgslStudent, adapter

    gpu = adapter()
    return None if gpu is None else WgslStudent(parse_web_bytes(kyw), gpu, lite=lite)


def time_wgsl(renderer, poses: np.ndarray, frames: int, max_seconds: float, label: str):
    renderer.render(poses[0])                       # warm-up: pipelines, first dispatch
    start = time.perf_counter()
    done = 0
    while done < frames:
        renderer.submit(poses[done % len(poses)])
        done += 1
        if done % 10 == 0 or time.perf_counter() - start > max_seconds:
            renderer.read()                          # wait for the GPU now and then (bounded queue)
            if time.perf_counter() - start > max_seconds:
                break
    renderer.read()
    elapsed = time.perf_counter() - start
    info = renderer.adapter.info
    return (f"WGSL {label} student via wgpu ({info.get('backend_type', '?')}: {info.get('device', '?')})",
            done, elapsed, flops_per_frame(renderer.plan))


def time_torch(character, poses: np.ndarray, frames: int, max_seconds: float, device: str, label: str = ""):
    character.poser.to(device)
    batch = torch.from_numpy(poses).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    character.render(batch[:1])
    sync()
    start = time.perf_counter()
    done = 0
    while done < frames and time.perf_counter() - start < max_seconds:
        character.render(batch[done % len(batch)][None])
        done += 1
    sync()
    return f"PyTorch {label}student ({device}, batch 1, fp32)", done, time.perf_counter() - start


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def check(renderer, character, poses: np.ndarray) -> tuple[float, float]:
    """(min, mean) PSNR of the WGSL renderer against character.render on poses."""
    from kyara.image import tensor_to_rgba_u8

    scores = [psnr_u8(renderer.render(p), tensor_to_rgba_u8(character.render(torch.from_numpy(p)[None])[0].cpu()))
              for p in poses]
    return min(scores), float(np.mean(scores))


def main() -> None:
    from kyara.student.lite import LiteStudent

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per row")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop a row early after this long")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device of the PyTorch row")
    parser.add_argument("--weights", choices=("float16", "float32"), default="float16")
    parser.add_argument("--check", type=int, default=2, metavar="N",
                        help="also check each WGSL student against PyTorch on the first N exactness poses (0: no)")
    parser.add_argument("--cpu-lite", action="store_true", help="also time the PyTorch lite student on the CPU")
    args = parser.parse_args()

    character = load_character(SAMPLE_CHARACTER)
    lite_character = load_character(SAMPLE_CHARACTER)          # on the CPU: the PyTorch lite path
    lite_character.poser = LiteStudent(lite_character.poser)
    kyw = student_to_web_bytes(lite_character, args.weights, lite=True)   # its face plan goes into the weights
    poses = exactness_poses(20)
    rows, checks = [], []
    for lite in (False, True):
        label = "lite" if lite else "full"
        renderer = wgsl_renderer(kyw, lite)
        if renderer is None:
            rows.append((f"WGSL {label}: no adapter (pip install wgpu; on CPU: apt-get install mesa-vulkan-drivers)",
                         0, 0.0, 0.0))
            continue
        rows.append(time_wgsl(renderer, poses, args.frames, args.max_seconds, label))
        if args.check:
            reference = lite_character if lite else character
            if not lite:
                character.poser.to(args.device)
            checks.append((label, *check(renderer, reference, poses[:args.check])))
    parsed = parse_web_bytes(kyw)
    full_flops, lite_flops = (flops_per_frame(build_plan(parsed.tensors, parsed.header["face_box"], lite))
                              for lite in (None, parsed.header["lite"]))
    rows.append((*time_torch(character, poses, args.frames, args.max_seconds, args.device), full_flops))
    if args.cpu_lite:
        rows.append((*time_torch(lite_character, poses, args.frames, args.max_seconds, "cpu", "lite "), lite_flops))

    print(f"Bundled character, 512×512, weights {args.weights}; {platform.node()}, torch {torch.__version__}\n")
    print("| renderer | frames | frames/s | ms/frame | GFLOP/frame | TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for name, done, elapsed, flops in rows:
        if not done:
            print(f"| {name} | 0 | – | – | – | – |")
            continue
        fps = done / elapsed
        print(f"| {name} | {done} | {fps:.2f} | {1000 / fps:.2f} | {flops / 1e9:.2f} | {flops * fps / 1e12:.4f} |")
    if checks:
        print(f"\nExactness, first {args.check} of kyara.web.poses.exactness_poses(20) (8-bit RGBA; acceptance 45 dB):\n")
        print("| WGSL student | against | PSNR min / mean (dB) |")
        print("|---|---|---|")
        for label, low, mean in checks:
            against = f"PyTorch student ({args.device})" if label == "full" else "PyTorch LiteStudent (cpu)"
            print(f"| {label} | {against} | {low:.2f} / {mean:.2f} |")


if __name__ == "__main__":
    main()
