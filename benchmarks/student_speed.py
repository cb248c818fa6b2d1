"""Student frames/s at 512×512: batches of poses of one character.

    python benchmarks/student_speed.py [--device cpu|cuda] [--character FILE] [--frames N] [--batches 1,4,16]
    python benchmarks/student_speed.py --kernel-modes fp32,fp16,fp16+graph,triton-fp16,triton-fp16+graph [--batches 1,16,64]

Prints a markdown table: one character, B poses per call (fp16/bf16 rows on CUDA report the max |Δ|
against fp32 in model space and the PSNR of the low-precision output vs fp32).

--kernel-modes (CUDA) prints instead one row per mode and batch, side by side in one process: the
student's sine layers as PyTorch ops ("fp32", "fp16", Student.kernels = "torch") or as the fused Triton
kernels ("triton-fp32", "triton-fp16", kyara.nn.fused_siren), eagerly or replayed from a CUDA graph
("+graph": the whole Student.pose call captured once with static inputs; "-layers": the fused kernels
layer by layer, without the one-kernel-per-level path, fused_siren.chains), with ms/frame, frames/s and
the PSNR / max |Δ| of the output against the fp32 PyTorch output for the same poses. Each mode runs
in its own copy of the student; a failing mode prints its error in its row.
"""
from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from kyara.character import SAMPLE_CHARACTER, load_character, random_character
from kyara.pose_sampler import sample_poses
from kyara.eval.metrics import psnr
from kyara.student.graphed import capture_graph


def timed(fn, frames: int, device: torch.device) -> float:
    """Seconds per call of fn, after warm-up."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(frames):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / frames


KERNEL_MODES = {   # name → (Student.kernels, dtype, CUDA graph, whole-level kernels where they fit[, lite body grid])
    "fp32": ("torch", torch.float32, False, True),
    "fp32+graph": ("torch", torch.float32, True, True),
    "fp16": ("torch", torch.float16, False, True),
    "fp16+graph": ("torch", torch.float16, True, True),
    "triton-fp32": ("triton", torch.float32, False, True),
    "triton-fp16": ("triton", torch.float16, False, True),
    "triton-fp16+graph": ("triton", torch.float16, True, True),
    "triton-fp16-layers": ("triton", torch.float16, False, False),
    "triton-fp16-layers+graph": ("triton", torch.float16, True, False),
    # the lite plan's frames in batched torch ops (LiteStudent.reference_pose): the body network on a
    # coarse grid, upsampled; a candidate GPU fast path for issue 16 (47-53 dB from the full student at 256)
    "lite256-fp32": ("torch", torch.float32, False, True, 256),
    "lite256-fp16+graph": ("torch", torch.float16, True, True, 256),
    "lite128-fp16+graph": ("torch", torch.float16, True, True, 128),
}
# Render paths besides Student.pose (a prefix of the mode name; the rest is looked up in KERNEL_MODES):
# "modules-": the modules' torch code called directly (FaceMorpher.forward, BodyMorpher.features_at: what
# Student.pose runs on a GPU); "batched-": Student.renderer(), the batched evaluator, eager; "compiled-" /
# "autotuned-": Student.renderer(compile=...) (inductor's default mode / "max-autotune-no-cudagraphs");
# "overlap-": Student.renderer(overlap=True), the face network on a side CUDA stream; "pad1-" (after those):
# the batched evaluator without width padding (Student.BATCHED_PAD = 1).
PATHS = ("modules-", "batched-", "compiled-", "autotuned-", "overlap-", "pad1-")


def split_mode(mode: str) -> tuple[list[str], str]:
    """'compiled-pad1-fp16+graph' → (['compiled-', 'pad1-'], 'fp16+graph')."""
    prefixes = []
    while True:
        hit = next((p for p in PATHS if mode.startswith(p)), None)
        if hit is None:
            return prefixes, mode
        prefixes.append(hit)
        mode = mode[len(hit):]


def modules_render(student, image, poses):
    """Student.pose through the modules' torch code (no batched evaluator, no fused kernels)."""
    from kyara.pose import FACE_ALL

    with torch.inference_mode():
        pixels = student.body_pixels()
        return student.compose(image, student.face_morpher(poses[:, FACE_ALL]),
                               student.body_morpher.features_at(poses, pixels), pixels).image


graphed = capture_graph   # the library's (kyara.student.graphed), as GraphedRenderer uses it


