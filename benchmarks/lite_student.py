"""CPU-lite student (issue 15) vs the full student: frames/s side by side, and quality.

    python benchmarks/lite_student.py [--character FILE.kyara] [--speed-poses 30] [--poses 100]
                                      [--teacher-poses 0] [--body-grid 128] [--threads 2]

Speed: one 512×512 uint8 RGBA frame per call, batch 1, the two renderers alternating pose by pose in
one process (background load hits both alike): full = ``Character.render_rgba``'s path
(``Student.pose`` + ``tensor_to_rgba_u8``), lite = ``LiteStudent.pose_rgba_u8``. First 3 poses of each
dropped (warm-up). Quality on --poses held-out poses (kyara.pose_sampler, seed 1234): PSNR / SSIM of
the lite frame against the full student (kyara.eval.metrics: display space), over the whole canvas
and over the face box (STUDENT_FACE_BOX of the output canvas); with --teacher-poses K also both
students against the THA3 teacher on the first K poses (slow: ~1 s or more per teacher frame).
Prints markdown tables and the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from kyara.character import SAMPLE_CHARACTER, SAMPLE_IMAGE, load, load_character
from kyara.eval.metrics import psnr, ssim
from kyara.geometry import STUDENT_FACE_BOX
from kyara.image import tensor_to_rgba_u8
from kyara.pose_sampler import sample_poses
from kyara.student.lite import LiteConfig, LiteStudent


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--speed-poses", type=int, default=30)
    ap.add_argument("--poses", type=int, default=100)
    ap.add_argument("--teacher-poses", type=int, default=0)
    ap.add_argument("--body-grid", type=int, default=LiteConfig.body_grid)
    ap.add_argument("--face-threshold", type=float, default=LiteConfig.face_threshold)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.character}, torch {torch.__version__}, {args.threads} threads, load average at start {load_average()}\n")
    character = load_character(args.character)
    student = character.poser
    lite = LiteStudent(student, LiteConfig(body_grid=args.body_grid, face_threshold=args.face_threshold))
    plan = lite.face_plan()
    print(f"lite plan: body grid {args.body_grid}, movable face pixels {plan.share:.1%} "
          f"(found in {plan.seconds:.1f} s from {lite.config.face_poses} poses)\n")
    image = character.image

    poses = sample_poses(args.speed_poses + 3, torch.Generator().manual_seed(99))
    times: dict[str, list[float]] = {"full": [], "lite": []}
    cpu: dict[str, list[float]] = {"full": [], "lite": []}   # process CPU seconds: less sensitive to other jobs
    for i in range(len(poses)):
        for name in (("full", "lite") if i % 2 == 0 else ("lite", "full")):
            start, cpu_start = time.perf_counter(), time.process_time()
            if name == "full":
                tensor_to_rgba_u8(character.render(poses[i:i + 1])[0])
            else:
                lite.pose_rgba_u8(image, poses[i:i + 1])
            if i >= 3:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - cpu_start)
    median = {k: float(np.median(v)) for k, v in times.items()}
    print(f"speed, {args.speed_poses} poses alternating (load average after {load_average()})\n")
    cpu_median = {k: float(np.median(v)) for k, v in cpu.items()}
    print("| renderer | median ms/frame | best ms/frame | frames/s (median) | speed-up (median) | CPU ms/frame (median) "
          "| CPU speed-up |\n|---|---|---|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {median[name] * 1e3:.1f} | {min(values) * 1e3:.1f} | {1 / median[name]:.1f} | "
              f"{median['full'] / median[name]:.2f}× | {cpu_median[name] * 1e3:.1f} | "
              f"{cpu_median['full'] / cpu_median[name]:.2f}× |")

    test = sample_poses(args.poses, torch.Generator().manual_seed(1234))
    rows = {"canvas": [], "face": []}
    full_frames, lite_frames = [], []
    with torch.inference_mode():
        for chunk in test.split(4):
            a = student.pose(image, chunk)
            b = lite.pose(image, chunk)
            full_frames.append(a)
            lite_frames.append(b)
            rows["canvas"].append(torch.stack([psnr(b, a), ssim(b, a)], 1))
            rows["face"].append(torch.stack([psnr(STUDENT_FACE_BOX.crop(b), STUDENT_FACE_BOX.crop(a)),
                                             ssim(STUDENT_FACE_BOX.crop(b), STUDENT_FACE_BOX.crop(a))], 1))
    print(f"\nlite vs full student, {args.poses} poses (load average after {load_average()})\n")
    print("| area | PSNR mean dB | PSNR worst dB | SSIM mean | SSIM worst |\n|---|---|---|---|---|")
    for area, values in rows.items():
        v = torch.cat(values).double()
        v[:, 0] = v[:, 0].clamp(max=100.0)
        print(f"| {area} | {float(v[:, 0].mean()):.2f} | {float(v[:, 0].min()):.2f} | {float(v[:, 1].mean()):.5f} | "
              f"{float(v[:, 1].min()):.5f} |")

    if args.teacher_poses > 0:
        teacher = load(SAMPLE_IMAGE, device="cpu")
        teacher.image = image   # the student's own character image (the bundled PNG may have moved on)
        k = args.teacher_poses
        full_k, lite_k = torch.cat(full_frames)[:k], torch.cat(lite_frames)[:k]
        targets = torch.cat([teacher.render(chunk) for chunk in test[:k].split(4)])
        print(f"\nvs the teacher ({teacher.teacher_name}), first {k} poses (load average after {load_average()})\n")
        print("| student | PSNR dB (mean) | SSIM (mean) | face box PSNR dB | face box SSIM |\n|---|---|---|---|---|")
        for name, frames in (("full", full_k), ("lite", lite_k)):
            crop = STUDENT_FACE_BOX.crop
            print(f"| {name} | {float(psnr(frames, targets).mean()):.2f} | {float(ssim(frames, targets).mean()):.4f} | "
                  f"{float(psnr(crop(frames), crop(targets)).mean()):.2f} | "
                  f"{float(ssim(crop(frames), crop(targets)).mean()):.4f} |")


if __name__ == "__main__":
    main()
