"""How much noise training on pixel parts adds to a step's gradient, and what that predicts for quality per minute.

    python benchmarks/gradient_noise.py [--character FILE.kyara | --image FILE.png] [--poses 32]
                                        [--fractions 0.5,0.25] [--tiles 16] [--phase 5] [--device cpu]

`kyara distill --body-pixel-fraction 0.25` makes a step ~3× cheaper (docs/benchmarks.md, session 10) by training
the body morpher on one random part of its region per step, the same part for every example of the batch
(kyara.distill.step.TrainStep). Whether more, noisier steps reach a better student in the same minutes depends
on how that noise compares with the noise the step already has from sampling 16 poses. This measures both, on
the THA3 teacher's targets, for one student state: a distilled student (--character, e.g. the bundled sample: a
late-training state) or a fresh one (--image: the identity-initialised student of `kyara distill`, an early
state), with the body loss of one schedule phase (--phase, 0-based index into THA4_BODY_PHASES).

For N poses: each pose's gradient of the body loss on every pixel of the region, g_i, and on each of the K parts
of one partition (PixelParts: the K parts a step may draw), g_ip. Then, over the body morpher's parameters:

- |G|²: the squared norm of the mean gradient (bias-corrected by the example noise / N);
- S_ex = tr Cov_i(g_i): the example noise of one pose, so a batch of B poses has S_ex / B;
- with parts, e_ip = g_ip − g_i; S_pix = mean |e_ip|² (a pose's own pixel noise) and S_shared = mean_p |mean_i e_ip|²
  (bias-corrected): the part of the pixel noise that every pose of a batch shares, since they share the part,
  and which a larger batch does not average away;
- a step's gradient variance: V_full(B) = S_ex / B; V_parts(B) = S_ex / B + S_shared + (S_pix − S_shared) / B.

The prediction uses the large-batch model of McCandlish et al. (2018, "An Empirical Model of Large-Batch
Training"): steps to a given loss grow as 1 + V(B) / |G|², so with a step cost ratio c (parts : every pixel),
parts need (1 + V_parts/|G|²) / (1 + V_full/|G|²) × the steps at 1 / c the cost each: they win on quality per
minute when that steps ratio is below c. The model is for SGD near a fixed point and Adam adapts per parameter:
read the ratio as evidence for an ablation's outcome, not a substitute for it. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.distill.config import THA4_BODY_PHASES, DistillConfig
from kyara.distill.loop import character_region
from kyara.distill.losses import body_loss
from kyara.distill.parts import PixelParts
from kyara.distill.step import TrainForward, subset_body_loss
from kyara.geometry import FACE_MORPHER_BOX
from kyara.image import load_image
from kyara.nn.warp import apply_flow
from kyara.pose_sampler import sample_poses
from kyara.student import Student
from kyara.teacher import load_teacher


def flat_grad(student: Student, loss: torch.Tensor) -> torch.Tensor:
    """The body morpher's gradient of loss, flattened (P,) float64 (sums of squares over ~10⁶ entries)."""
    params = [p for p in student.body_morpher.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]).double()


