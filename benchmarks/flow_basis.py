"""Could a low-rank flow basis carry the body's motion? The teacher's flows projected on their own principal components.

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/flow_basis.py CHARACTER(.kyara|.png) [--train 256] [--test 32]
                                                                    [--ranks 8,16,32,64] [--basis-res 512,128]
                                                                    [--residual]

The student's body flow errs by a smooth, pose-dependent field of about a pixel (docs/benchmarks.md, sessions 17
and 22), and the teacher's body networks see only the six rotation parameters. So the teacher's flow is (nearly)
a smooth function of six numbers, and might be carried by a mean field plus K basis fields weighted by K
pose-dependent coefficients. Before building such a student this script asks what the basis could give at best
(CPU, THA3 teacher on the CPU):

- the teacher's flows for --train poses (kyara.pose_sampler, the distiller's sampler, seed 1) give a mean and
  principal components (optionally at a coarser --basis-res, upsampled bilinearly: flow offsets are normalised, so
  they resize without rescaling);
- each of --test held-out poses (seed 12345, as benchmarks/student_error_map.py) gets the least-squares
  coefficients on its visible pixels, once for the flow's error and once for the image's error to first order
  ((error · ∇I)², the target image's gradient): near the best any coefficient predictor could do,
  and the coefficients a kernel ridge regression on the six rotations predicts from the training poses (what a
  simple predictor learns from --train poses alone);
- reported: the flow's error where the teacher's output is visible (mean px) and the PSNR of the teacher's own
  blend over that warp (the flow's error alone; display space, as kyara.eval.metrics), beside the mean flow alone
  and, for a .kyara, the character's student.

--residual (a .kyara): the basis is made of the teacher's flow minus the student's instead, and added to the
student's flow: what a basis beside the SIREN could correct at best (a hybrid student, its SIREN as it is).

Memory: --train × 2 × H² floats at each basis resolution (256 poses at 512²: 0.5 GB).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kyara.eval.metrics import to_display
from kyara.nn.warp import apply_flow
from kyara.pose import ROTATION
from kyara.pose_sampler import sample_poses
from kyara.teacher import load_teacher


def principal_fields(flows: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """flows (N, 2, H, W) → mean (2, H, W) and the top ``rank`` principal fields (rank, 2, H, W), unit norm."""
    n = flows.shape[0]
    x = flows.reshape(n, -1)
    mean = x.mean(0)
    xc = x - mean
    gram = (xc @ xc.T).double()                                     # (N, N): cheaper than an SVD of (N, D)
    values, vectors = torch.linalg.eigh(gram)
    order = values.argsort(descending=True)[:rank]
    values, vectors = values[order].clamp_min(1e-12), vectors[:, order]
    basis = (vectors.T.float() @ xc) / values.sqrt().float().unsqueeze(1)
    return mean.view(flows.shape[1:]), basis.view(rank, *flows.shape[1:])


def resize(fields: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 2, h, w) → (..., 2, size, size), bilinear (offsets are normalised: no rescaling)."""
    lead = fields.shape[:-3]
    f = fields.reshape(-1, *fields.shape[-3:])
    if f.shape[-1] != size:
        f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False) if f.shape[-1] < size \
            else F.adaptive_avg_pool2d(f, size)
    return f.reshape(*lead, *f.shape[-3:])


