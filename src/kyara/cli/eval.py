"""`kyara eval CHARACTER --poses N [--json]`: student vs teacher quality on held-out poses."""
from __future__ import annotations

import json

from kyara.cli import HelpFormatter


def register(sub) -> None:
    p = sub.add_parser("eval", help="measure a student's PSNR/SSIM/LPIPS against its teacher",
                       description="Render held-out poses with the character's student and with its teacher and "
                                   "report mean PSNR (dB), SSIM and LPIPS (AlexNet, v0.1) in display space.",
                       formatter_class=HelpFormatter)
    p.add_argument("character", help=".kyara file or THA4 character_model directory")
    p.add_argument("--poses", type=int, default=1000, help="number of held-out poses")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with keys psnr, ssim, lpips, poses, teacher, rotation_scale")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--teacher", help="teacher to compare against (default: the one stored in the file)")
    p.add_argument("--weights", metavar="DIR", help="directory of official teacher weight files")
    p.add_argument("--batch-size", type=int, default=8, help="poses rendered per batch (lower it if memory is short)")
    p.add_argument("--rotation-scale", type=float, default=1.0, metavar="S",
                   help="scale the poses' head, neck and body rotations and breathing by S in [0, 1]: 1 is the "
                        "benchmark's poses, which turn as far as THA3 allows; 0.25 is closer to live use facing "
                        "the camera; 0 is expressions only")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (it downloads AlexNet weights once)")
    p.set_defaults(func=run)


def run(args) -> int:
    from kyara.character import load_character
    from kyara.errors import KyaraError
    from kyara.eval.evaluate import evaluate
    from kyara.poser import pick_device
    from kyara.teacher import TEACHERS, load_teacher

    if not 1 <= args.poses <= 100_000:
        raise KyaraError(f"--poses must be in 1..100000, got {args.poses}")
    if args.batch_size < 1:
        raise KyaraError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.rotation_scale <= 1.0:
        raise KyaraError(f"--rotation-scale must be in [0, 1], got {args.rotation_scale}")
    device = str(pick_device(args.device))
    character = load_character(args.character, device=device)
    teacher_name = args.teacher or character.teacher_name
    if teacher_name not in TEACHERS:
        raise KyaraError(f"{args.character}: teacher {teacher_name!r} is unknown; pass --teacher (one of "
                         f"{', '.join(TEACHERS)})")
    teacher = load_teacher(teacher_name, weights_dir=args.weights, device=device)
    result = evaluate(character, teacher, args.poses, args.batch_size, lpips=not args.no_lpips,
                      progress=True, rotation_scale=args.rotation_scale)  # the bar goes to stderr, so --json output stays clean
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        lp = f"{result.lpips:.4f}" if result.lpips is not None else "n/a"
        turned = "" if args.rotation_scale == 1.0 else f", rotations × {args.rotation_scale:g}"
        print(f"{args.character}: PSNR {result.psnr:.2f} dB  SSIM {result.ssim:.4f}  LPIPS {lp}  "
              f"({result.poses} held-out poses{turned} vs {result.teacher})")
    return 0
