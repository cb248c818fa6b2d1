"""A CPU proxy for a body-loss change: continue a trained student at THA4's late loss weights with and without it.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/loss_proxy_cpu.py STUDENT.kyara IMAGE.png --out DIR [--warped-l2 W]
        [--flow-weight K] [--flow-line-weight L] [--optimizer adam|muon] [--phase 1-6] [--steps 1500] [--rate 1e-5]

Runs kyara.distill.distill on the CPU from STUDENT's weights (`init_from`, both networks; Adam restarts) for --steps
steps of 4 poses, one body phase at THA4's last loss weights (blended 10, warped 1, flow 1, colour 1; --phase 4:
blended 1, warped 2.5, flow 5, colour 1) and rate --rate
× the default --lr-scale, the face at THA4's last face rate, parts 0.25 / 0.25 (the defaults), a teacher pool of
64 poses reused 16 times, no weight average and no divergence guard; the held-out PSNR (16 poses) goes to
DIR/log.jsonl every 4 minutes. Start two arms side by side (one thread each) with the same seed: they see the same
poses, parts and held-out poses, so the only difference is the loss (or, with --optimizer, the optimizer: both
start it afresh). A direction, not a result: a batch of 4
on 16 evaluation poses is noisy (±0.5 dB between evaluations), and a 10-minute GPU run is what decides a recipe.
Session 21 (`--warped-l2 0` against `40`, ~1,100 steps each, ~60 minutes on a 2-core CPU): docs/benchmarks.md.
"""
from __future__ import annotations

import argparse

import torch

from kyara.distill import distill
from kyara.distill.config import THA4_BODY_PHASES, THA4_FACE_PHASES, DistillConfig, Phase
from kyara.image import load_image
from kyara.teacher import load_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("student", help="a distilled .kyara file of IMAGE's character")
    ap.add_argument("image", help="the character's PNG")
    ap.add_argument("--out", required=True, help="a new folder for the arm's log.jsonl and student")
    ap.add_argument("--warped-l2", type=float, default=0.0, help="DistillConfig.warped_l2 of this arm")
    ap.add_argument("--flow-weight", type=float, default=DistillConfig.flow_weight,
                    help="DistillConfig.flow_weight of this arm (default: the distiller's, %(default)g; 1 = THA4's)")
    ap.add_argument("--flow-line-weight", type=float, default=0.0, help="DistillConfig.flow_line_weight of this arm")
    ap.add_argument("--optimizer", choices=["adam", "muon"], default="adam", help="DistillConfig.optimizer of this arm")
    ap.add_argument("--phase", type=int, default=len(THA4_BODY_PHASES), choices=range(1, len(THA4_BODY_PHASES) + 1),
                    help="whose loss weights (THA4's body phase 1-6; default the last). Phases 3-4 weigh the flow most")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rate", type=float, default=1e-5, help="the body's rate before --lr-scale (THA4's phase 5: 1e-5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    late = THA4_BODY_PHASES[args.phase - 1]
    config = DistillConfig(
        seed=args.seed, examples=4 * args.steps, batch_size=4, teacher_batch_size=8, pool_size=64, reuse=16.0,
        eval_poses=16, eval_every_s=240.0, checkpoint_every_examples=10 ** 9, init_from=args.student,
        body_phases=(Phase(1.0, args.rate, late.w_blended, late.w_warped, late.w_flow, late.w_color),),
        face_phases=(THA4_FACE_PHASES[-1],), warped_l2=args.warped_l2, flow_weight=args.flow_weight,
        flow_line_weight=args.flow_line_weight, optimizer=args.optimizer, ema_decay=0.0, compile=False, divergence_check_steps=0)
    torch.manual_seed(args.seed)
    result = distill(load_image(args.image), load_teacher(config.teacher, device="cpu"), config, out_dir=args.out,
                     name="student", progress=False)
    print(f"{args.out}: {result.steps} steps, held-out PSNR {result.psnr:.2f} dB ({config.eval_poses} poses)")


if __name__ == "__main__":
    main()
