"""Where a student's error against its teacher sits: face box vs body, edges vs the rest.

    python benchmarks/student_error_map.py [--character FILE.kyara] [--poses 12] [--map error.png] [--blend-map blend.png]
                                           [--blend-weight-variants] [--flow-error-scales 0.75,0.5,0.25]

For N held-out poses (CPU): PSNR of the whole student, PSNR of its body morpher fed the *teacher's*
face-morpher output (so the face morpher's share shows), the share of squared error inside the
student's face box, and how concentrated the error is (share in the worst 1 % / 5 % of pixels).
Then the body morpher's error split between its two jobs, by swapping each with the teacher's: the
teacher's blend over the student's warp (what the flow alone allows) and the student's blend over the
teacher's warp (what alpha and colour alone allow), and the flow's error in pixels where the teacher's
output is visible (mean, median, 90th percentile; by how far the teacher moves the pixel; on flat colour against
on lines, with each one's share of the warp's squared error; by how far off the flow is, the same shares).
--flow-error-scales asks how much the image would gain from a smaller flow error: the warp alone with the
student's flow error × λ (does a flow error cost where it sits?).
Display space as in kyara.eval.metrics. Prints a markdown table; --map writes the error map, --blend-map that of
the student's blend over the teacher's warp; --blend-weight-variants adds the body's PSNR with its raw blend weight
clamped, zeroed where small, shrunk, or zero (does a small spurious weight cost?).
"""
from __future__ import annotations

import argparse
import math

import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.distill.losses import LINE_GRADIENT2, central_gradients
from kyara.pose import ROTATION
from kyara.pose_sampler import sample_poses
from kyara.eval.metrics import to_display
from kyara.geometry import STUDENT_FACE_BOX
from kyara.teacher import load_teacher
from kyara.nn.warp import apply_flow

# the teacher's warped image's squared gradient (display space, per px, channel mean): below FLAT a pixel is flat
# colour, from LINES on it is on a line (session 38: 64 % and 15 % of twin_tails' visible pixels)
FLAT, LINES = 1e-4, LINE_GRADIENT2   # the same threshold as --flow-line-weight's line detail
# flow-error bins (px) for the share of the warp's squared error each holds: is the costly error a few pixels far
# off (what a heavier flow term pulls in first) or many a fraction of a pixel off (what it barely moves)?
ERROR_BINS_PX = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, math.inf))