def kernel_table(ch, device: torch.device, modes: list[str], batches: list[int], frames: int) -> None:
    """The --kernel-modes table (see the module docstring)."""
    import traceback

    from kyara.nn import fused_siren

    for mode in modes:
        if split_mode(mode)[1] not in KERNEL_MODES:
            raise SystemExit(f"student_speed.py: unknown kernel mode {mode!r} (choose from {', '.join(KERNEL_MODES)}, "
                             f"optionally after {', '.join(PATHS)})")
    base = ch.poser
    base.kernels = "torch"
    image = ch.image.to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"student speed by kernel mode on {name}, torch {torch.__version__}, character {ch.name}, "
          f"triton usable: {fused_siren.triton_available(device)}, TF32 matmuls: {torch.backends.cuda.matmul.allow_tf32}\n")
    print("| mode | batch | ms/frame | frames/s | PSNR vs fp32 (dB) | max abs diff vs fp32 | note |")
    print("|---|---|---|---|---|---|---|", flush=True)
    refs = {}
    for b in batches:
        poses = sample_poses(b, torch.Generator().manual_seed(b)).to(device)
        refs[b] = (poses, modules_render(base, image, poses).float())   # the fp32 modules path: the reference
    for mode in modes:
        paths, base_mode = split_mode(mode)
        kernels, dtype, use_graph, level_kernels, *lite_grid = KERNEL_MODES[base_mode]
        for b in batches:
            poses, ref = refs[b]
            try:
                with fused_siren.chains(level_kernels):
                    student = copy.deepcopy(base).to(dtype)
                    student.kernels = kernels
                    img, p = image.to(dtype), poses.to(dtype)
                    if "pad1-" in paths:
                        student.BATCHED_PAD = 1
                    render = lambda s=student, i=img, q=p: s.pose(i, q)   # noqa: E731
                    if "modules-" in paths:
                        render = lambda s=student, i=img, q=p: modules_render(s, i, q)   # noqa: E731
                    if {"batched-", "compiled-", "autotuned-", "overlap-"} & set(paths):
                        t0 = time.perf_counter()
                        how = ("max-autotune-no-cudagraphs" if "autotuned-" in paths else
                               "default" if "compiled-" in paths else None)
                        fn = student.renderer(compile=how, overlap="overlap-" in paths)
                        with torch.inference_mode():
                            fn(img, p)
                        if how:
                            print(f"<!-- {mode} batch {b}: compiled in {time.perf_counter() - t0:.0f} s -->", flush=True)
                        render = lambda f=fn, i=img, q=p: f(i, q)   # noqa: E731
                    if lite_grid:
                        from kyara.student.lite import LiteConfig, LiteStudent
                        lite = LiteStudent(student, LiteConfig(body_grid=lite_grid[0]))
                        render = lambda s=lite, i=img, q=p: s.reference_pose(i, q)   # noqa: E731
                    with torch.inference_mode():
                        fn = graphed(render) if use_graph else render
                        out = fn().float()
                    n = max(10, frames * 4 // b)
                    with torch.inference_mode():
                        sec = timed(fn, n, device)
                diff = (out - ref).abs().max().item()
                q = float(psnr(out, ref).mean()) if not torch.equal(out, ref) else float("inf")
                note = "" if fused_siren._CHAIN_DISABLED is None else f"level kernels off: {fused_siren._CHAIN_DISABLED[:120]}"
                print(f"| {mode} | {b} | {sec * 1000 / b:.3f} | {b / sec:.0f} | {q:.1f} | {diff:.2e} | {note} |", flush=True)
            except Exception as e:   # noqa: BLE001 - one failing mode must not lose the others
                msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                print(f"| {mode} | {b} | — | — | — | — | error: {msg} |", flush=True)
                traceback.print_exc(limit=4)
            finally:
                student = fn = None
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--character", default=str(SAMPLE_CHARACTER))
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--kernel-modes", default="", help="comma list of " + ",".join(KERNEL_MODES))
    args = ap.parse_args()
    device = torch.device(args.device)
    try:
        ch = load_character(args.character, device=str(device))
    except Exception:
        ch = random_character(0, device=str(device))
    if args.kernel_modes:
        kernel_table(ch, device, args.kernel_modes.split(","), [int(x) for x in args.batches.split(",")], args.frames)
        return
    student = ch.poser
    image = ch.image.to(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'} ({torch.get_num_threads()} threads)"
    print(f"student speed on {name}, torch {torch.__version__}, character {ch.name}\n")
    print("| dtype | batch | ms/batch | frames/s | max abs diff vs fp32 | PSNR vs fp32 (dB) |")
    print("|---|---|---|---|---|---|")
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if device.type == "cuda" else [])
    for b in [int(x) for x in args.batches.split(",")]:
        poses = sample_poses(b, torch.Generator().manual_seed(b)).to(device)
        ref = student.pose(image, poses).float()
        for dt in dtypes:
            s = student.to(dt)
            img = image.to(dt)
            p = poses.to(dt)
            out = s.pose(img, p).float()
            frames = max(3, args.frames // b) if device.type == "cuda" else max(2, args.frames // (4 * b))
            sec = timed(lambda: s.pose(img, p), frames, device)
            diff = (out - ref).abs().max().item()
            q = float(psnr(out, ref).mean()) if dt != torch.float32 else float("inf")
            print(f"| {str(dt).replace('torch.', '')} | {b} | {sec * 1000:.2f} | {b / sec:.1f} | {diff:.2e} | {q:.1f} |")
        student.to(torch.float32)


if __name__ == "__main__":
    main()
