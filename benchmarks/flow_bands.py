"""At which spatial scales a student's flow error costs the image (session 38, docs/benchmarks.md).

    python benchmarks/flow_bands.py STUDENT.kyara [--poses 8] [--seed 777] [--sigmas 1,2,4]

For N held-out poses (CPU, THA3 teacher): the PSNR of the teacher's own blend over a warp (display space, as in
student_error_map.py's "the teacher's blend over the student's warp") with
- the teacher's flow Gaussian-blurred by σ px (how much fine structure the teacher's flow has, and what losing it
  would cost: a student whose flow is that smooth can do no better);
- the student's flow with its detail finer than σ swapped for the teacher's (what the student's missing fine
  structure costs), and the teacher's flow with the student's fine detail (what the error finer than σ costs alone);
- the mean size of each flow's detail finer than σ (flow − its blur) where the teacher's output is visible.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from kyara.character import load_character
from kyara.eval.metrics import to_display
from kyara.nn.warp import apply_flow
from kyara.pose_sampler import sample_poses
from kyara.teacher import load_teacher

sys.path.insert(0, str(Path(__file__).resolve().parent))     # its neighbour, also when loaded by a test
from student_fit import gaussian as gaussian_blur  # noqa: E402  (the separable Gaussian session 17 blurred flows with)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("character", help="a distilled .kyara file (THA3 teacher)")
    ap.add_argument("--poses", type=int, default=8)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--sigmas", default="1,2,4", help="blur widths in px, comma-separated")
    args = ap.parse_args()
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        ap.error(f"--sigmas wants numbers separated by commas, got {args.sigmas!r}")
    if not sigmas or min(sigmas) <= 0:
        ap.error(f"--sigmas must be positive, got {args.sigmas!r}")
    ch = load_character(args.character)
    teacher = load_teacher(ch.teacher_name, device="cpu")
    prepared = teacher.prepare(ch.image)
    poses = sample_poses(args.poses, torch.Generator().manual_seed(args.seed))
    rows = ["the student's flow"]
    for s in sigmas:
        rows += [f"the teacher's flow blurred by σ = {s:g} px", f"the student's flow, its detail finer than σ = {s:g} the teacher's",
                 f"the teacher's flow, its detail finer than σ = {s:g} the student's"]
    squared = dict.fromkeys(rows, 0.0)
    detail = {s: [0.0, 0.0] for s in sigmas}        # Σ |teacher's detail|, Σ |student's detail| (px, where visible)
    visible_pixels = 0
    with torch.no_grad():
        for start in range(0, args.poses, 4):
            p = poses[start:start + 4]
            out = teacher.pose_all(prepared, p)
            e = out.editor
            target = to_display(out.image.float())
            body_input = out.face_morphed_full
            student_flow = ch.poser.body_outputs(body_input, p).flow.float()
            teacher_flow = e.flow.float()
            visible = out.image[:, 3] > -0.9
            visible_pixels += visible.sum().item()
            flows = {"the student's flow": student_flow}
            for s in sigmas:
                low_s, low_t = gaussian_blur(student_flow, s), gaussian_blur(teacher_flow, s)
                flows[f"the teacher's flow blurred by σ = {s:g} px"] = low_t
                flows[f"the student's flow, its detail finer than σ = {s:g} the teacher's"] = low_s + (teacher_flow - low_t)
                flows[f"the teacher's flow, its detail finer than σ = {s:g} the student's"] = low_t + (student_flow - low_s)
                # both flows are offsets in normalised [-1, 1] coordinates: 2/512 a pixel
                detail[s][0] += ((teacher_flow - low_t) * 256).norm(dim=1)[visible].sum().item()
                detail[s][1] += ((student_flow - low_s) * 256).norm(dim=1)[visible].sum().item()
            for key, flow in flows.items():
                image = e.alpha * e.color_change + (1 - e.alpha) * apply_flow(body_input, flow)
                squared[key] += ((to_display(image) - target) ** 2).mean().item() * len(p)
    print(f"{args.character}, {args.poses} poses (seed {args.seed}), CPU\n")
    print("| the teacher's blend over a warp by | PSNR |\n|---|---|")
    for key, value in squared.items():
        print(f"| {key} | {10 * math.log10(args.poses / value):.2f} dB |")
    print("\n| σ | the flow's detail finer than σ, mean where visible: teacher's / student's |\n|---|---|")
    for s, (t, st) in detail.items():
        print(f"| {s:g} px | {t / visible_pixels:.3f} / {st / visible_pixels:.3f} px |")


if __name__ == "__main__":
    main()
