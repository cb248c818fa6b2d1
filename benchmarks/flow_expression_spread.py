"""How much of a student's flow error comes from the expression parameters (CPU).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/flow_expression_spread.py STUDENT.kyara [--rotations 4]
        [--expressions 8] [--seed 12345]

The teacher's body networks see only the six rotation parameters (the expression reaches them through the
face-edited image); the THA4 student's body morpher takes all 45, so its flow can move with an eye or the mouth
where the teacher's does not. For R rotation settings (the sampler's, the first at rest) × E expressions (the
sampler's expression parameters 0–38), this splits the student's flow error (where the teacher's output is
visible, px) into the part shared by a rotation's E expressions and the part that varies with the expression,
and renders the teacher's blend over (a) the student's warp, (b) the student's warp with each rotation's flow
averaged over its E expressions: what a flow that ignored the expressions would give, the rest of the student
unchanged, (c) the student's warp with its flow error at rest (the mean over the expressions) taken off every
rotation's flow: whether the error is a fixed field that a per-pixel correction would remove. Display space, as
kyara.eval.metrics.
"""
from __future__ import annotations

import argparse
import math

import torch

from kyara.character import load_character
from kyara.eval.metrics import to_display
from kyara.nn.warp import apply_flow
from kyara.pose import ROTATION
from kyara.pose_sampler import sample_poses
from kyara.teacher import load_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("character")
    ap.add_argument("--rotations", type=int, default=4)
    ap.add_argument("--expressions", type=int, default=8)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args()
    ch = load_character(args.character)
    teacher = load_teacher(ch.teacher_name, device="cpu")
    prepared = teacher.prepare(ch.image)
    student = ch.poser
    g = torch.Generator().manual_seed(args.seed)
    rotations = sample_poses(args.rotations, g)[:, ROTATION]
    rotations[0] = 0                                                    # the rest pose first
    expressions = sample_poses(args.expressions, g)
    e_count = args.expressions
    rows = {"shared": 0.0, "by expression": 0.0, "teacher's spread": 0.0, "student's spread": 0.0}
    sq = {"student's warp": 0.0, "student's warp, flow averaged over expressions": 0.0,
          "student's warp less its error at rest": 0.0}
    rest_error = None
    visible_px = 0
    print(f"{args.character}: {args.rotations} rotations (the first at rest) × {e_count} expressions, seed {args.seed}, CPU\n")
    print("| rotation | flow error, mean px | of it shared by the expressions | varying with them | PSNR, student's warp | same, flow averaged | same, less the error at rest |")
    print("|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for r, rot in enumerate(rotations):
            poses = expressions.clone()
            poses[:, ROTATION] = rot
            out = teacher.pose_all(prepared, poses)
            e = out.editor
            body_input = out.face_morphed_full      # the body morpher's input: the drawing, its face morphed
            body = student.body_outputs(body_input, poses)
            visible = (out.image[:, 3] > -0.9).unsqueeze(1)            # (E, 1, H, W); alpha −1 is transparent
            err = (body.flow - e.flow) * 256                            # px (2/512 of normalised space a pixel)
            shared = err.mean(0, keepdim=True)
            varying = err - shared
            t_spread = (e.flow - e.flow.mean(0, keepdim=True)) * 256
            s_spread = (body.flow - body.flow.mean(0, keepdim=True)) * 256
            n = visible.sum().item()
            def ms(x):  # mean squared length over visible pixels
                return ((x ** 2).sum(1, keepdim=True) * visible).sum().item()
            parts = {"shared": ms(shared.expand_as(err)), "by expression": ms(varying),
                     "teacher's spread": ms(t_spread), "student's spread": ms(s_spread)}
            for k, v in parts.items():
                rows[k] += v
            visible_px += n
            if rest_error is None:                                      # the first rotation is the rest pose
                rest_error = shared / 256                               # back to normalised flow units
            averaged = apply_flow(body_input, body.flow.mean(0, keepdim=True).expand_as(body.flow))
            less_rest = apply_flow(body_input, body.flow - rest_error)
            target = to_display(out.image.float())
            mse = {}
            for key, warped in (("student's warp", body.warped), ("student's warp, flow averaged over expressions", averaged),
                                ("student's warp less its error at rest", less_rest)):
                image = e.alpha * e.color_change + (1 - e.alpha) * warped
                mse[key] = ((to_display(image) - target) ** 2).mean().item()
                sq[key] += mse[key]
            mean_err = ((err ** 2).sum(1, keepdim=True).sqrt() * visible).sum().item() / n
            own, avg, less = (10 * math.log10(1 / v) for v in mse.values())
            print(f"| {'rest' if r == 0 else r} | {mean_err:.2f} | {math.sqrt(parts['shared'] / n):.2f} (rms) | "
                  f"{math.sqrt(parts['by expression'] / n):.2f} (rms) | {own:.2f} dB | {avg:.2f} dB | {less:.2f} dB |")
    print("\n| over all | value |\n|---|---|")
    for k, v in rows.items():
        print(f"| flow, {k}: rms px | {math.sqrt(v / visible_px):.3f} |")
    for k, v in sq.items():
        print(f"| PSNR, the teacher's blend over the {k} | {10 * math.log10(args.rotations / v):.2f} dB |")


if __name__ == "__main__":
    main()
