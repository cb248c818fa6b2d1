"""Training throughput of the distiller's student step, side by side in one process, per kernel mode.

    python benchmarks/distill_step.py [--batch 16] [--face-batch 32] [--steps 20] [--modes filed,default,compiled+pad8+sync]
                                      [--body-pixel-fraction 1,0.25 --face-pixel-fraction 1,0.25]

Every mode runs at each pair of pixel fractions (by default every pixel, then the default recipe's quarter parts
since session 16); the × column is against the first mode at the first pair, so with the defaults
`--modes filed,default` gives issue 16's throughput row: "default @ body 0.25, face 0.25" against "filed" at
every pixel, the step when the issue was filed.

One step = ``kyara.distill.step.TrainStep``, the object the distiller's loop calls each step: examples drawn
from a teacher pool (here --pool examples of stand-in data: the bundled sample as the teacher's final image,
small random flows, random face boxes, poses from kyara.pose_sampler), face morpher (face_loss, face batch 2× the
body batch) + body morpher on the character region (the sample's visible pixels dilated by --margin px, a
stand-in for the distiller's region) with body_loss (THA4's four terms, the warp, the blended-image MSE of
today's default recipe; phase 3's weights) + both Adam updates, TF32 matmuls. Since session 11 the step is the
loop's own (before, this script mirrored it without the pool's gathers, the target warp and the index copies),
so its milliseconds are the loop's, and earlier tables' are not comparable with later ones. Modes:

- default: DistillConfig() as `kyara distill` runs it (on CUDA: compiled, widths padded to 8, and since session
  13 CUDA graphs of each network's pass, step.PassGraphs); compiled+pad8 is the same without the graphs (the
  default of sessions 10–12);
- compiled+pad8+sync: compiled+pad8 with the examples' indices copied to the GPU as before session 11
  (two plain .to(device) copies a step, each waiting for all queued GPU work) instead of one copy from pinned
  memory that does not wait (TrainStep.draw);
- compiled+pad8+graphs / compiled+pad8+fused-adam: compiled+pad8 with inductor's CUDA graphs of the compiled
  passes (torch.compile mode "reduce-overhead"; fails in a training step, session 12) / with Adam(fused=True);
- MODE+step-graphs (e.g. eager+pad8+step-graphs): MODE with DistillConfig.cuda_graphs,
  each network's pass (forward, loss, backward) replayed as a CUDA graph per pixel part (step.PassGraphs), all
  captured in the first step (its "first step s");
- MODE+muon (e.g. default+muon): MODE with DistillConfig.optimizer "muon" (kyara.distill.muon: Muon on the sine
  layers' hidden weights, batched on a GPU; Adam on the rest): what the optimizer costs a step (its "grad vs
  eager" is the first step's gradients, which the optimizer does not change);
- filed: the step as it was when issue 16 was filed (the baseline of its "≥ 3× today's" row): compiled, widths
  not padded, the taps' backward as a scatter, the synchronising index copies, and the flow mask's 17 × 17
  max pool as one square window (now a column and a row pass: losses.box_max, the same values);

- eager: the PyTorch path (kernels="torch", no compile);
- compiled: torch.compile of the two networks' feature functions (kernels="torch"; the distiller's default
  until session 10, which added width padding: the default is now compiled+pad8);
- compiled+graphs: the same with torch.compile(mode="reduce-overhead"), i.e. CUDA graphs of the compiled
  forward and backward (a small-batch step launches many short kernels);
- compiled+fused-adam: compiled, with Adam(fused=True) for both optimizers;
- compiled+scatter / eager+scatter: the bilinear taps' backward as autograd's scatter with atomic adds (the
  path before PixelLevel.readers; now upsample_taps gathers through the taps' transpose);
- compiled+fp16 / compiled+pad8+fp16: the forward passes under fp16 autocast with a GradScaler per network
  and fused Adam (as the loop since session 11: no overflow check read back to the CPU)
  (fp16 GEMM inputs have TF32's 10-bit mantissa at twice its tensor-core rate; outputs are rounded to fp16):
  as `kyara distill --amp fp16` (DistillConfig.amp, off by default); "grad vs eager" shows what it costs;
- compiled+pad8 / eager+pad8: the body's widths zero-padded to multiples of 8 (DistillConfig.width_multiple,
  the distiller's default since session 10: the same maths; 90 and 180 are not multiples of the 4 / 8 that
  TF32 / fp16 tensor-core GEMMs align to);
- triton: the fused Triton sine layers (kyara.nn.fused_siren, kernels="triton"), uncompiled;
- triton+compile: torch.compile around the fused kernels;
- triton-bf16: the fused kernels with bf16 products (fp32 accumulation) in their forward matmuls
  (fused_siren.matmul_precision("bf16"); the backward's matmuls stay TF32): an experiment, no default uses it;
- auto: TrainForward with kernels="auto" and compile=True (the fused kernels where they run).

--body-pixel-fraction F1,F2,... trains the body on one random part (1/round(1/F)) of the region per step, as
`kyara distill --body-pixel-fraction`: every mode at every F, side by side in one process.

Every mode starts from the same weights and data; "grad vs eager" is the largest relative difference
(max |Δ| / max |eager| over each parameter tensor, worst tensor) of the first step's gradients
against the eager mode's, so the table also checks that a mode computes the same step. A mode that
fails prints its error in its row and the others still run; modes that would start after
--budget-s seconds are skipped. --profile MODE prints torch.profiler's top CUDA kernels of 5 steps of
that mode after its timing. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import time
import traceback
from dataclasses import replace

import torch

from kyara.character import SAMPLE_IMAGE
from kyara.distill import losses
from kyara.distill.config import THA4_BODY_PHASES, DistillConfig
from kyara.distill.loop import character_region
from kyara.distill.pool import TeacherPool
from kyara.distill.step import StepPrecision, TrainForward, TrainStep, optimizers, pixel_parts
from kyara.image import load_image
from kyara.nn import fused_siren
from kyara.pose_sampler import sample_poses
from kyara.student import Student

MODES = {   # name → (compile, kernels, matmul precision of the fused kernels, torch.compile mode, fused Adam,
           #         width multiple, what is as before (a "+"-list of scatter, sync, square-pool), amp)
    "default": (True, "torch", None, None, False, DistillConfig().width_multiple),
    "filed": (True, "torch", None, None, False, 1, "scatter+sync+square-pool"),
    "compiled+pad8+sync": (True, "torch", None, None, False, 8, "sync"),
    "compiled+pad8+graphs": (True, "torch", None, "reduce-overhead", False, 8),
    "compiled+pad8+fused-adam": (True, "torch", None, None, True, 8),
    "eager": (False, "torch", None, None, False),
    "compiled": (True, "torch", None, None, False),
    "compiled+graphs": (True, "torch", None, "reduce-overhead", False),
    "compiled+fused-adam": (True, "torch", None, None, True),
    "compiled+pad8": (True, "torch", None, None, False, 8),
    "compiled+scatter": (True, "torch", None, None, False, 1, "scatter"),
    "compiled+fp16": (True, "torch", None, None, False, 1, None, "fp16"),
    "compiled+pad8+fp16": (True, "torch", None, None, False, 8, None, "fp16"),
    "eager+scatter": (False, "torch", None, None, False, 1, "scatter"),
    "eager+pad8": (False, "torch", None, None, False, 8),
    "triton": (False, "triton", None, None, False),
    "triton+compile": (True, "triton", None, None, False),
    "triton-bf16": (False, "triton", "bf16", None, False),
    "auto": (True, "auto", None, None, False),
}


def base_mode(mode: str) -> tuple[str, bool, bool]:
    """MODE[+step-graphs][+muon] → (MODE, step graphs?, Muon?)."""
    muon = mode.endswith("+muon")
    mode = mode.removesuffix("+muon")
    return mode.removesuffix("+step-graphs"), mode.endswith("+step-graphs"), muon


def make_setup(dev, config: DistillConfig, pool_size: int, margin: int, fused_adam: bool = False):
    """Student (seed 0) on the sample's region, its two Adam optimizers, and a teacher pool of stand-in data
    (TeacherPool's tensors filled directly: no teacher runs here)."""
    sample = load_image(SAMPLE_IMAGE).to(dev)
    region = character_region(sample, sample[3:4], margin)
    torch.manual_seed(0)
    student = Student().to(dev)
    student.set_region(region)
    opts = optimizers(student, config, dev)   # the loop's (fused Adam with fp16 loss scaling on CUDA)
    if fused_adam:   # one kernel per update instead of foreach's several, without fp16 too
        opts = tuple(torch.optim.Adam(o.param_groups[0]["params"], lr=1e-4, fused=True) for o in opts)
    g = torch.Generator(device="cpu").manual_seed(1)
    pool = TeacherPool(None, None, pool_size, pool_size, 0, dev)
    n = pool.num_slots * pool.chunk
    pool.final.copy_(sample.expand(n, -1, -1, -1))
    pool.flow.copy_(torch.randn(pool.flow.shape, generator=g) * 0.01)
    pool.face_crop.copy_(torch.rand(pool.face_crop.shape, generator=g) * 2 - 1)
    pool.poses.copy_(sample_poses(n, g))
    pool.chunks_made = pool.num_slots
    mask = (torch.rand(1, 1, 128, 128, generator=g) > 0.7).float().to(dev)
    return student, opts, pool, mask, sample, region


class SyncingTrainStep(TrainStep):
    """TrainStep with the index copies as before session 11: two plain .to(device), each a GPU sync."""

    def draw(self, pool, generator):
        face_idx = pool.draw(self.face_batch, generator).to(pool.poses.device)
        face_part = self.face_parts.pick(generator) if self.face_parts is not None else None
        body_idx = pool.draw(self.config.batch_size, generator).to(pool.poses.device)
        body_part = self.body_parts.pick(generator) if self.body_parts is not None else None
        return face_idx, face_part, body_idx, body_part


def square_box_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """losses.box_max as it was before session 11: one square max pool (the same values, (2r + 1)² reads)."""
    return torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)


