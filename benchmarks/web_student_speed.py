"""Browser renderer speed (issue 14): the WGSL student (server/static/render/student.wgsl) run natively
through wgpu, side by side with the PyTorch student, on the bundled character at 512×512.

    python benchmarks/web_student_speed.py --frames 200            # any wgpu adapter + torch's best device
    python benchmarks/web_student_speed.py --frames 3 --max-seconds 120   # a CPU (lavapipe) machine

Prints a markdown table: frames/s, ms/frame and achieved TFLOP/s. FLOPs per frame are counted from
the passes the shaders run (multiply-adds × 2 over the pixels each level evaluates — the student's
region and the taps it needs — with channels padded to groups of 4), the same count for both rows.
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
    sizes = [int(np.sqrt(n)) for n in np.diff(list(plan.mask_offsets) + [plan.masks.size])]
    counts = {s: int(plan.masks[o:o + s * s].sum()) for s, o in zip(sizes, plan.mask_offsets)}
    total = 0.0
    for p in plan.passes:
        if p.kind == "dense":
            pixels = p.size * p.size if p.mask is None else counts[p.size]
            total += 2.0 * 16 * p.g_in * p.g_out * pixels
    return total


def time_wgsl(kyw: bytes, poses: np.ndarray, frames: int, max_seconds: float):
    from kyara.web.wgsl import WgslStudent, adapter

    gpu = adapter()
    if gpu is None:
        return None
    renderer = WgslStudent(parse_web_bytes(kyw), gpu)
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
    info = gpu.info
    return f"WGSL via wgpu ({info.get('backend_type', '?')}: {info.get('device', '?')})", done, elapsed, renderer.plan


def time_torch(character, poses: np.ndarray, frames: int, max_seconds: float, device: str):
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
    return f"PyTorch student ({device}, batch 1, fp32)", done, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per row")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop a row early after this long")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device of the PyTorch row")
    parser.add_argument("--weights", choices=("float16", "float32"), default="float16")
    args = parser.parse_args()

    character = load_character(SAMPLE_CHARACTER)
    kyw = student_to_web_bytes(character, args.weights)
    poses = exactness_poses(20)
    parsed = parse_web_bytes(kyw)
    plan = build_plan(parsed.tensors, parsed.header["face_box"])
    flops = flops_per_frame(plan)
    rows = []
    result = time_wgsl(kyw, poses, args.frames, args.max_seconds)
    if result is None:
        rows.append(("WGSL via wgpu: no adapter (pip install wgpu; on CPU: apt-get install mesa-vulkan-drivers)", 0, 0.0))
    else:
        rows.append(result[:3])
    rows.append(time_torch(character, poses, args.frames, args.max_seconds, args.device))

    print(f"Bundled character, 512×512, {flops / 1e9:.2f} GFLOP/frame (region student), weights {args.weights}; "
          f"{platform.node()}, torch {torch.__version__}\n")
    print("| renderer | frames | frames/s | ms/frame | TFLOP/s |")
    print("|---|---|---|---|---|")
    for name, done, elapsed in rows:
        if not done:
            print(f"| {name} | 0 | – | – | – |")
            continue
        fps = done / elapsed
        print(f"| {name} | {done} | {fps:.2f} | {1000 / fps:.1f} | {flops * fps / 1e12:.4f} |")


if __name__ == "__main__":
    main()
