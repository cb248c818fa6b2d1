"""How a distilled student misses its teacher: is its flow error ripple or a smooth field, does it fit the poses it
trained on better than new ones, and which way does the flow term's gradient point. Prints markdown tables.

    python benchmarks/student_fit.py STUDENT.kyara smooth   [--poses 8]
    python benchmarks/student_fit.py STUDENT.kyara seen     --seed S --chunks 739,740
    python benchmarks/student_fit.py STUDENT.kyara gradient [--poses 16] [--phase 5]

smooth: the body's flow against the teacher's, where the teacher's output is visible, at the rest pose and --poses
sampler poses (seed 12345), as it is and after smoothing it (Gaussian σ 0.5 / 1 / 2 px; area-downsampled to 256² or
128² and bilinearly upsampled), with the PSNR of the body's image composed with each flow (the body morpher's own
alpha and colour, on the teacher's face-morphed input; model-space MSE, peak-to-peak 2). If smoothing leaves the
error alone, the error is a slowly varying field (under-fitting of the pose → flow map), not high-frequency ripple
a resolution or a filter would fix. Also the mean error vector (a shift of the whole character) and the error
where the teacher barely moves pixels, per pose.

seen: the student's PSNR (kyara.eval.metrics.psnr, display space) on poses it trained on against as many held-out
poses. The distiller's teacher pool draws chunk k's 32 poses from a generator keyed (seed, 1, k)
(kyara.distill.pool.TeacherPool, single-process runs); the pool starts with chunks 0–127 and takes chunk 128 + j
after j × R steps (R = 16 at every pixel, 64 at the default quarter parts), so a run of S steps ends holding
chunks S/R … 127 + S/R. Take the oldest, S/R and S/R + 1: they spent their whole time in the pool (each example
shown ~8 times) and left it last; the newest were barely shown. The student keeps its region, as `kyara eval`. A small gap
means the student is limited by how far optimisation got, not by generalisation.

gradient: at the student's weights, on --poses sampler poses (seed 99) in batches of 2, the gradient over the body
morpher's parameters of (a) the flow term (kyara.distill.losses.body_loss with only the phase's w_flow), (b) the
image terms (body_loss with the phase's other weights and the default --blended-l2: blended L1 + MSE, warped,
colour), (c) the blended image's MSE alone, (d) the warped image's MSE (what --warped-l2 adds), (e) the first-order
warp error (the flow error times the input's gradient at the teacher's sampling point, squared), (f) the blended
image's MSE in the metric's display space (kyara.eval.metrics.to_display: sRGB colour × alpha, and alpha; the loss
works in model space: linear colour, straight alpha), (g) the metric itself up to a constant, the mean over poses of
the log of each pose's display MSE (PSNR is −10 log10 of it, averaged over poses); each summed over the batches;
their norms and cosines. First the blended image's MSE and that of the teacher's own alpha and colour
over the student's warp: the share of the error the flow causes.

CPU, THA3 teacher: ~1 s a pose on a 2-core CPU (teacher and student), the gradient ~10 s a pair.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from kyara.character import load_character
from kyara.distill.config import THA4_BODY_PHASES, DistillConfig
from kyara.distill.losses import body_loss
from kyara.distill.pool import seeded_generator
from kyara.eval.evaluate import HELDOUT_SEED
from kyara.eval.metrics import psnr, to_display
from kyara.nn.warp import apply_flow
from kyara.pose import NUM_PARAMETERS
from kyara.pose_sampler import sample_poses
from kyara.student.body_morpher import BodyMorpher
from kyara.teacher import load_teacher

PX = 256.0   # flow units ([-1, 1] over 512 px) → pixels


def gaussian(flow: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by a separable Gaussian of sigma px (replicate padding)."""
    r = int(3 * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=flow.dtype)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = flow.shape[1]
    out = F.conv2d(F.pad(flow, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def down_up(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) area-downsampled by factor, then bilinearly upsampled back."""
    small = F.interpolate(flow, scale_factor=1 / factor, mode="area")
    return F.interpolate(small, scale_factor=factor, mode="bilinear", align_corners=False)


SMOOTHINGS = {"as it is": lambda f: f, "Gaussian σ 0.5 px": lambda f: gaussian(f, 0.5),
              "Gaussian σ 1 px": lambda f: gaussian(f, 1.0), "Gaussian σ 2 px": lambda f: gaussian(f, 2.0),
              "at 256², upsampled": lambda f: down_up(f, 2), "at 128², upsampled": lambda f: down_up(f, 4)}


@torch.no_grad()
def smooth(character, teacher, prepared, num_poses: int) -> None:
    student = character.poser
    poses = torch.cat([torch.zeros(1, NUM_PARAMETERS), sample_poses(num_poses, torch.Generator().manual_seed(12345))])
    sums = {k: [0.0, 0.0] for k in SMOOTHINGS}
    print("| pose | teacher motion | flow error | mean error vector (x, y) | rest of the error | error where the teacher "
          "moves < 0.25 px (share of visible) |\n|---|---|---|---|---|---|")
    for i in range(len(poses)):
        pose = poses[i:i + 1]
        out = teacher.pose_all(prepared, pose)
        body = student.body_outputs(out.face_morphed_full, pose)
        visible = out.image[0, 3] > -0.9
        for name, fn in SMOOTHINGS.items():
            flow = fn(body.flow)
            sums[name][0] += float(((flow - out.editor.flow).norm(dim=1) * PX)[0][visible].mean())
            image = BodyMorpher.compose(out.face_morphed_full, torch.cat([flow, body.alpha, body.color], 1)).image
            sums[name][1] += float((image - out.image).square().mean())
        d = ((body.flow - out.editor.flow)[0] * PX)[:, visible]                        # (2, M) px
        mean = d.mean(1)
        motion = (out.editor.flow[0] * PX).norm(dim=0)[visible]
        still = motion < 0.25
        still_err = f"{float(d.norm(dim=0)[still].mean()):.2f}" if still.any() else "—"
        print(f"| {'rest' if i == 0 else i} | {float(motion.mean()):.2f} px | {float(d.norm(dim=0).mean()):.2f} px | "
              f"({float(mean[0]):+.2f}, {float(mean[1]):+.2f}) | {float((d - mean[:, None]).norm(dim=0).mean()):.2f} px "
              f"| {still_err} ({float(still.float().mean()) * 100:.0f} %) |", flush=True)
    n = len(poses)
    print(f"\n| the student's flow ({n} poses) | flow error, mean | body image PSNR (model space) |\n|---|---|---|")
    for name, (err, mse) in sums.items():
        print(f"| {name} | {err / n:.3f} px | {10 * math.log10(4 / (mse / n)):.2f} dB |")


@torch.no_grad()
def seen(character, teacher, prepared, seed: int, chunks: list[int]) -> None:
    chunk = DistillConfig().teacher_batch_size
    sets = {f"trained on (chunks {', '.join(map(str, chunks))})":
            torch.cat([sample_poses(chunk, seeded_generator(seed, 1, k)) for k in chunks]),
            "held out (kyara eval's stream)": sample_poses(chunk * len(chunks), torch.Generator().manual_seed(HELDOUT_SEED))}
    print("| poses | n | PSNR |\n|---|---|---|")
    for name, poses in sets.items():
        values = torch.cat([psnr(character.render(poses[i:i + 4]), teacher.pose(prepared, poses[i:i + 4]))
                            for i in range(0, len(poses), 4)])
        print(f"| {name} | {len(poses)} | {float(values.mean()):.2f} dB |", flush=True)


def gradient(character, teacher, prepared, num_poses: int, phase_index: int) -> None:
    student = character.poser
    phase = THA4_BODY_PHASES[phase_index]
    # the distiller's own loss (losses.body_loss), split by zeroing weights: the flow term alone, the rest
    flow_only = replace(phase, w_blended=0.0, w_warped=0.0, w_color=0.0)
    image_only = replace(phase, w_flow=0.0)
    blended_l2 = DistillConfig().blended_l2
    params = list(student.body_morpher.parameters())
    poses = sample_poses(num_poses, torch.Generator().manual_seed(99))
    sums: dict[str, torch.Tensor] = {}
    mse = {"blended": 0.0, "teacher's alpha and colour over the student's warp": 0.0}
    for i in range(0, num_poses, 2):
        pose = poses[i:i + 2]
        with torch.no_grad():
            out = teacher.pose_all(prepared, pose)
        body = student.body_outputs(out.face_morphed_full, pose)
        e = out.editor
        targets = (out.image, e.warped_image, e.flow)
        with torch.no_grad():   # the teacher's warp of the same input, 1 px either way: its gradient by the flow
            source, px = out.face_morphed_full, 2.0 / 512
            dx, dy = torch.zeros_like(e.flow), torch.zeros_like(e.flow)
            dx[:, 0], dy[:, 1] = px, px
            jx = (apply_flow(source, e.flow + dx) - apply_flow(source, e.flow - dx)) / (2 * px)
            jy = (apply_flow(source, e.flow + dy) - apply_flow(source, e.flow - dy)) / (2 * px)
            mse["blended"] += float((body.image - out.image).square().mean())
            mse["teacher's alpha and colour over the student's warp"] += float(
                (e.alpha * e.color_change + (1 - e.alpha) * body.warped - out.image).square().mean())
        error = body.flow - e.flow
        display_sq = (to_display(body.image) - to_display(out.image)).square()
        terms = {"flow term": body_loss(body, *targets, flow_only, blended_l2=blended_l2)[0],
                 "image terms": body_loss(body, *targets, image_only, blended_l2=blended_l2)[0],
                 "blended MSE": (body.image - out.image).square().mean(),
                 "warped MSE": (body.warped - e.warped_image).square().mean(),
                 "first-order warp error": (jx * error[:, 0:1] + jy * error[:, 1:2]).square().mean(),
                 "display MSE": display_sq.mean(),
                 "the metric (mean log display MSE)": display_sq.mean((1, 2, 3)).log().mean()}
        for name, term in terms.items():
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(term, params, retain_graph=True)])
            sums[name] = sums.get(name, 0) + g
    names = list(sums)
    print(f"phase {phase_index} {phase}, --blended-l2 {blended_l2:g}, {num_poses} poses\n")
    print("| image MSE (model space, mean over the pose pairs) | value |\n|---|---|")
    for key, value in mse.items():
        print(f"| {key} | {value / len(range(0, num_poses, 2)):.3e} |")
    print()
    print("| gradient of | norm | " + " | ".join(f"cosine with {n}" for n in names) + " |\n|---|---|"
          + "---|" * len(names))
    for a in names:
        cos = [float(F.cosine_similarity(sums[a], sums[b], dim=0)) for b in names]
        print(f"| {a} | {float(sums[a].norm()):.4g} | " + " | ".join(f"{c:+.3f}" for c in cos) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("character", help="a distilled .kyara file")
    ap.add_argument("what", choices=("smooth", "seen", "gradient"))
    ap.add_argument("--poses", type=int, default=None, help="sampler poses (smooth: 8, gradient: 16)")
    ap.add_argument("--seed", type=int, default=0, help="seen: the run's --seed")
    ap.add_argument("--chunks", default="", help="seen: comma list of teacher-pool chunk numbers")
    ap.add_argument("--phase", type=int, default=len(THA4_BODY_PHASES) - 1, help="gradient: 0-based body phase")
    args = ap.parse_args()
    character = load_character(args.character)
    teacher = load_teacher(character.teacher_name, device="cpu")
    prepared = teacher.prepare(character.image)
    print(f"{args.character}: {args.what}, CPU\n")
    if args.what == "smooth":
        # the whole canvas: the flow wherever the teacher's output is. seen and gradient keep the region the
        # student was trained and is run on (outside it the body morpher is untrained, and a student renders its
        # input there): on the whole canvas the bundled sample's blended MSE is 16× its in-region value
        character.poser.set_region(None)
    if args.what == "smooth":
        smooth(character, teacher, prepared, args.poses or 8)
    elif args.what == "seen":
        if not args.chunks:
            ap.error("seen needs --chunks (e.g. 739,740: see the docstring)")
        seen(character, teacher, prepared, args.seed, [int(k) for k in args.chunks.split(",")])
    else:
        gradient(character, teacher, prepared, args.poses or 16, args.phase)


if __name__ == "__main__":
    main()
