"""CPU-lite student (issue 15) vs the full student: frames/s side by side, and quality (also vs the teacher).

    python benchmarks/lite_student.py [--character FILE.kyara] [--speed-poses 30] [--poses 100]
                                      [--teacher-poses 0] [--body-grid 128] [--threads 2]
                                      [--device cpu|cuda] [--seed 1234] [--skip-speed]

Speed (CPU only): one 512×512 uint8 RGBA frame per call, batch 1, the two renderers alternating pose
by pose in one process (background load hits both alike): full = ``Character.render_rgba``'s path
(``Student.pose`` + ``tensor_to_rgba_u8``), lite = ``LiteStudent.pose_rgba_u8``. First 3 poses of
each dropped (warm-up). Wall time and the process's CPU time per frame are both reported: on a shared
machine the CPU time is what the renderer costs, the wall time what other jobs leave it.

Quality on --poses poses (kyara.pose_sampler with --seed; 2147483647 = kyara.eval's held-out stream):
display-space PSNR / SSIM (kyara.eval.metrics) over the canvas and over the face box (STUDENT_FACE_BOX
of the output canvas): lite against the full student, and with --teacher-poses K both students
against the character's THA3 teacher on the first K poses (the teacher posing the student's own
character image). On the CPU the lite frames are its CPU path (``LiteStudent.pose``); on a GPU its
batched torch equivalent (``LiteStudent.reference_pose``; equal to ~1e-4, a test). The GPU check for
the lead (1000 held-out poses, every metric):

    python benchmarks/lite_student.py --device cuda --skip-speed --poses 1000 --teacher-poses 1000 \\
        --seed 2147483647 --character FILE.kyara

Prints markdown tables and the load average.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from kyara.character import DEFAULT_TEACHER, SAMPLE_CHARACTER, SAMPLE_IMAGE, Character, load_character
from kyara.eval.metrics import psnr, ssim
from kyara.geometry import STUDENT_FACE_BOX
from kyara.image import tensor_to_rgba_u8
from kyara.pose_sampler import sample_poses
from kyara.student.lite import LiteConfig, LiteStudent


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def speed(character, lite: LiteStudent, n: int) -> None:
    image = character.image
    poses = sample_poses(n + 3, torch.Generator().manual_seed(99))
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
    cpu_median = {k: float(np.median(v)) for k, v in cpu.items()}
    print(f"speed, {n} poses alternating (load average after {load_average()})\n")
    print("| renderer | median ms/frame | best ms/frame | frames/s (median) | frames/s (best) | speed-up (median) "
          "| CPU ms/frame (median) | CPU speed-up |\n|---|---|---|---|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {median[name] * 1e3:.1f} | {min(values) * 1e3:.1f} | {1 / median[name]:.1f} | "
              f"{1 / min(values):.1f} | {median['full'] / median[name]:.2f}× | {cpu_median[name] * 1e3:.1f} | "
              f"{cpu_median['full'] / cpu_median[name]:.2f}× |")


def teacher_for(character, device: str, name: str | None) -> Character:
    """The THA3 (or named) teacher posing the student's own character image, on device."""
    from kyara.teacher import TEACHERS

    name = name or (character.teacher_name if character.teacher_name in TEACHERS else DEFAULT_TEACHER)
    teacher = Character.from_image(SAMPLE_IMAGE, teacher=name, device=device)
    teacher.image = character.image   # the student's own character image (the bundled PNG may have moved on)
    return teacher


def quality(character, lite: LiteStudent, n: int, k: int, seed: int, batch: int, teacher_name: str | None) -> None:
    device = str(character.device)
    image = character.image.to(character.device)
    poses = sample_poses(n, torch.Generator().manual_seed(seed))
    teacher = teacher_for(character, device, teacher_name) if k > 0 else None
    crop = STUDENT_FACE_BOX.crop
    rows: dict[str, list[torch.Tensor]] = {"lite vs full": [], "full vs teacher": [], "lite vs teacher": []}

    def metrics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([psnr(a, b), ssim(a, b), psnr(crop(a), crop(b)), ssim(crop(a), crop(b))], 1).cpu()

    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch):
            chunk = poses[s:s + batch].to(character.device)
            full = character.render(chunk)
            lite_frames = (lite.pose(image, chunk) if character.device.type == "cpu"
                           else lite.reference_pose(image, chunk)).float()
            rows["lite vs full"].append(metrics(lite_frames, full))
            if s < k:
                target = teacher.render(chunk[:k - s]).to(full.device).float()
                rows["full vs teacher"].append(metrics(full[:len(target)], target))
                rows["lite vs teacher"].append(metrics(lite_frames[:len(target)], target))
    seconds = time.perf_counter() - start
    print(f"\nquality, {n} poses (seed {seed}; teacher on the first {k}: {teacher.teacher_name if teacher else '-'}), "
          f"{device}, {seconds:.0f} s (load average after {load_average()})\n")
    print("| comparison | poses | PSNR mean dB | PSNR worst dB | SSIM mean | SSIM worst | face box PSNR mean dB "
          "| face box PSNR worst dB | face box SSIM mean |\n|---|---|---|---|---|---|---|---|---|")
    for name, values in rows.items():
        if not values:
            continue
        v = torch.cat(values).double()
        v[:, 0::2] = v[:, 0::2].clamp(max=100.0)   # identical frames: +inf dB
        print(f"| {name} | {len(v)} | {float(v[:, 0].mean()):.2f} | {float(v[:, 0].min()):.2f} | "
              f"{float(v[:, 1].mean()):.5f} | {float(v[:, 1].min()):.5f} | {float(v[:, 2].mean()):.2f} | "
              f"{float(v[:, 2].min()):.2f} | {float(v[:, 3].mean()):.5f} |")
    if k > 0:
        gap = torch.cat(rows["full vs teacher"])[:, 0].mean() - torch.cat(rows["lite vs teacher"])[:, 0].mean()
        print(f"\nlite is {float(gap):.2f} dB below the full student against the teacher (acceptance: ≤ 1.5 dB; "
              f"lite ≥ 33 dB and SSIM ≥ 0.98)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (quality only off the CPU)")
    ap.add_argument("--speed-poses", type=int, default=30)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--poses", type=int, default=100)
    ap.add_argument("--teacher-poses", type=int, default=0)
    ap.add_argument("--teacher", default=None, help="teacher name (default: the character's own, else THA3 separable_float)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--body-grid", type=int, default=LiteConfig.body_grid)
    ap.add_argument("--face-threshold", type=float, default=LiteConfig.face_threshold)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.character}, torch {torch.__version__}, {args.device}, {args.threads} threads, "
          f"load average at start {load_average()}\n")
    character = load_character(args.character, device=args.device)
    lite = LiteStudent(character.poser, LiteConfig(body_grid=args.body_grid, face_threshold=args.face_threshold))
    stored = lite._face_plan is not None
    plan = lite.face_plan()
    print(f"lite plan: body grid {args.body_grid}, movable face pixels {plan.share:.1%} "
          f"({'stored in the file' if stored else f'found in {plan.seconds:.1f} s from {lite.config.face_poses} poses'})\n")
    if not args.skip_speed:
        if character.device.type != "cpu":
            raise SystemExit("the speed comparison is for the CPU; add --skip-speed with --device cuda")
        speed(character, lite, args.speed_poses)
    if args.poses > 0:
        quality(character, lite, args.poses, min(args.teacher_poses, args.poses), args.seed, args.batch, args.teacher)


if __name__ == "__main__":
    main()
