"""Training throughput of the distiller's student step, side by side in one process, per kernel mode.

    python benchmarks/distill_step.py [--batch 16] [--face-batch 32] [--steps 20] [--modes eager,triton,compiled,triton+compile]

One step = what kyara.distill.loop runs per step: face morpher (face_loss, face batch 2× the body
batch) + body morpher on the character region (the bundled sample's visible pixels dilated by
--margin px, a stand-in for the distiller's region) with body_loss (THA4's four terms, the warp and the
blended-image MSE of today's default recipe) + both Adam updates, TF32 matmuls, through
``kyara.distill.loop.TrainForward`` exactly as the distiller builds it. Modes:

- eager: the PyTorch path (kernels="torch", no compile);
- compiled: torch.compile of the two networks' feature functions (kernels="torch"; the distiller's default
  until session 10, which added width padding: the default is now compiled+pad8);
- compiled+graphs: the same with torch.compile(mode="reduce-overhead"), i.e. CUDA graphs of the compiled
  forward and backward (a small-batch step launches many short kernels);
- compiled+fused-adam: compiled, with Adam(fused=True) for both optimizers;
- compiled+scatter / eager+scatter: the bilinear taps' backward as autograd's scatter with atomic adds (the
  path before PixelLevel.readers; now upsample_taps gathers through the taps' transpose);
- compiled+fp16 / compiled+pad8+fp16: the forward passes under fp16 autocast with a GradScaler per network
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

import torch

from kyara.character import SAMPLE_IMAGE
from kyara.distill.config import THA4_BODY_PHASES, DistillConfig
from kyara.distill.loop import StepPrecision, TrainForward, character_region, subset_body_loss, subset_face_loss
from kyara.distill.parts import PixelParts
from kyara.distill.losses import body_loss, face_loss
from kyara.image import load_image
from kyara.nn import fused_siren
from kyara.nn.warp import apply_flow
from kyara.student import Student

MODES = {   # name → (compile, kernels, matmul precision of the fused kernels, torch.compile mode, fused Adam)
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


def make_setup(dev, batch: int, face_batch: int, margin: int, fused_adam: bool = False):
    """Student (seed 0) on the sample's region, its two Adam optimizers, and fixed random data."""
    sample = load_image(SAMPLE_IMAGE).to(dev)
    region = character_region(sample, sample[3:4], margin)
    torch.manual_seed(0)
    student = Student().to(dev)
    student.set_region(region)
    adam = {"fused": True} if fused_adam else {}   # one kernel per update instead of foreach's several
    opts = (torch.optim.Adam(student.face_morpher.parameters(), lr=1e-4, **adam),
            torch.optim.Adam(student.body_morpher.parameters(), lr=1e-4, **adam))
    g = torch.Generator(device="cpu").manual_seed(1)
    image = sample.expand(batch, -1, -1, -1).contiguous()
    data = {
        "image": image,
        "poses": (torch.rand(batch, 45, generator=g) * 2 - 1).to(dev),
        "face_poses": torch.rand(face_batch, 39, generator=g).to(dev),
        "face_target": (torch.rand(face_batch, 4, 128, 128, generator=g) * 2 - 1).to(dev),
        "mask": (torch.rand(1, 1, 128, 128, generator=g) > 0.7).float().to(dev),
        "final": image.clone(),
        "flow": (torch.randn(batch, 2, 512, 512, generator=g) * 0.01).to(dev),
    }
    data["warped"] = apply_flow(image, data["flow"])
    return student, opts, data, region


