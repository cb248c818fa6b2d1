"""What a student body shape (kyara distill --body-widths) costs: bytes, work and CPU frame time, side by side.

    python benchmarks/student_shapes.py [--widths "360,180,90;510,180,90;360,180,128"] [--poses 20] [--threads 2]

For each shape: the body's parameters, the student file's weights in fp32 and fp16 (face included), the
multiply-adds of one frame over the whole canvas (the GPU's batched path evaluates every pixel of each level:
first layer, hidden layers, head), and on this CPU the median ms/frame of the full student
(``Character.render_rgba``'s path) and of the lite student (``LiteStudent.pose_rgba_u8``, the CPU real-time
path), one 512×512 frame per call. The shapes' renderers alternate pose by pose in one process, so background
load hits them alike; quote the ratios, not the absolute times. Every student is the bundled sample's image,
region and face with a random body of that shape (timing does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from kyara.character import SAMPLE_CHARACTER, Character, load_character
from kyara.image import tensor_to_rgba_u8
from kyara.pose import NUM_PARAMETERS
from kyara.pose_sampler import sample_poses
from kyara.student import BodyMorpher, Student
from kyara.student.body_morpher import levels_for_widths
from kyara.student.lite import LiteStudent


def frame_macs(body: BodyMorpher) -> int:
    """Multiply-adds of one whole-canvas frame of the body network (first layers' position and pose terms,
    the upsampled features, hidden layers and the head at every pixel of each level)."""
    total, prev = 0, 0
    for (res, width, out), layers in zip(body.levels, body.siren_layers):
        pixels = res * res
        widths = [prev + 2 + NUM_PARAMETERS] + [layer.linear.weight.shape[0] for layer in layers]
        total += pixels * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        prev = out
    return total + body.levels[-1][0] ** 2 * prev * 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="360,180,90;510,180,90;360,256,90;360,180,128",
                    help="shapes to compare, ';'-separated, each W0,W1,W2 (the first is the baseline)")
    ap.add_argument("--poses", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(w) for w in part.split(",")) for part in args.widths.split(";")]
    sample = load_character(SAMPLE_CHARACTER)
    characters, lites = [], []
    for widths in shapes:
        torch.manual_seed(0)
        body = BodyMorpher(levels_for_widths(widths))
        with torch.no_grad():   # gentle flows, like a trained student's
            body.last_linear.weight.mul_(0.05)
        student = Student(sample.poser.face_morpher, body, region=sample.poser.region).eval()
        characters.append(Character("x".join(map(str, widths)), sample.image, student, "none"))
        lites.append(LiteStudent(student))
        lites[-1].face_plan()
    poses = sample_poses(args.poses + 3, torch.Generator().manual_seed(99))
    full = [[] for _ in shapes]
    lite = [[] for _ in shapes]
    with torch.inference_mode():
        for i in range(len(poses)):
            order = range(len(shapes)) if i % 2 == 0 else reversed(range(len(shapes)))
            for s in order:
                start = time.perf_counter()
                tensor_to_rgba_u8(characters[s].render(poses[i:i + 1])[0])
                mid = time.perf_counter()
                lites[s].pose_rgba_u8(sample.image, poses[i:i + 1])
                end = time.perf_counter()
                if i >= 3:   # warm-up
                    full[s].append(mid - start)
                    lite[s].append(end - mid)
    print(f"{args.poses} poses, {args.threads} threads, {os.cpu_count()} CPUs, load average after "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| body widths | body parameters | student fp32 MB | student fp16 MB | GMAC/frame | full ms/frame (median) "
          "| × baseline | lite ms/frame (median) | × baseline |\n|---|---|---|---|---|---|---|---|---|")
    base_full, base_lite = float(np.median(full[0])), float(np.median(lite[0]))
    for s, widths in enumerate(shapes):
        student = characters[s].poser
        body_params = sum(p.numel() for p in student.body_morpher.parameters())
        params = body_params + sum(p.numel() for p in student.face_morpher.parameters())
        f, li = float(np.median(full[s])), float(np.median(lite[s]))
        print(f"| {','.join(map(str, widths))} | {body_params:,} | {params * 4 / 1e6:.2f} | {params * 2 / 1e6:.2f} | "
              f"{frame_macs(student.body_morpher) / 1e9:.1f} | {f * 1e3:.0f} | {f / base_full:.2f} | {li * 1e3:.1f} | "
              f"{li / base_lite:.2f} |")


if __name__ == "__main__":
    main()