def blend_weight_variants() -> dict:
    """Changes to the body morpher's raw blend weight a (N, 1, H, W): does a small spurious weight cost?"""
    variants = {"as is": lambda a: a, "clamped to [0, 1]": lambda a: a.clamp(0, 1)}
    for t in (0.02, 0.05, 0.1, 0.2):
        variants[f"zeroed where its magnitude < {t}"] = lambda a, t=t: torch.where(a.abs() < t, torch.zeros_like(a), a)
        variants[f"shrunk towards 0 by {t}"] = lambda a, t=t: a.sign() * (a.abs() - t).clamp_min(0)
    variants["zero (the warp alone)"] = torch.zeros_like
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--poses", type=int, default=12)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--map", default=None, help="write the body-only squared-error map here (PNG)")
    ap.add_argument("--blend-map", default=None,
                    help="write the squared-error map of the student's blend over the teacher's warp here (PNG): "
                         "where the student's alpha and colour alone fall short")
    ap.add_argument("--blend-weight-variants", action="store_true",
                    help="also print the body's PSNR with its raw blend weight clamped to [0, 1], zeroed below T, "
                         "shrunk towards 0 by T (T = 0.02, 0.05, 0.1, 0.2), and zero")
    ap.add_argument("--flow-error-scales", default="", metavar="L1,L2,...",
                    help="also print the PSNR of the teacher's blend over a warp by the teacher's flow + λ × the "
                         "student's flow error, for each λ (e.g. 0.75,0.5,0.25)")
    ap.add_argument("--rotation-scale", type=float, default=1.0, metavar="S",
                    help="the poses' six rotation parameters × S in [0, 1], as `kyara eval --rotation-scale` "
                         "(0: expressions only, the body at rest)")
    args = ap.parse_args()
    try:
        scales = [float(x) for x in args.flow_error_scales.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--flow-error-scales wants numbers separated by commas, got {args.flow_error_scales!r}")
    ch = load_character(args.character)
    teacher = load_teacher(ch.teacher_name, device="cpu")
    prepared = teacher.prepare(ch.image)
    student = ch.poser
    if not 0.0 <= args.rotation_scale <= 1.0:
        ap.error(f"--rotation-scale must be in [0, 1], got {args.rotation_scale}")
    poses = sample_poses(args.poses, torch.Generator().manual_seed(args.seed))
    poses[:, ROTATION] *= args.rotation_scale
    whole = torch.zeros(512, 512)
    body_only = torch.zeros(512, 512)
    blend_only = torch.zeros(512, 512)
    swapped = {"teacher's blend over the student's warp": 0.0, "student's blend over the teacher's warp": 0.0}
    flow_err, flow_mag = [], []
    line_weighted = [0.0, 0.0]      # Σ flow error² · squared gradient, Σ squared gradient
    first_order = 0.0
    variants = blend_weight_variants() if args.blend_weight_variants else {}
    variant_error = dict.fromkeys(variants, 0.0)
    scaled_error = dict.fromkeys(scales, 0.0)
    by_detail = {"flat colour": [0.0, 0, 0.0], "lines": [0.0, 0, 0.0]}   # Σ flow error, pixels, Σ warp-only sq. error
    by_error = {edges: [0, 0.0] for edges in ERROR_BINS_PX}                  # visible pixels, Σ warp-only sq. error
    with torch.no_grad():
        for s in range(0, args.poses, 4):
            p = poses[s:s + 4]
            out = teacher.pose_all(prepared, p)
            target = to_display(out.image.float())
            pred = student(ch.image, p).image
            body_input = out.face_morphed_full      # the body morpher's input: the drawing, its face morphed
            body = student.body_outputs(body_input, p)
            pred_body = body.image
            whole += ((to_display(pred) - target) ** 2).mean(1).sum(0)
            body_only += ((to_display(pred_body) - target) ** 2).mean(1).sum(0)
            e = out.editor      # the teacher's image = alpha · color_change + (1 − alpha) · warped_image
            flow_only = e.alpha * e.color_change + (1 - e.alpha) * body.warped
            blend = body.alpha * body.color + (1 - body.alpha) * e.warped_image
            blend_squared = ((to_display(blend) - target) ** 2).mean(1)           # (N, 512, 512)
            flow_squared = ((to_display(flow_only) - target) ** 2).mean(1)                # (N, 512, 512)
            swapped["teacher's blend over the student's warp"] += flow_squared.mean().item() * len(p)
            for lam in scales:
                warped = apply_flow(body_input, e.flow + lam * (body.flow - e.flow))
                scaled = e.alpha * e.color_change + (1 - e.alpha) * warped
                scaled_error[lam] += ((to_display(scaled) - target) ** 2).mean().item() * len(p)
            swapped["student's blend over the teacher's warp"] += blend_squared.mean().item() * len(p)
            blend_only += blend_squared.sum(0)
            for key, change in variants.items():
                a = change(body.alpha)
                variant_error[key] += ((to_display((1 - a) * body.warped + a * body.color) - target) ** 2).mean().item() * len(p)
            visible = out.image[:, 3] > -0.9                  # model space: alpha −1 is transparent
            # both flows are offsets in normalised [-1, 1] coordinates: 2/512 a pixel
            error_px = (body.flow - e.flow).float() * 256                                     # (N, 2, H, W)
            err_px = error_px.norm(dim=1)                                                     # (N, H, W)
            flow_err.append(err_px[visible])
            wx, wy = central_gradients(to_display(e.warped_image.float()))
            detail = (wx ** 2 + wy ** 2).mean(1)                                              # (N, H, W)
            for key, k in (("flat colour", visible & (detail < FLAT)), ("lines", visible & (detail >= LINES))):
                by_detail[key][0] += err_px[k].sum().item()
                by_detail[key][1] += k.sum().item()
                by_detail[key][2] += flow_squared[k].sum().item()
            for (lo, hi), acc in by_error.items():
                k = visible & (err_px >= lo) & (err_px < hi)
                acc[0] += k.sum().item()
                acc[1] += flow_squared[k].sum().item()
            # where a flow error costs: the teacher's image's gradient (display space, central differences, per px)
            gx, gy = central_gradients(target)                                                # (N, 4, H, W) each
            g2 = (gx ** 2 + gy ** 2).sum(1)
            line_weighted[0] += (err_px ** 2 * g2).sum().item()
            line_weighted[1] += g2.sum().item()
            # to first order a flow error e costs (e · ∇I)²: only its component across the lines
            ex, ey = error_px.unbind(1)
            first_order += ((ex.unsqueeze(1) * gx + ey.unsqueeze(1) * gy) ** 2).mean().item() * len(p)
            flow_mag.append((e.flow.float().norm(dim=1) * 256)[visible])
    whole /= args.poses
    body_only /= args.poses
    box = torch.zeros(512, 512, dtype=torch.bool)
    box[STUDENT_FACE_BOX.rows, STUDENT_FACE_BOX.cols] = True
    ranked = body_only.flatten().sort(descending=True).values.cumsum(0) / body_only.sum()
    print(f"{args.character}, {args.poses} poses (seed {args.seed}, rotations × {args.rotation_scale:g}), CPU\n")
    print("| measure | value |\n|---|---|")
    print(f"| PSNR, whole student | {10 * math.log10(1 / whole.mean().item()):.2f} dB |")
    print(f"| PSNR, student body on the teacher's face output | {10 * math.log10(1 / body_only.mean().item()):.2f} dB |")
    print(f"| share of squared error in the face box (whole / body only) | "
          f"{(whole[box].sum() / whole.sum()).item():.3f} / {(body_only[box].sum() / body_only.sum()).item():.3f} |")
    for frac in (0.01, 0.05):
        print(f"| share of body-only squared error in the worst {frac:.0%} of pixels | "
              f"{ranked[int(frac * ranked.numel())].item():.3f} |")
    for key, value in swapped.items():
        print(f"| PSNR, {key} | {10 * math.log10(args.poses / value):.2f} dB |")
    err, mag = torch.cat(flow_err), torch.cat(flow_mag)
    p90 = err.sort().values[int(0.9 * (err.numel() - 1))]     # (torch.quantile refuses > 16M values: many poses)
    print(f"| flow error where visible: mean / median / 90th percentile | {err.mean():.2f} / {err.median():.2f} / "
          f"{p90:.2f} px |")
    print(f"| flow error weighted by the teacher image's squared gradient (on its lines), rms | "
          f"{math.sqrt(line_weighted[0] / line_weighted[1]):.2f} px |")
    print(f"| PSNR the flow's error would cost to first order, (error · image gradient)² | "
          f"{10 * math.log10(args.poses / first_order):.2f} dB |")
    for lo, hi in ((0, 2), (2, 10), (10, 20), (20, math.inf)):
        k = (mag >= lo) & (mag < hi)
        if k.any():
            print(f"| flow error where the teacher moves a pixel {lo}–{hi} px ({k.float().mean():.0%} of visible) | "
                  f"{err[k].mean():.2f} px |")
    visible_pixels = err.numel()
    warp_total = swapped["teacher's blend over the student's warp"] * 512 * 512
    for key, (error_sum, count, squared) in by_detail.items():
        print(f"| flow error on {key} ({count / visible_pixels:.0%} of visible; share of the warp's squared error "
              f"{squared / warp_total:.3f}) | {error_sum / max(count, 1):.2f} px |")
    for (lo, hi), (count, squared) in by_error.items():
        print(f"| visible pixels whose flow is {lo:g}–{hi:g} px off: share of visible / of the warp's squared error | "
              f"{count / visible_pixels:.3f} / {squared / warp_total:.3f} |")
    for lam, value in scaled_error.items():
        psnr = f"{10 * math.log10(args.poses / value):.2f} dB" if value > 0 else "inf (the teacher's own image)"
        print(f"| PSNR, the teacher's blend over a warp with the student's flow error × {lam:g} | {psnr} |")
    for key, value in variant_error.items():
        print(f"| PSNR, student body with its blend weight {key} | {10 * math.log10(args.poses / value):.2f} dB |")
    for path, error in ((args.map, body_only), (args.blend_map, blend_only / args.poses)):
        if path:
            from PIL import Image

            scaled = (error / error.quantile(0.999)).clamp(0, 1).sqrt()
            Image.fromarray((scaled * 255).byte().numpy()).save(path)


if __name__ == "__main__":
    main()
