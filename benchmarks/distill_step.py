"""Time one student training step (forward + backward + Adam) in several numeric modes.

    python benchmarks/distill_step.py [--batch 16] [--face-batch 64] [--compile]

Prints a markdown table: mode, ms/step, body examples/s. Used to choose the distiller's defaults.
"""
from __future__ import annotations

import argparse
import time

import torch

from kyara.nn.warp import apply_flow
from kyara.student import Student


def step_fn(student, opt, image, poses, face_poses, target):
    out = student.body_morpher(image, poses)
    loss = (out.image - target).abs().mean() + (out.flow).abs().mean()
    face = student.face_morpher(face_poses)
    loss = loss + face.abs().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--face-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}; batch {args.batch}, face batch {args.face_batch}\n")
    print("| mode | ms/step | body examples/s |\n|---|---|---|")
    modes = [("fp32", False), ("tf32", True)]
    for name, tf32 in modes:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(0)
        student = Student().to(dev)
        opt = torch.optim.Adam(student.parameters(), lr=1e-4)
        image = torch.rand(args.batch, 4, 512, 512, device=dev) * 2 - 1
        poses = torch.rand(args.batch, 45, device=dev)
        face_poses = torch.rand(args.face_batch, 39, device=dev)
        target = torch.rand_like(image)
        fn = step_fn
        if args.compile:
            student.body_morpher.features = torch.compile(student.body_morpher.features)
            student.face_morpher.forward = torch.compile(student.face_morpher.forward)
            name += "+compile"
        for _ in range(3):
            fn(student, opt, image, poses, face_poses, target)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn(student, opt, image, poses, face_poses, target)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / args.steps * 1000
        print(f"| {name} | {ms:.1f} | {args.batch / ms * 1000:.0f} |")


if __name__ == "__main__":
    main()
