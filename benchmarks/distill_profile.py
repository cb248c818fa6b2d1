"""Where a distillation training step spends its time, with the distiller's real losses.

    python benchmarks/distill_profile.py [--batch 16] [--face-batch 32] [--steps 20] [--modes base,fp16,compile]

One step = face morpher (face_loss) + body morpher on the character region (body_loss, THA4's four
terms, warp included) + both Adam updates, TF32 matmuls, as in kyara.distill.loop. Prints
ms/step per mode, then the parts of the base step (face step, body forward, body forward+backward),
then torch.profiler's top CUDA kernels of the base step. Modes: base (the distiller as it is);
fp16 / bf16 (autocast of both networks' forward); compile (torch.compile of the two networks'
feature functions; compile time printed separately).
"""
from __future__ import annotations

import argparse
import time

import torch

from kyara.character import SAMPLE_IMAGE
from kyara.distill.config import THA4_BODY_PHASES
from kyara.distill.loop import character_region
from kyara.distill.losses import body_loss, face_loss
from kyara.image import load_image
from kyara.nn.warp import apply_flow
from kyara.student import Student


def make_setup(dev, batch: int, face_batch: int, margin: int):
    sample = load_image(SAMPLE_IMAGE).to(dev)
    region = character_region(sample, sample[3:4], margin)
    torch.manual_seed(0)
    student = Student().to(dev)
    student.set_region(region)
    opts = (torch.optim.Adam(student.face_morpher.parameters(), lr=1e-4),
            torch.optim.Adam(student.body_morpher.parameters(), lr=1e-4))
    image = sample.expand(batch, -1, -1, -1).contiguous()
    data = {
        "image": image,
        "poses": torch.rand(batch, 45, device=dev) * 2 - 1,
        "face_poses": torch.rand(face_batch, 39, device=dev),
        "face_target": torch.rand(face_batch, 4, 128, 128, device=dev) * 2 - 1,
        "mask": (torch.rand(1, 1, 128, 128, device=dev) > 0.7).float(),
        "final": image.clone(),
        "flow": torch.randn(batch, 2, 512, 512, device=dev) * 0.01,
    }
    data["warped"] = apply_flow(image, data["flow"])
    return student, opts, data, float(region.float().mean())


def face_part(student, opt, d, autocast):
    with autocast():
        pred = student.face_morpher(d["face_poses"])
    loss = face_loss(pred.float(), d["face_target"], d["mask"], 20.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def body_part(student, opt, d, autocast, backward=True):
    with autocast():
        out = student.body_outputs(d["image"], d["poses"])
    out = type(out)(*(t.float() for t in out))
    loss, _ = body_loss(out, d["final"], d["warped"], d["flow"], THA4_BODY_PHASES[2])
    if backward:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn, steps: int, dev) -> float:
    for _ in range(3):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--face-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--margin", type=int, default=24)
    ap.add_argument("--modes", default="base,fp16,bf16,compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=25, help="profiler rows")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{name} torch {torch.__version__}; batch {args.batch}, face batch {args.face_batch}, TF32\n")
    nullctx = torch.autocast(dev.type, enabled=False)
    rows = []
    for mode in args.modes.split(","):
        student, (face_opt, body_opt), d, share = make_setup(dev, args.batch, args.face_batch, args.margin)
        autocast = (lambda: nullctx)
        extra = ""
        if mode in ("fp16", "bf16"):
            dtype = torch.float16 if mode == "fp16" else torch.bfloat16
            autocast = (lambda dtype=dtype: torch.autocast(dev.type, dtype=dtype))
        elif mode == "compile":
            t0 = time.perf_counter()
            student.body_morpher.features_at = torch.compile(student.body_morpher.features_at)
            student.face_morpher.forward = torch.compile(student.face_morpher.forward)
            face_part(student, face_opt, d, autocast)
            body_part(student, body_opt, d, autocast)
            extra = f"compile {time.perf_counter() - t0:.0f} s"
        elif mode != "base":
            raise SystemExit(f"unknown mode {mode!r}")

        def step():
            face_part(student, face_opt, d, autocast)
            body_part(student, body_opt, d, autocast)

        ms = timed(step, args.steps, dev)
        rows.append((mode, share, ms, extra))
        print(f"{mode}: {ms:.1f} ms/step {extra}", flush=True)
        if mode == "base":
            parts = {"face step": lambda: face_part(student, face_opt, d, autocast),
                     "body forward + loss": lambda: body_part(student, body_opt, d, autocast, backward=False),
                     "body step": lambda: body_part(student, body_opt, d, autocast)}
            print("\n| part | ms |\n|---|---|")
            for label, fn in parts.items():
                print(f"| {label} | {timed(fn, args.steps, dev):.1f} |")
            if dev.type == "cuda":
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        step()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=70))
    print("\n| mode | region share | ms/step | body examples/s | note |\n|---|---|---|---|---|")
    for mode, share, ms, extra in rows:
        print(f"| {mode} | {share:.2f} | {ms:.1f} | {args.batch / ms * 1000:.0f} | {extra} |")


if __name__ == "__main__":
    main()