def teacher_targets(teacher, image: torch.Tensor, poses: torch.Tensor, chunk: int = 4):
    """The pool's three targets for poses (N, 45): face crops (N, 4, 192, 192), final images (N, 4, 512, 512),
    flows (N, 2, 512, 512), as kyara.distill.pool.TeacherPool stores them (but in float32)."""
    prepared = teacher.prepare(image)
    faces, finals, flows = [], [], []
    with torch.no_grad():
        for s in range(0, len(poses), chunk):
            out = teacher.pose_all(prepared, poses[s:s + chunk])
            faces.append(FACE_MORPHER_BOX.crop(out.face_morphed_full))
            finals.append(out.image)
            flows.append(out.editor.flow)
    return torch.cat(faces), torch.cat(finals), torch.cat(flows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--character", help="a distilled .kyara (its student and region; default: the bundled sample)")
    src.add_argument("--image", help="a 512×512 RGBA PNG: a fresh, identity-initialised student on it")
    ap.add_argument("--poses", type=int, default=32, help="poses N (each a full and K part gradients)")
    ap.add_argument("--fractions", default="0.25", help="comma list of body pixel fractions (K = round(1/F))")
    ap.add_argument("--tiles", default="16", help="comma list of part square sizes (DistillConfig.body_pixel_tile)")
    ap.add_argument("--phase", type=int, default=None,
                    help="THA4_BODY_PHASES index for the loss weights (default: 4 for --character, 0 for --image)")
    ap.add_argument("--batch", type=int, default=DistillConfig().batch_size, help="B of the step-variance model")
    ap.add_argument("--cost-ratio", type=float, default=2.94,
                    help="a step on every pixel ÷ a step on parts (2.94: 0.25/0.25 on an H200, session 10)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    config = DistillConfig()
    if args.image:
        image = load_image(args.image)
        teacher_name, student = config.teacher, None
        label = f"{args.image} (fresh student)"
    else:
        ch = load_character(args.character or SAMPLE_CHARACTER)
        image, teacher_name, student = ch.image, ch.teacher_name, ch.poser
        label = f"{args.character or SAMPLE_CHARACTER} (distilled student)"
    phase_index = args.phase if args.phase is not None else (0 if args.image else 4)
    phase = THA4_BODY_PHASES[phase_index]
    teacher = load_teacher(teacher_name, device=dev)
    if getattr(teacher, "colour", "straight") == "premultiplied":
        raise SystemExit("gradient_noise.py: premultiplied teachers (THA4) are not handled here")
    image = image.to(dev)
    poses = sample_poses(args.poses, torch.Generator().manual_seed(args.seed)).to(dev)
    faces, finals, flows = teacher_targets(teacher, image, poses)
    teacher_s = time.perf_counter() - t0
    if student is None:   # as kyara distill starts: region from the teacher's outputs, zero head (identity warp)
        torch.manual_seed(args.seed)
        student = Student()
        student.set_region(character_region(image, finals[:, 3], config.region_margin_px))
        torch.nn.init.zeros_(student.body_morpher.last_linear.weight)
        torch.nn.init.zeros_(student.body_morpher.last_linear.bias)
    student = student.to(dev).float().train()
    for p in student.parameters():
        p.requires_grad_(True)
    forward = TrainForward(student)
    n = args.poses

    def example(i: int):
        body_input = FACE_MORPHER_BOX.paste(image[None], faces[i:i + 1])
        return body_input, poses[i:i + 1], finals[i:i + 1], flows[i:i + 1]

    full = []
    for i in range(n):
        body_input, pose, final, flow = example(i)
        with torch.no_grad():
            warped = apply_flow(body_input, flow)
        loss, _ = body_loss(forward.body(body_input, pose), final, warped, flow, phase, config.masked_flow,
                            config.blended_l2, config.edge_weight)
        full.append(flat_grad(student, loss))
    full = torch.stack(full)                                                     # (N, P)
    mean = full.mean(0)
    s_ex = float((full - mean).square().sum(1).mean()) * n / (n - 1)
    g2 = float(mean.square().sum()) - s_ex / n
    print(f"{label}: {n} poses (seed {args.seed}), body loss of phase {phase_index} {phase}, "
          f"{full.shape[1]:,} body parameters, region {float(student.region.float().mean()):.3f} of the canvas; "
          f"teacher {teacher_s:.0f} s, full gradients {time.perf_counter() - t0 - teacher_s:.0f} s\n", flush=True)
    print(f"|G|² = {g2:.4g}, S_ex = {s_ex:.4g} (one pose), example noise scale S_ex/|G|² = {s_ex / g2:.1f} poses\n")

    rows = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        for tile in (int(t) for t in args.tiles.split(",")):
            t1 = time.perf_counter()
            parts = PixelParts(student.region, student.size, len(student.body_morpher.levels), fraction, args.seed,
                               dev, tile)
            k = parts.parts_per_partition
            part_sets = parts.sets[:k]                                           # one partition: K disjoint parts
            errors = torch.zeros(n, k, full.shape[1], dtype=torch.float64)
            consistency = 0.0
            for i in range(n):
                body_input, pose, final, flow = example(i)
                g_parts = []
                for pixels, share in part_sets:
                    loss, _ = subset_body_loss(forward, body_input, pose, final, flow, pixels, share, phase, config)
                    g_parts.append(flat_grad(student, loss))
                g_parts = torch.stack(g_parts)
                # the K parts' mean is the full gradient up to the flow term's per-part normalisation
                consistency = max(consistency, float((g_parts.mean(0) - full[i]).norm() / full[i].norm()))
                errors[i] = g_parts - full[i]
            s_pix = float(errors.square().sum(2).mean())
            part_means = errors.mean(0)                                          # (K, P): mean over poses
            s_shared = max(0.0, float(part_means.square().sum(1).mean()) - s_pix / n)
            b = args.batch
            v_full = s_ex / b
            v_parts = s_ex / b + s_shared + (s_pix - s_shared) / b
            steps_ratio = (1 + v_parts / g2) / (1 + v_full / g2)
            rows.append((fraction, tile, k, s_pix / s_ex, s_shared / s_ex, v_full / g2, v_parts / g2, steps_ratio,
                         args.cost_ratio / steps_ratio, consistency, time.perf_counter() - t1))
            print(f"fraction {fraction:g}, tile {tile}: done in {rows[-1][-1]:.0f} s", flush=True)

    print(f"\n| body fraction | tile | K | S_pix / S_ex | S_shared / S_ex | V_full({args.batch}) / |G|² | "
          f"V_parts({args.batch}) / |G|² | steps ratio (parts ÷ full) | predicted gain per minute (c = "
          f"{args.cost_ratio:g}) | mean of parts vs full gradient | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for f, t, k, pix, shared, vf, vp, ratio, gain, cons, sec in rows:
        print(f"| {f:g} | {t} | {k} | {pix:.3f} | {shared:.4f} | {vf:.3f} | {vp:.3f} | {ratio:.3f} | "
              f"{gain:.2f}× | {cons:.1e} | {sec:.0f} |")
    if not math.isfinite(g2) or g2 <= 0:
        print("\n|G|² ≤ 0 after the bias correction: too few poses for this state (use more --poses)")


if __name__ == "__main__":
    main()
