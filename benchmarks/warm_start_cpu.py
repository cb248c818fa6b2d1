"""Warm starts (`kyara distill --init-from`) on the CPU: how close a donor's flow is, which way the loss pulls it,
and whether the first steps keep it.

    python benchmarks/warm_start_cpu.py IMAGE --donor FILE.kyara|sample [--donor ...]          # flow error only
    python benchmarks/warm_start_cpu.py IMAGE --donor sample --gradients                      # + loss alignment
    python benchmarks/warm_start_cpu.py IMAGE --donor sample --train-minutes 7 --lr-scale 6 [--lr-warmup N]
    python benchmarks/warm_start_cpu.py IMAGE --cold --train-minutes 7 --lr-scale 6         # the zero head

Flow error: |student flow − THA3 teacher flow| in pixels where the teacher's output is visible, over 8 held-out
poses (seed 12345), the body morpher on the whole canvas (the donor's region is its own character's).
--gradients: at the donor's weights, the cosine between the gradient of each THA4 phase's body loss (with the
default blended-image MSE) and the gradient of the flow error's L1 term, on 4 poses: > 0 means descending that
loss moves the flow towards the teacher's, to first order.
--train-minutes: a real `distill()` on the CPU from the donor (body only) or the zero head, with the schedule of
a 10-minute parts run on an H100 (38,599 steps, so every CPU step is in phase 1), parts 0.25 / 0.25, the weight
average 0.999, stopped after that many minutes; then the flow error of the result. The CPU makes ~4 steps a
minute here, so this shows what the first steps do, not what a run reaches.
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.image import load_image
from kyara.pose_sampler import sample_poses
from kyara.teacher import load_teacher


def flow_error(student, teacher, prepared, poses: torch.Tensor) -> torch.Tensor:
    """Per visible pixel |student flow − teacher flow| in pixels (both are offsets in [-1, 1] units: 2/512 a px)."""
    student.set_region(None)
    errors = []
    with torch.no_grad():
        for i in range(0, len(poses), 4):
            out = teacher.pose_all(prepared, poses[i:i + 4])
            flow = student.body_outputs(out.face_morphed_full, poses[i:i + 4]).flow
            visible = out.image[:, 3] > -0.9
            errors.append(((flow - out.editor.flow).norm(dim=1) * 256)[visible])
    return torch.cat(errors)


def gradient_alignment(student, teacher, prepared) -> None:
    from kyara.distill.config import THA4_BODY_PHASES, DistillConfig
    from kyara.distill.losses import flow_weight, l1
    from kyara.nn.warp import apply_flow

    student.set_region(None)     # the donor's region is its own character's; a warm-started run uses the new one's
    poses = sample_poses(4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = teacher.pose_all(prepared, poses)
        target_warped = apply_flow(out.face_morphed_full, out.editor.flow)
    params = list(student.body_morpher.parameters())
    with torch.enable_grad():
        for p in params:
            p.requires_grad_(True)
        pred = student.body_outputs(out.face_morphed_full, poses)
        w = flow_weight(out.image)
        terms = {"blended": l1(pred.image, out.image), "blended_mse": (pred.image - out.image).square().mean(),
                 "warped": l1(pred.warped, target_warped),
                 "flow": ((pred.flow - out.editor.flow).abs() * w).mean() / w.mean(), "color": l1(pred.color, out.image)}
        grads = {k: torch.cat([g.flatten() for g in torch.autograd.grad(v, params, retain_graph=True)])
                 for k, v in terms.items()}
    cos = torch.nn.functional.cosine_similarity
    l2 = DistillConfig().blended_l2
    print("| phase | cos(body loss gradient, flow-error gradient) |\n|---|---|")
    for i, ph in enumerate(THA4_BODY_PHASES):
        total = (ph.w_blended * (grads["blended"] + l2 * grads["blended_mse"]) + ph.w_warped * grads["warped"]
                 + ph.w_flow * grads["flow"] + ph.w_color * grads["color"])
        print(f"| {i + 1} | {cos(total, grads['flow'], dim=0).item():+.3f} |")
    print("\n| term | gradient norm | cos with the flow-error gradient |\n|---|---|---|")
    for k, g in grads.items():
        print(f"| {k} | {g.norm():.3e} | {cos(g, grads['flow'], dim=0).item():+.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="the character to start (512×512 RGBA)")
    ap.add_argument("--donor", action="append", default=[], help="a .kyara student, or 'sample'; repeatable")
    ap.add_argument("--cold", action="store_true", help="with --train-minutes: start from the zero head instead")
    ap.add_argument("--gradients", action="store_true", help="print the loss-gradient alignment at the (first) donor")
    ap.add_argument("--train-minutes", type=float, default=0.0)
    ap.add_argument("--lr-scale", type=float, default=6.0)
    ap.add_argument("--lr-warmup", type=int, default=0)
    args = ap.parse_args()
    image = load_image(args.image)
    teacher = load_teacher("tha3/separable_float", device="cpu")
    prepared = teacher.prepare(image)
    poses = sample_poses(8, torch.Generator().manual_seed(12345))
    donors = [str(SAMPLE_CHARACTER) if d == "sample" else d for d in args.donor]
    print(f"{args.image}, 8 held-out poses (seed 12345), CPU\n\n| student | flow error median / mean |\n|---|---|")
    for path in donors:
        e = flow_error(load_character(path).poser, teacher, prepared, poses)
        print(f"| {path} (before any step) | {e.median():.2f} / {e.mean():.2f} px |")
    if args.gradients and donors:
        print()
        gradient_alignment(load_character(donors[0]).poser, teacher, prepared)
    if args.train_minutes:
        from kyara.distill import DistillConfig, distill

        init = "" if args.cold else (args.donor[0] if args.donor else "sample")
        config = DistillConfig(examples=617_584, pool_size=64, mask_poses=8, eval_poses=1, eval_every_s=1e9,
                               checkpoint_every_examples=10**9, body_pixel_fraction=0.25, face_pixel_fraction=0.25,
                               ema_decay=0.999, lr_scale=args.lr_scale, lr_warmup_steps=args.lr_warmup, seed=0,
                               init_from=init, init_networks="body")
        with tempfile.TemporaryDirectory() as work:
            result = distill(image, teacher, config, out_dir=work, name="warm", progress=False,
                             stop_after_minutes=args.train_minutes)
        e = flow_error(result.character.poser, teacher, prepared, poses)
        start = "zero head" if args.cold else init
        print(f"\n| start | --lr-scale | --lr-warmup | steps | flow error median / mean |\n|---|---|---|---|---|\n"
              f"| {start} | {args.lr_scale:g} | {args.lr_warmup} | {result.steps} | {e.median():.2f} / {e.mean():.2f} px |")


if __name__ == "__main__":
    main()