def step(forward: TrainForward, opts, d, config: DistillConfig, update: bool = True, parts=None, g=None,
         face_parts=None, precision: StepPrecision | None = None) -> None:
    """One training step as the distiller's loop runs it; precision: the loop's StepPrecision (fp16
    autocast and loss scaling for the +fp16 modes; None: plain)."""
    precision = precision or StepPrecision("", torch.device("cpu"))
    face_opt, body_opt = opts
    with precision.autocast():
        if face_parts is None:
            loss_face = face_loss(forward.face(d["face_poses"]), d["face_target"], d["mask"], config.face_mask_weight)
        else:   # --face-pixel-fraction
            loss_face = subset_face_loss(forward, d["face_poses"], d["face_target"], d["mask"], *face_parts.pick(g),
                                         config)
    face_opt.zero_grad(set_to_none=True)
    precision.backward(0, loss_face)
    with precision.autocast():
        if parts is None:
            out = forward.body(d["image"], d["poses"])
            loss_body, _ = body_loss(out, d["final"], d["warped"], d["flow"], THA4_BODY_PHASES[2], config.masked_flow,
                                     config.blended_l2)
        else:   # --body-pixel-fraction: one random part of the region, as the distiller's loop
            loss_body, _ = subset_body_loss(forward, d["image"], d["poses"], d["final"], d["flow"], *parts.pick(g),
                                            THA4_BODY_PHASES[2], config)
    body_opt.zero_grad(set_to_none=True)
    precision.backward(1, loss_body)
    if update:
        precision.step(0, face_opt)
        precision.step(1, body_opt)


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--face-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--margin", type=int, default=24, help="region dilation (px) around the sample's pixels")
    ap.add_argument("--modes", default="eager,triton,compiled,triton+compile")
    ap.add_argument("--budget-s", type=float, default=170.0, help="start no new mode after this many seconds")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", default="", help="a mode whose top CUDA kernels to print (torch.profiler)")
    ap.add_argument("--top", type=int, default=15, help="profiler rows")
    ap.add_argument("--body-pixel-fraction", default="1",
                    help="comma list: train the body on a random 1/round(1/F) of the region per step "
                         "(DistillConfig.body_pixel_fraction); each F runs every mode")
    ap.add_argument("--body-pixel-tile", type=int, default=DistillConfig().body_pixel_tile,
                    help="the parts' squares (DistillConfig.body_pixel_tile)")
    ap.add_argument("--face-pixel-fraction", default="1",
                    help="comma list paired with --body-pixel-fraction's (one value: the same for all): train the "
                         "face on a random 1/round(1/F) of its box per step (DistillConfig.face_pixel_fraction)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"distill_step.py: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    fractions = [float(f) for f in args.body_pixel_fraction.split(",")]
    face_fractions = [float(f) for f in args.face_pixel_fraction.split(",")]
    if len(face_fractions) == 1:
        face_fractions *= len(fractions)
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
    rows, eager_ms, compiled_ms = [], None, None   # × eager / × compiled: against the first fraction's rows
    for (fraction, face_fraction), mode in [(pair, m) for pair in pairs for m in modes]:
        config = DistillConfig(body_pixel_fraction=fraction, body_pixel_tile=args.body_pixel_tile,
                               face_pixel_fraction=face_fraction)
        if mode == modes[0]:
            ref_grads = None    # grad vs eager compares modes at the same fractions (the same parts)
        label = mode if len(pairs) == 1 else f"{mode} @ body {fraction:g}, face {face_fraction:g}"
        if time.perf_counter() - t_start > args.budget_s:
            rows.append((label, "—", "—", "—", "—", "—", "—", f"skipped: past --budget-s {args.budget_s:.0f} s"))
            continue
        compile, kernels, precision, compile_mode, fused_adam, *extra = MODES[mode]
        pad, scatter, autocast = (extra + [1, None, None][len(extra):])
        try:
            student, opts, d, region = make_setup(dev, args.batch, args.face_batch, args.margin, fused_adam)
            n_face = len(list(student.face_morpher.parameters()))   # Student.parameters(): the face's first
            share = float(region.float().mean())
            parts, g = None, torch.Generator().manual_seed(0)
            if config.body_pixel_fraction < 1:
                parts = PixelParts(region, student.size, len(student.body_morpher.levels),
                                         config.body_pixel_fraction, 0, dev, args.body_pixel_tile)
                share *= parts.fraction
            if scatter:   # the upsampling's backward as autograd's scatter (atomic adds), as before the readers
                student.body_pixels = lambda p=student.body_pixels().without_readers(): p
                if parts is not None:
                    parts.sets = [(p.without_readers(), sh) for p, sh in parts.sets]
            face_parts = None
            if config.face_pixel_fraction < 1:
                face_parts = PixelParts(None, student.face_morpher.size, 1, config.face_pixel_fraction, 1, dev)
            step_precision = StepPrecision(autocast or "", dev)
            forward = TrainForward(student, compile=compile and dev.type == "cuda", kernels=kernels,
                                   compile_mode=compile_mode, width_multiple=pad)
            t0 = time.perf_counter()
            with fused_siren.matmul_precision(precision):
                step(forward, opts, d, config, update=False, parts=parts, g=g, face_parts=face_parts, precision=step_precision)   # first call: compiles (Triton and/or inductor)
            sync(dev)
            first_s = time.perf_counter() - t0
            scales = step_precision.scales() or [1.0, 1.0]   # the first step's gradients are scaled: unscale them
            grads = [p.grad.detach().float().cpu() / scales[0 if i < n_face else 1]
                     for i, p in enumerate(student.parameters())]
            if mode == "eager":
                ref_grads = grads
            if ref_grads is not None and len(ref_grads) == len(grads):
                gdiff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(grads, ref_grads))
                gtext = f"{gdiff:.1e}"
            else:
                gtext = "—"
            with fused_siren.matmul_precision(precision):
                for _ in range(3):
                    step(forward, opts, d, config, parts=parts, g=g, face_parts=face_parts, precision=step_precision)
                sync(dev)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(forward, opts, d, config, parts=parts, g=g, face_parts=face_parts, precision=step_precision)
                sync(dev)
                ms = (time.perf_counter() - t0) / args.steps * 1000
                if mode == args.profile and dev.type == "cuda":
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CUDA]) as prof:
                        for _ in range(5):
                            step(forward, opts, d, config, parts=parts, g=g, face_parts=face_parts, precision=step_precision)
                        sync(dev)
                    print(f"\n{mode}: top CUDA kernels over 5 steps\n"
                          + prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top,
                                                      max_name_column_width=60), flush=True)
            if (fraction, face_fraction) == pairs[0]:
                eager_ms = ms if mode == "eager" else eager_ms
                compiled_ms = ms if mode == "compiled" else compiled_ms
            rows.append((label, forward.kernels, f"{share:.2f}", f"{ms:.1f}", f"{args.batch / ms * 1000:.0f}" if ms < args.batch * 100 else f"{args.batch / ms * 1000:.2f}",
                         f"{first_s:.1f}", gtext, ""))
            print(f"{label}: {ms:.1f} ms/step (first step {first_s:.1f} s, grad vs eager {gtext})", flush=True)
        except Exception as e:   # noqa: BLE001 - one failing mode must not lose the others
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            rows.append((label, "—", "—", "—", "—", "—", "—", f"error: {msg}"))
            print(f"{label}: FAILED\n{traceback.format_exc(limit=6)}", flush=True)
        finally:
            student = opts = d = forward = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print("\n| mode | sine layers | canvas share trained | ms/step | body examples/s | × eager | × compiled | first step s | grad vs eager | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, kern, share, ms, ex, first, gtext, note in rows:
        vs_eager = vs_compiled = "—"
        if ms != "—":
            if eager_ms:
                vs_eager = f"{eager_ms / float(ms):.2f}"
            if compiled_ms:
                vs_compiled = f"{compiled_ms / float(ms):.2f}"
        print(f"| {mode} | {kern} | {share} | {ms} | {ex} | {vs_eager} | {vs_compiled} | {first} | {gtext} | {note} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
