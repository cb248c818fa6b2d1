"""CPU-lite student (issue 15) vs the full student: frames/s side by side, and quality (also vs the teacher).

    python benchmarks/lite_student.py [--character FILE.kyara] [--speed-poses 30] [--poses 100]
                                      [--teacher-poses 0] [--body-grid plan|128[,160,...]] [--threads 2]
                                      [--device cpu|cuda] [--seed 1234] [--skip-speed]

Speed (CPU only): one 512×512 uint8 RGBA frame per call, batch 1, the two renderers alternating pose
by pose in one process (background load hits both alike): full = ``Character.render_rgba``'s path
(``Student.pose`` + ``tensor_to_rgba_u8``), lite = ``LiteStudent.pose_rgba_u8``. First 3 poses of
each dropped (warm-up). Wall time and the process's CPU time per frame are both reported: on a shared
machine the CPU time is what the renderer costs, the wall time what other jobs leave it. Several body grids
(``--body-grid 128,160,192``) give one lite renderer each, all in the same rotation (the order turns by one
each pose), so their times and quality are side by side in one run; the rows are named ``lite@GRID``.

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


def lite_name(lites: dict[int, LiteStudent], grid: int) -> str:
    return "lite" if len(lites) == 1 else f"lite@{grid}"


def speed(character, lites: dict[int, LiteStudent], n: int) -> None:
    image = character.image
    poses = sample_poses(n + 3, torch.Generator().manual_seed(99))
    renderers = {"full": lambda pose: tensor_to_rgba_u8(character.render(pose)[0])}
    renderers.update({lite_name(lites, g): (lambda pose, lite=lite: lite.pose_rgba_u8(image, pose))
                      for g, lite in lites.items()})
    order = list(renderers)
    times: dict[str, list[float]] = {name: [] for name in order}
    cpu: dict[str, list[float]] = {name: [] for name in order}   # process CPU seconds: less sensitive to other jobs
    for i in range(len(poses)):
        turn = i % len(order)
        for name in order[turn:] + order[:turn]:   # each renderer takes each place in turn
            start, cpu_start = time.perf_counter(), time.process_time()
            renderers[name](poses[i:i + 1])
            if i >= 3:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - cpu_start)
    median = {k: float(np.median(v)) for k, v in times.items()}
    cpu_median = {k: float(np.median(v)) for k, v in cpu.items()}
    print(f"speed, {n} poses, the renderers in turn (load average after {load_average()})\n")
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


def quality(character, lites: dict[int, LiteStudent], n: int, k: int, seed: int, batch: int,
            teacher_name: str | None) -> None:
    device = str(character.device)
    image = character.image.to(character.device)
    poses = sample_poses(n, torch.Generator().manual_seed(seed))
    teacher = teacher_for(character, device, teacher_name) if k > 0 else None
    crop = STUDENT_FACE_BOX.crop
    names = {g: lite_name(lites, g) for g in lites}
    rows: dict[str, list[torch.Tensor]] = {f"{name} vs full": [] for name in names.values()}
    rows["full vs teacher"] = []
    rows.update({f"{name} vs teacher": [] for name in names.values()})

    def metrics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.stack([psnr(a, b), ssim(a, b), psnr(crop(a), crop(b)), ssim(crop(a), crop(b))], 1).cpu()

    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, n, batch):
            chunk = poses[s:s + batch].to(character.device)
            full = character.render(chunk)
            target = teacher.render(chunk[:k - s]).to(full.device).float() if s < k else None
            if target is not None:
                rows["full vs teacher"].append(metrics(full[:len(target)], target))
            for g, lite in lites.items():
                lite_frames = (lite.pose(image, chunk) if character.device.type == "cpu"
                               else lite.reference_pose(image, chunk)).float()
                rows[f"{names[g]} vs full"].append(metrics(lite_frames, full))
                if target is not None:
                    rows[f"{names[g]} vs teacher"].append(metrics(lite_frames[:len(target)], target))
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
        print()
        for name in names.values():
            gap = torch.cat(rows["full vs teacher"])[:, 0].mean() - torch.cat(rows[f"{name} vs teacher"])[:, 0].mean()
            print(f"{name} is {float(gap):.2f} dB below the full student against the teacher (acceptance: ≤ 1.5 dB; "
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
    ap.add_argument("--body-grid", default="plan",
                    help="the lite body grid's side, or several, comma-separated, side by side; 'plan': the grid "
                         "chosen for the student in its file's lite plan, else 128 (default %(default)s)")
    ap.add_argument("--face-threshold", type=float, default=LiteConfig.face_threshold)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.character}, torch {torch.__version__}, {args.device}, {args.threads} threads, "
          f"load average at start {load_average()}\n")
    try:
        grids = [None if g == "plan" else int(g) for g in args.body_grid.split(",")]
    except ValueError:
        ap.error(f"--body-grid: expected integers or 'plan' separated by commas, got {args.body_grid!r}")
    character = load_character(args.character, device=args.device)
    lites: dict[int, LiteStudent] = {}
    for grid in grids:
        try:
            lite = LiteStudent(character.poser, LiteConfig(body_grid=grid, face_threshold=args.face_threshold))
        except ValueError as err:
            ap.error(f"--body-grid {grid}: {err}")
        stored = lite._face_plan is not None
        plan = lite.face_plan()
        grid = lite.body_grid
        if grid in lites:
            ap.error(f"--body-grid: grid {grid} is named twice in {args.body_grid!r}")
        print(f"lite plan: body grid {grid}, movable face pixels {plan.share:.1%} "
              f"({'stored in the file' if stored else f'found in {plan.seconds:.1f} s from {lite.config.face_poses} poses'})")
        lites[grid] = lite
    print()
    if not args.skip_speed:
        if character.device.type != "cpu":
            raise SystemExit("the speed comparison is for the CPU; add --skip-speed with --device cuda")
        speed(character, lites, args.speed_poses)
    if args.poses > 0:
        quality(character, lites, args.poses, min(args.teacher_poses, args.poses), args.seed, args.batch, args.teacher)


if __name__ == "__main__":
    main()
