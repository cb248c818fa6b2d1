"""Time one student training step (forward + backward + Adam, both networks) in several modes.

    python benchmarks/distill_step.py [--batch 16] [--steps 20] [--compile]

Modes: fp32 / TF32 matmuls × whole canvas / character region (the bundled sample's visible pixels
dilated by --margin px, a stand-in for the distiller's region, which also covers every pose's
output) × face batch 4× / 2× the body batch. Prints a markdown table: mode, region share, ms/step,
body examples/s. Used to choose the distiller's defaults.
"""
from __future__ import annotations

import argparse
import time

import torch

from kyara.character import SAMPLE_IMAGE
from kyara.distill.loop import character_region
from kyara.image import load_image
from kyara.student import Student


def step_fn(student, opts, image, poses, face_poses, target):
    out = student.body_outputs(image, poses)
    loss = (out.image - target).abs().mean() + out.flow.abs().mean() + (out.color - target).abs().mean()
    face = student.face_morpher(face_poses)
    loss = loss + face.abs().mean()
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in opts:
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--margin", type=int, default=24, help="region dilation (px) around the sample's pixels")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sample = load_image(SAMPLE_IMAGE).to(dev)
    region = character_region(sample, sample[3:4], args.margin)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{name} torch {torch.__version__}; batch {args.batch}\n")
    print("| matmul | canvas | region share | face batch | ms/step | body examples/s |\n|---|---|---|---|---|---|")
    for tf32 in (False, True):
        for use_region in (False, True):
            for face_mult in (4, 2):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
                torch.manual_seed(0)
                student = Student().to(dev)
                student.set_region(region if use_region else None)
                opts = [torch.optim.Adam(student.face_morpher.parameters(), lr=1e-4),
                        torch.optim.Adam(student.body_morpher.parameters(), lr=1e-4)]
                image = sample.expand(args.batch, -1, -1, -1).contiguous()
                poses = torch.rand(args.batch, 45, device=dev)
                face_poses = torch.rand(args.batch * face_mult, 39, device=dev)
                target = torch.rand_like(image)
                if args.compile:
                    student.body_morpher.features = torch.compile(student.body_morpher.features)
                    student.face_morpher.forward = torch.compile(student.face_morpher.forward)
                for _ in range(3):
                    step_fn(student, opts, image, poses, face_poses, target)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step_fn(student, opts, image, poses, face_poses, target)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) / args.steps * 1000
                share = f"{float(region.float().mean()):.2f}" if use_region else "1.00"
                print(f"| {'TF32' if tf32 else 'fp32'} | {'region' if use_region else 'whole'} | {share} | "
                      f"{args.batch * face_mult} | {ms:.1f} | {args.batch / ms * 1000:.0f} |", flush=True)


if __name__ == "__main__":
    main()
