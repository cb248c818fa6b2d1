"""Which pose parameters a student's body flow gets wrong: its flow error against the teacher's, one rotation
parameter at a time, and on the pose sampler's poses by how far they turn.

    python benchmarks/flow_error_by_pose.py STUDENT.kyara [--values 5] [--poses 24]

Sweep: each of the six rotation parameters (head_x, head_y, neck_z, body_y, body_z, breathing) at --values evenly
spaced values over its range, every other parameter at 0; per parameter, over the sweep's poses: the teacher's
motion (how far its flow moves a visible pixel: mean and 90th percentile) and the student's flow error (mean,
90th percentile, the share of visible pixels off by more than 2 px, and the error on the visible pixels where
the teacher's image has most detail: in flat regions a flow error changes nothing, so the loss need not fix it). Then --poses poses of kyara's sampler
(seed 12345, the held-out stream of benchmarks/student_error_map.py) sorted into thirds by their largest
|rotation value|, with the same columns. All where the teacher's output is visible; pixels (2/512 of the
flow's [-1, 1] units). CPU, THA3 teacher: ~1 s a pose on a 2-core CPU.

Why: the student's flow limits it (docs/benchmarks.md, issue 16 sessions 15–16), worst where the teacher moves
pixels far; this says which parameters those motions come from, which is what a pose sampler weighted toward
them, or a flow term weighted by motion, would target.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from kyara.character import load_character
from kyara.pose import LOW, HIGH, NUM_PARAMETERS, PARAMETERS, ROTATION
from kyara.pose_sampler import sample_poses
from kyara.teacher import load_teacher

PX = 256.0   # flow units ([-1, 1] over 512 px) → pixels


def detail(image: torch.Tensor) -> torch.Tensor:
    """(N, 4, H, W) → (N, H, W): how much the image changes at a pixel (sum over RGBA of |forward differences|
    in x and y), i.e. where a flow error shows in the image."""
    dx = F.pad((image[..., :, 1:] - image[..., :, :-1]).abs(), (0, 1))
    dy = F.pad((image[..., 1:, :] - image[..., :-1, :]).abs(), (0, 0, 0, 1))
    return (dx + dy).sum(1)


def motion_and_error(student, teacher, prepared, poses: torch.Tensor, batch: int = 4):
    """Over all poses: (teacher motion px, student flow error px) per visible pixel, and the flow error on the
    visible pixels of most detail (the top 10 % of ``detail`` per pose batch), where it changes the image."""
    motion, error, detailed = [], [], []
    with torch.no_grad():
        for i in range(0, len(poses), batch):
            p = poses[i:i + batch]
            out = teacher.pose_all(prepared, p)
            flow = student.body_outputs(out.face_morphed_full, p).flow
            visible = out.image[:, 3] > -0.9
            target = out.editor.flow   # both are offsets added to the identity grid (kyara.nn.warp.apply_flow)
            e = (flow - target).norm(dim=1) * PX
            motion.append((target.norm(dim=1) * PX)[visible])
            error.append(e[visible])
            d = detail(out.image)
            detailed.append(e[visible & (d >= torch.quantile(d[visible], 0.9))])
    return torch.cat(motion), torch.cat(error), torch.cat(detailed)


def row(label: str, motion: torch.Tensor, error: torch.Tensor, detailed: torch.Tensor) -> str:
    q = lambda t, f: float(torch.quantile(t[torch.randperm(len(t), generator=torch.Generator().manual_seed(0))[:2_000_000]], f))  # noqa: E731
    return (f"| {label} | {motion.mean():.2f} / {q(motion, 0.9):.2f} | {error.mean():.2f} / {q(error, 0.9):.2f} | "
            f"{(error > 2).float().mean() * 100:.1f} % | {detailed.mean():.2f} / {q(detailed, 0.9):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("character", help="a distilled .kyara file")
    ap.add_argument("--values", type=int, default=5, help="sweep values per rotation parameter")
    ap.add_argument("--poses", type=int, default=24, help="sampler poses (split into thirds by rotation)")
    args = ap.parse_args()
    ch = load_character(args.character)
    teacher = load_teacher(ch.teacher_name, device="cpu")
    prepared = teacher.prepare(ch.image)
    student = ch.poser
    student.set_region(None)   # the whole canvas: the error where the teacher's output is, region or not
    print(f"{args.character}, CPU, flow error where the teacher's output is visible (px)\n")
    header = ("| {} | teacher motion mean / p90 | student flow error mean / p90 | error > 2 px | error where the image has "
              "most detail (top 10 %) mean / p90 |\n|---|---|---|---|---|")
    print(header.format("rotation parameter (others 0)"))
    for p in PARAMETERS[ROTATION]:
        poses = torch.zeros(args.values, NUM_PARAMETERS)
        poses[:, p.index] = torch.linspace(float(LOW[p.index]), float(HIGH[p.index]), args.values)
        print(row(f"{p.name} {p.low:g} … {p.high:g}", *motion_and_error(student, teacher, prepared, poses)), flush=True)
    poses = sample_poses(args.poses, torch.Generator().manual_seed(12345))
    turn = poses[:, ROTATION][:, :5].abs().amax(1)            # breathing left out: it barely moves pixels
    order = turn.argsort()
    print("\n" + header.format(f"sampler poses by largest rotation |value| ({args.poses} poses)"))
    for k, idx in enumerate(order.chunk(3)):
        label = f"third {k + 1}: {float(turn[idx].min()):.2f} … {float(turn[idx].max()):.2f}"
        print(row(label, *motion_and_error(student, teacher, prepared, poses[idx])), flush=True)


if __name__ == "__main__":
    main()
