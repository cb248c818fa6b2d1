"""Where a student's error against its teacher sits: face box vs body, edges vs the rest.

    python benchmarks/student_error_map.py [--character FILE.kyara] [--poses 12] [--map error.png]

For N held-out poses (CPU): PSNR of the whole student, PSNR of its body morpher fed the *teacher's*
face-morpher output (so the face morpher's share shows), the share of squared error inside the
student's face box, and how concentrated the error is (share in the worst 1 % / 5 % of pixels).
Display space as in kyara.eval.metrics. Prints a markdown table; --map writes the error map.
"""
from __future__ import annotations

import argparse
import math

import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.pose_sampler import sample_poses
from kyara.eval.metrics import to_display
from kyara.geometry import FACE_MORPHER_BOX, STUDENT_FACE_BOX
from kyara.teacher import load_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--poses", type=int, default=12)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--map", default=None, help="write the body-only squared-error map here (PNG)")
    args = ap.parse_args()
    ch = load_character(args.character)
    teacher = load_teacher(ch.teacher_name, device="cpu")
    prepared = teacher.prepare(ch.image)
    student = ch.poser
    poses = sample_poses(args.poses, torch.Generator().manual_seed(args.seed))
    whole = torch.zeros(512, 512)
    body_only = torch.zeros(512, 512)
    with torch.no_grad():
        for s in range(0, args.poses, 4):
            p = poses[s:s + 4]
            out = teacher.pose_all(prepared, p)
            target = to_display(out.image.float())
            pred = student(ch.image, p).image
            body_input = FACE_MORPHER_BOX.paste(ch.image.unsqueeze(0).expand(len(p), -1, -1, -1),
                                                FACE_MORPHER_BOX.crop(out.face_morphed_full))
            pred_body = student.body_outputs(body_input, p).image
            whole += ((to_display(pred) - target) ** 2).mean(1).sum(0)
            body_only += ((to_display(pred_body) - target) ** 2).mean(1).sum(0)
    whole /= args.poses
    body_only /= args.poses
    box = torch.zeros(512, 512, dtype=torch.bool)
    box[STUDENT_FACE_BOX.rows, STUDENT_FACE_BOX.cols] = True
    ranked = body_only.flatten().sort(descending=True).values.cumsum(0) / body_only.sum()
    print(f"{args.character}, {args.poses} poses (seed {args.seed}), CPU\n")
    print("| measure | value |\n|---|---|")
    print(f"| PSNR, whole student | {10 * math.log10(1 / whole.mean().item()):.2f} dB |")
    print(f"| PSNR, student body on the teacher's face output | {10 * math.log10(1 / body_only.mean().item()):.2f} dB |")
    print(f"| share of squared error in the face box (whole / body only) | "
          f"{(whole[box].sum() / whole.sum()).item():.3f} / {(body_only[box].sum() / body_only.sum()).item():.3f} |")
    for frac in (0.01, 0.05):
        print(f"| share of body-only squared error in the worst {frac:.0%} of pixels | "
              f"{ranked[int(frac * ranked.numel())].item():.3f} |")
    if args.map:
        from PIL import Image

        scaled = (body_only / body_only.quantile(0.999)).clamp(0, 1).sqrt()
        Image.fromarray((scaled * 255).byte().numpy()).save(args.map)


if __name__ == "__main__":
    main()