def fit_visible(residual: torch.Tensor, basis: torch.Tensor, visible: torch.Tensor,
                gradient: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares coefficients (K,) of basis (K, 2, H, W) for residual (2, H, W) on the visible (H, W) pixels.

    gradient (C, 2, H, W), the image's x and y gradient per channel: fit the image's error to first order,
    Σ ((basis · c − residual) · ∇I)², instead of the flow's (what a student trained on images would weigh)."""
    if gradient is None:
        a = basis[:, :, visible].reshape(basis.shape[0], -1)         # (K, 2·V)
        b = residual[:, visible].reshape(-1)
    else:
        g = gradient[:, :, visible]                                  # (C, 2, V)
        a = torch.einsum("cxv,kxv->kcv", g, basis[:, :, visible]).reshape(basis.shape[0], -1)   # (K, C·V)
        b = torch.einsum("cxv,xv->cv", g, residual[:, visible]).reshape(-1)
    return torch.linalg.lstsq(a.T.double(), b.double().unsqueeze(1)).solution.squeeze(1).float()


def image_gradient(image: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, 2, H, W): central differences in x and y, per pixel, in flow units (a pixel is 2/W
    of [-1, 1], so d/d(offset) = (W / 2) d/d(pixel))."""
    w = image.shape[-1]
    gx = F.pad(image[..., 2:] - image[..., :-2], (1, 1)) / 2 * (w / 2)
    gy = F.pad(image[..., 2:, :] - image[..., :-2, :], (0, 0, 1, 1)) / 2 * (w / 2)
    return torch.stack([gx, gy], 2)


def kernel_ridge(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, scale: float,
                 ridge: float = 1e-3) -> torch.Tensor:
    """Gaussian-kernel ridge regression: train_x (N, 6), train_y (N, K), test_x (M, 6) → (M, K)."""
    def kernel(a, b):
        return torch.exp(-torch.cdist(a.double(), b.double()) ** 2 / (2 * scale ** 2))
    k = kernel(train_x, train_x)
    alpha = torch.linalg.solve(k + ridge * torch.eye(len(k), dtype=k.dtype), train_y.double())
    return (kernel(test_x, train_x) @ alpha).float()


def psnr(squared_error_sum: float, count: int) -> float:
    return math.inf if squared_error_sum == 0 else 10 * math.log10(count / squared_error_sum)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("character", help="a .kyara (its drawing, and its student for comparison) or a 512×512 RGBA PNG")
    ap.add_argument("--train", type=int, default=256, help="poses whose teacher flows make the basis (default 256)")
    ap.add_argument("--test", type=int, default=32, help="held-out poses (default 32)")
    ap.add_argument("--ranks", default="8,16,32,64", help="basis sizes K to try (default 8,16,32,64)")
    ap.add_argument("--basis-res", default="512,128", help="resolutions of the basis fields (default 512,128)")
    ap.add_argument("--residual", action="store_true",
                    help="model the teacher's flow minus the .kyara's student's (a basis beside the student)")
    ap.add_argument("--kernel-scale", type=float, default=0.5,
                    help="the kernel ridge regression's length scale over the rotations in [-1, 1] (default 0.5)")
    args = ap.parse_args()
    ranks = [int(k) for k in args.ranks.split(",")]
    resolutions = [int(r) for r in args.basis_res.split(",")]
    if args.residual and Path(args.character).suffix.lower() != ".kyara":
        ap.error("--residual needs a .kyara (its student's flow is what the basis corrects)")
    if max(ranks) >= args.train:
        ap.error(f"--ranks: the largest K ({max(ranks)}) must be below --train ({args.train})")

    student = None
    if Path(args.character).suffix.lower() == ".kyara":
        from kyara.character import load_character
        ch = load_character(args.character)
        image, teacher_name, student = ch.image, ch.teacher_name, ch.poser
    else:
        from kyara.image import load_image
        image, teacher_name = load_image(args.character), "tha3/separable_float"
    teacher = load_teacher(teacher_name, device="cpu")
    prepared = teacher.prepare(image)
    train_poses = sample_poses(args.train, torch.Generator().manual_seed(1))
    test_poses = sample_poses(args.test, torch.Generator().manual_seed(12345))

    t0 = time.perf_counter()
    train_flows = {r: [] for r in resolutions}
    with torch.no_grad():
        for s in range(0, args.train, 4):
            p = train_poses[s:s + 4]
            out = teacher.pose_all(prepared, p)
            flow = out.editor.flow.float()
            if args.residual:
                flow = flow - student.body_outputs(out.face_morphed_full, p).flow.float()
            for r in resolutions:
                train_flows[r].append(resize(flow, r))
        train_flows = {r: torch.cat(v) for r, v in train_flows.items()}
        print(f"teacher, {args.train} training poses: {time.perf_counter() - t0:.0f} s")
        bases = {r: principal_fields(train_flows[r], max(ranks)) for r in resolutions}
        train_coeffs = {}
        for r, (mean, basis) in bases.items():
            # the training poses' own coefficients (orthonormal basis: plain projections), for the regression
            train_coeffs[r] = (train_flows[r].reshape(args.train, -1) - mean.reshape(-1)) @ basis.reshape(len(basis), -1).T
            bases[r] = (resize(mean, 512), resize(basis, 512))
        del train_flows

        rows: dict[str, list[float]] = {}       # name → [Σ flow error px over visible, visible count, Σ sq err]

        def add(name, flow_hat, e, target, body_input, visible):
            err = ((flow_hat - e.flow.float()) * 256).norm(dim=1)[visible]          # 2/512 of [-1, 1] a pixel
            flow_only = e.alpha * e.color_change + (1 - e.alpha) * apply_flow(body_input, flow_hat)
            row = rows.setdefault(name, [0.0, 0, 0.0])
            row[0] += err.sum().item()
            row[1] += err.numel()
            row[2] += ((to_display(flow_only) - target) ** 2).mean().item() * len(flow_hat)

        for s in range(0, args.test, 4):
            p = test_poses[s:s + 4]
            out = teacher.pose_all(prepared, p)
            e = out.editor
            target = to_display(out.image.float())
            body_input = out.face_morphed_full      # the body morpher's input: the drawing, its face morphed
            visible = out.image[:, 3] > -0.9                                        # model space: −1 transparent
            gradient = image_gradient(target)                                       # (N, 4, 2, H, W)
            add("the teacher's own flow (check: its own image)", e.flow.float(), e, target, body_input, visible)
            base = torch.zeros_like(e.flow, dtype=torch.float32)
            if student is not None:
                base = student.body_outputs(body_input, p).flow.float()
                add("the student's flow", base, e, target, body_input, visible)
            if not args.residual:
                base = torch.zeros_like(base)
            what = "the student's flow + " if args.residual else ""
            for r, (mean, basis) in bases.items():
                add(f"{what}the mean {'correction' if args.residual else 'flow'} alone (basis {r}²)",
                    base + mean, e, target, body_input, visible)
                predicted = kernel_ridge(train_poses[:, ROTATION], train_coeffs[r], p[:, ROTATION],
                                         args.kernel_scale)
                for k in ranks:
                    fitted = torch.stack([base[i] + mean + torch.einsum("k,kchw->chw", fit_visible(
                        e.flow[i].float() - base[i] - mean, basis[:k], visible[i]), basis[:k]) for i in range(len(p))])
                    add(f"{what}basis {r}², K = {k}, best coefficients for the flow", fitted, e, target, body_input,
                        visible)
                    fitted = torch.stack([base[i] + mean + torch.einsum("k,kchw->chw", fit_visible(
                        e.flow[i].float() - base[i] - mean, basis[:k], visible[i], gradient[i]), basis[:k])
                        for i in range(len(p))])
                    add(f"{what}basis {r}², K = {k}, best coefficients for the image (first order)", fitted, e,
                        target, body_input, visible)
                    guessed = base + mean + torch.einsum("nk,kchw->nchw", predicted[:, :k], basis[:k])
                    add(f"{what}basis {r}², K = {k}, kernel ridge on the rotations", guessed, e, target,
                        body_input, visible)
            print(f"  test poses {s + len(p)}/{args.test}: {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\n{args.character}: {args.train} training poses (seed 1), {args.test} held-out poses (seed 12345), "
          f"{'basis of the teacher − student flow, ' if args.residual else ''}CPU\n")
    print("| flow | error where visible, mean px | PSNR, the teacher's blend over this warp |\n|---|---|---|")
    for name, (err_sum, count, sq) in rows.items():
        print(f"| {name} | {err_sum / count:.2f} | {psnr(sq, args.test):.2f} dB |")


if __name__ == "__main__":
    main()
