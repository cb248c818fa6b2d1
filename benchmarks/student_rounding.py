"""How much a student's frames lose to float16 weights: the browser's shaders read float16 weights, and a
better-trained student (larger weights, which its sine layers amplify) loses more. Prints one table, one column a
student, on this machine's CPU (and its WebGPU adapter through wgpu, if there is one).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/student_rounding.py OLD.kyara NEW.kyara [--poses 20] [--full-poses 0,2,12,18]

Rows: the largest weight of each network; frame PSNR (8-bit RGBA, against the float32 student) with the weights
rounded to float16 and float32 maths, over the same fixed poses as the browser tests (kyara.web.poses.exactness_poses);
then the WGSL lite student against PyTorch's lite student over all the poses and the WGSL full student against
PyTorch's over --full-poses (llvmpipe takes seconds a frame). Issue 14's browser bar is 45 dB.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from kyara.character import load_character
from kyara.image import tensor_to_rgba_u8
from kyara.web.poses import exactness_poses


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def frames(character, poses: np.ndarray) -> list[np.ndarray]:
    return [tensor_to_rgba_u8(character.render(torch.from_numpy(p)[None])[0]) for p in poses]


def span(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f} dB"


def measure(path: str, poses: np.ndarray, full_poses: list[int], wgsl: bool) -> dict[str, str]:
    character = load_character(path)
    student = character.poser
    row = {
        "body max \\|w\\|": f"{max(p.abs().max().item() for n, p in student.body_morpher.named_parameters() if 'weight' in n):.3f}",
        "face max \\|w\\|": f"{max(p.abs().max().item() for n, p in student.face_morpher.named_parameters() if 'weight' in n):.3f}",
    }
    reference = frames(character, poses)
    rounded = copy.copy(character)
    rounded.poser = copy.deepcopy(student)
    with torch.no_grad():
        for p in rounded.poser.parameters():
            p.copy_(p.half().float())
    row["float16 weights, float32 maths (full student)"] = span(
        [psnr_u8(a, b) for a, b in zip(frames(rounded, poses), reference)])
    if wgsl:
        from kyara.student.lite import use_student
        from kyara.web.weights import parse_web_bytes, student_to_web_bytes
        from kyara.web.wgsl import WgslStudent, adapter

        gpu = adapter()
        full = WgslStudent(parse_web_bytes(student_to_web_bytes(character, lite=False)), gpu, lite=False)
        row[f"WGSL full vs PyTorch full, poses {','.join(map(str, full_poses))}"] = span(
            [psnr_u8(full.render(poses[i]), reference[i]) for i in full_poses])
        lite_character = use_student(load_character(path), "lite")      # as tests/test_web_wgsl.py draws it
        lite = WgslStudent(parse_web_bytes(student_to_web_bytes(lite_character, lite=True)), gpu, lite=True)
        row[f"WGSL lite vs PyTorch lite, {len(poses)} poses"] = span(
            [psnr_u8(lite.render(p), r) for p, r in zip(poses, frames(lite_character, poses))])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("students", nargs="+", help=".kyara files, one column each")
    parser.add_argument("--poses", type=int, default=20, help="fixed poses (default 20, as the browser tests)")
    parser.add_argument("--full-poses", default="0,2,12,18", help="which of them the WGSL full student renders")
    parser.add_argument("--no-wgsl", action="store_true", help="skip the WebGPU rows")
    args = parser.parse_args()
    poses = exactness_poses(args.poses)
    full_poses = [int(i) for i in args.full_poses.split(",") if i]
    wgsl = not args.no_wgsl
    if wgsl:
        try:
            from kyara.web.wgsl import adapter
            wgsl = adapter() is not None
        except ImportError:
            wgsl = False
    columns = [measure(p, poses, full_poses, wgsl) for p in args.students]
    print("| measure | " + " | ".join(args.students) + " |")
    print("|---|" + "---|" * len(args.students))
    for key in columns[0]:
        print(f"| {key} | " + " | ".join(c.get(key, "—") for c in columns) + " |")


if __name__ == "__main__":
    main()