BOX_MAX = losses.box_max
PHASE = THA4_BODY_PHASES[2]   # all four body terms weighted


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--face-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pool", type=int, default=64, help="teacher pool examples (stand-in data) the steps draw from")
    ap.add_argument("--margin", type=int, default=24, help="region dilation (px) around the sample's pixels")
    ap.add_argument("--modes", default="filed,default,compiled+pad8+sync",
                    help="comma list (the first is the × column's reference): " + ", ".join(MODES))
    ap.add_argument("--budget-s", type=float, default=170.0, help="start no new mode after this many seconds")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", default="", help="a mode whose top CUDA kernels to print (torch.profiler)")
    ap.add_argument("--top", type=int, default=15, help="profiler rows")
    ap.add_argument("--body-pixel-fraction", default=f"1,{DistillConfig().body_pixel_fraction:g}",
                    help="comma list: train the body on a random 1/round(1/F) of the region per step "
                         "(DistillConfig.body_pixel_fraction); each F runs every mode")
    ap.add_argument("--body-pixel-tile", type=int, default=DistillConfig().body_pixel_tile,
                    help="the parts' squares (DistillConfig.body_pixel_tile)")
    ap.add_argument("--face-pixel-fraction", default=f"1,{DistillConfig().face_pixel_fraction:g}",
                    help="comma list paired with --body-pixel-fraction's (one value: the same for all): train the "
                         "face on a random 1/round(1/F) of its box per step (DistillConfig.face_pixel_fraction)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    modes = args.modes.split(",")
    for mode in modes:
        if base_mode(mode)[0] not in MODES:
            raise SystemExit(f"distill_step.py: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    fractions = [float(f) for f in args.body_pixel_fraction.split(",")]
    face_fractions = [float(f) for f in args.face_pixel_fraction.split(",")]
    if len(face_fractions) == 1:
        face_fractions *= len(fractions)
    if args.face_batch % args.batch:
        raise SystemExit("distill_step.py: --face-batch must be a multiple of --batch (DistillConfig.face_batch_multiplier)")
    if len(face_fractions) != len(fractions):
        raise SystemExit("distill_step.py: --face-pixel-fraction needs one value or as many as --body-pixel-fraction")
    pairs = list(zip(fractions, face_fractions))
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    triton_version = "not importable"
    if fused_siren.triton_importable():
        import triton
        triton_version = triton.__version__
    print(f"{name}, torch {torch.__version__}, triton {triton_version}; batch {args.batch}, face batch "
          f"{args.face_batch}, body pixel fractions {args.body_pixel_fraction} (tile {args.body_pixel_tile}), face pixel "
          f"fractions {args.face_pixel_fraction}, TF32, {args.steps} timed steps; triton usable here: "
          f"{fused_siren.triton_available(dev)}\n", flush=True)
    rows, eager_ms, first_ms = [], None, None   # × eager / × the first mode: against the first fraction's rows
    for (fraction, face_fraction), mode in [(pair, m) for pair in pairs for m in modes]:
        config = DistillConfig(body_pixel_fraction=fraction, body_pixel_tile=args.body_pixel_tile,
                               face_pixel_fraction=face_fraction)
        if mode == modes[0]:
            ref_grads = None    # grad vs eager compares modes at the same fractions (the same parts)
        label = mode if len(pairs) == 1 else f"{mode} @ body {fraction:g}, face {face_fraction:g}"
        if time.perf_counter() - t_start > args.budget_s:
            rows.append((label, "—", "—", "—", "—", "—", "—", f"skipped: past --budget-s {args.budget_s:.0f} s"))
            continue
        base, step_graphs, muon = base_mode(mode)
        compile, kernels, precision, compile_mode, fused_adam, *extra = MODES[base]
        pad, variant, autocast = (extra + [1, None, None][len(extra):])
        config = replace(config, compile=compile, kernels=kernels, width_multiple=pad, amp=autocast or "",
                         batch_size=args.batch, face_batch_multiplier=args.face_batch // args.batch,
                         cuda_graphs=step_graphs or (base == "default" and DistillConfig().cuda_graphs),
                         optimizer="muon" if muon else DistillConfig().optimizer)
        try:
            student, opts, pool, mask, image, region = make_setup(dev, config, args.pool, args.margin, fused_adam)
            share = float(region.float().mean())
            body_parts, face_parts = pixel_parts(student, config, dev)
            if body_parts is not None:
                share *= body_parts.fraction
            before = set((variant or "").split("+"))
            if "scatter" in before:   # the upsampling's backward as autograd's scatter (atomic adds), as before the readers
                student.body_pixels = lambda p=student.body_pixels().without_readers(): p
                if body_parts is not None:
                    body_parts.sets = [(p.without_readers(), sh) for p, sh in body_parts.sets]
            forward = TrainForward(student, compile=compile and dev.type == "cuda", kernels=kernels,
                                   compile_mode=compile_mode, width_multiple=pad)
            kind = SyncingTrainStep if "sync" in before else TrainStep
            losses.box_max = square_box_max if "square-pool" in before else BOX_MAX
            train_step = kind(student, image, mask, config, *opts, forward=forward,
                              precision=StepPrecision(config.amp, dev), parts=(body_parts, face_parts))
            g = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            with fused_siren.matmul_precision(precision):
                train_step(pool, g, PHASE)   # first call: compiles (Triton and/or inductor)
            sync(dev)
            first_s = time.perf_counter() - t0
            # the first step's gradients (optimizer.step leaves them; GradScaler has unscaled them), only where
            # compared: under CUDA graphs they live in the graphs' memory until the next step
            need_grads = mode == "eager" or ref_grads is not None
            grads = [p.grad.detach().float().cpu() for p in student.parameters()] if need_grads else []
            if mode == "eager":
                ref_grads = grads
            if ref_grads is not None and len(ref_grads) == len(grads):
                gdiff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(grads, ref_grads))
                gtext = f"{gdiff:.1e}"
            else:
                gtext = "—"
            with fused_siren.matmul_precision(precision):
                for _ in range(3):
                    train_step(pool, g, PHASE)
                sync(dev)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    train_step(pool, g, PHASE)
                sync(dev)
                ms = (time.perf_counter() - t0) / args.steps * 1000
                if mode == args.profile and dev.type == "cuda":
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for _ in range(5):
                            train_step(pool, g, PHASE)
                        sync(dev)
                    print(f"\n{mode}: top CUDA kernels over 5 steps\n"
                          + prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top,
                                                      max_name_column_width=60), flush=True)
            if (fraction, face_fraction) == pairs[0]:
                eager_ms = ms if mode == "eager" else eager_ms
                first_ms = ms if mode == modes[0] else first_ms
            rows.append((label, forward.kernels, f"{share:.2f}", f"{ms:.1f}", f"{args.batch / ms * 1000:.0f}" if ms < args.batch * 100 else f"{args.batch / ms * 1000:.2f}",
                         f"{first_s:.1f}", gtext, ""))
            print(f"{label}: {ms:.1f} ms/step (first step {first_s:.1f} s, grad vs eager {gtext})", flush=True)
        except Exception as e:   # noqa: BLE001 - one failing mode must not lose the others
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            rows.append((label, "—", "—", "—", "—", "—", "—", f"error: {msg}"))
            print(f"{label}: FAILED\n{traceback.format_exc(limit=6)}", flush=True)
        finally:
            student = opts = pool = forward = train_step = None
            losses.box_max = BOX_MAX
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print(f"\n| mode | sine layers | canvas share trained | ms/step | body examples/s | × eager | × {modes[0]} | first step s | grad vs eager | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, kern, share, ms, ex, first, gtext, note in rows:
        vs_eager = vs_first = "—"
        if ms != "—":
            if eager_ms:
                vs_eager = f"{eager_ms / float(ms):.2f}"
            if first_ms:
                vs_first = f"{first_ms / float(ms):.2f}"
        print(f"| {mode} | {kern} | {share} | {ms} | {ex} | {vs_eager} | {vs_first} | {first} | {gtext} | {note} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
