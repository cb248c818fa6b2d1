"""`kyara pose`: render a character image (teacher) or a .kyara character (student) in given poses.

The command is thin over two functions usable from Python:

    from kyara.cli.pose import pose_image
    frames = pose_image("char.png", [Pose.preset("happy")])      # list of (512, 512, 4) uint8 sRGB RGBA

``iter_pose_images`` yields the same frames one at a time (for long sequences).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from kyara.character import DEFAULT_TEACHER, Character, is_student_path, load
from kyara.errors import KyaraError
from kyara.image import FORMATS, parse_color, save_image, tensor_to_rgba_u8
from kyara.pose import PARAMETERS, PRESETS, INDEX, Pose, PoseError, load_pose_sequence, stack


# -- Python API -----------------------------------------------------------------------------------
def as_pose_batch(poses: Pose | Sequence[Pose] | torch.Tensor) -> torch.Tensor:
    """A Pose, a list of Poses or an (N, 45) tensor → (N, 45) float32 tensor (poses validated)."""
    if isinstance(poses, Pose):
        return stack([poses])
    if isinstance(poses, torch.Tensor):
        batch = poses.detach().float().cpu().reshape(-1, len(PARAMETERS))
        return stack([Pose.from_vector(row.numpy()) for row in batch])
    poses = list(poses)
    if not poses:
        raise PoseError("no poses to render")
    return stack(poses)


def iter_pose_images(source, poses: Pose | Sequence[Pose] | torch.Tensor, *, teacher: str = DEFAULT_TEACHER,
                     weights: str | Path | None = None, device: str | None = "auto",
                     dtype: str | torch.dtype | None = None, batch_size: int = 4,
                     fit: bool = False) -> Iterator[np.ndarray]:
    """Yield one (512, 512, 4) uint8 sRGB straight-RGBA frame per pose, rendering `batch_size` at a time.

    source: an image path (posed by the THA3 teacher), a .kyara path (posed by its student), or an
    already loaded kyara.character.Character.
    """
    if batch_size < 1:
        raise KyaraError(f"--batch-size must be at least 1, got {batch_size}")
    batch = as_pose_batch(poses)
    character = source if isinstance(source, Character) else load(
        source, teacher=teacher, weights_dir=weights, device=device, dtype=dtype, fit=fit)
    for start in range(0, batch.shape[0], batch_size):
        images = character.render(batch[start:start + batch_size])  # (b, 4, 512, 512) model space
        for image in images:
            yield tensor_to_rgba_u8(image.cpu())


def pose_image(source, poses: Pose | Sequence[Pose] | torch.Tensor, *, teacher: str = DEFAULT_TEACHER,
               weights: str | Path | None = None, device: str | None = "auto",
               dtype: str | torch.dtype | None = None, batch_size: int = 4, fit: bool = False) -> list[np.ndarray]:
    """Render `source` in every pose → list of (512, 512, 4) uint8 sRGB straight-RGBA frames.
    See iter_pose_images for the arguments."""
    return list(iter_pose_images(source, poses, teacher=teacher, weights=weights, device=device, dtype=dtype,
                                 batch_size=batch_size, fit=fit))


# -- turning CLI arguments into poses and output paths ----------------------------------------------
def parse_set(text: str) -> tuple[str, float]:
    """'NAME=VALUE' → (name, value), validated against the parameter table."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise PoseError(f"malformed --set {text!r}: expected NAME=VALUE, e.g. --set head_y=0.5")
    if name not in INDEX:
        Pose(**{name: 0.0})  # raises the unknown-parameter error with suggestions
    p = PARAMETERS[INDEX[name]]
    try:
        number = float(value)
    except ValueError:
        raise PoseError(f"malformed --set {text!r}: {value!r} is not a number "
                        f"({name} takes a value in [{p.low:g}, {p.high:g}])") from None
    Pose(**{name: number})  # range check, naming the range
    return name, number


def build_poses(pose_file: str | Path | None = None, preset: str | None = None, intensity: float | None = None,
                sets: Sequence[str] = ()) -> tuple[list[Pose], bool]:
    """Poses from the CLI options → (poses, from_sequence_file). --set values are layered on top of
    the preset or of every pose in the file (they replace those parameters); nothing given → rest pose."""
    overrides = dict(parse_set(s) for s in sets)
    if intensity is not None and preset is None:
        raise PoseError("--intensity needs --preset")
    if pose_file is not None:
        poses = load_pose_sequence(pose_file)
        return [p.replace(**overrides) for p in poses], True
    base = Pose.preset(preset, 1.0 if intensity is None else intensity) if preset is not None else Pose()
    return [base.replace(**overrides)], False


def resolve_outputs(out: str | Path, count: int, pose_file: str | Path | None = None) -> list[Path]:
    """Output file per pose: a single file, a printf pattern (out_%04d.png) or a directory (frames/)."""
    text = str(out)
    if "%" in text:
        try:
            paths = [Path(text % i) for i in range(count)]
            if count > 1 and paths[0] == paths[1]:
                raise TypeError
        except (TypeError, ValueError):
            raise KyaraError(f"-o {text!r}: bad numbering pattern; use one like out_%04d.png") from None
    elif text.endswith(("/", "\\")) or Path(text).is_dir():
        paths = [Path(text) / f"{i:04d}.png" for i in range(count)]
    else:
        if count > 1:
            raise PoseError(f"{pose_file}: holds {count} poses but -o {text} names one file; "
                            "write a sequence with -o DIR/ or -o out_%04d.png")
        paths = [Path(text)]
    bad = sorted({p.suffix or "(none)" for p in paths if p.suffix.lower() not in FORMATS})
    if bad:
        raise KyaraError(f"-o {text}: unsupported output extension {bad[0]}; use one of {', '.join(FORMATS)}")
    return paths


# -- command ------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pose", help="render a character in a pose, a preset or a pose sequence",
        description="Render INPUT (a 512×512 RGBA character image, posed by the THA3 teacher, or a .kyara "
                    "character, posed by its distilled student) in one pose or a sequence of poses.")
    parser.add_argument("input", nargs="?", metavar="INPUT", help="character image (.png/.webp) or .kyara file")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--pose", metavar="FILE", help="JSON/YAML pose file: one mapping, or a list for a sequence")
    what.add_argument("--preset", metavar="NAME", help="named expression (see --list-presets)")
    parser.add_argument("--intensity", type=float, metavar="X", help="preset strength in [0, 1] (default 1)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="set one parameter (repeatable; layered over --preset/--pose)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="output .png/.webp/.jpg; for sequences a directory (frames/) or pattern (out_%%04d.png)")
    parser.add_argument("--teacher", default=DEFAULT_TEACHER, help="teacher for image inputs (default: %(default)s)")
    parser.add_argument("--weights", metavar="DIR", help="folder with the teacher's official weight files (a THA3 variant's folder, or the "
                             "five THA4 files for --teacher tha4)")
    parser.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", choices=["float32", "float16"],
                        help="compute dtype (default: the model's; float16 needs a CUDA GPU)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="poses per forward pass (default 4)")
    parser.add_argument("--student", choices=["auto", "lite", "full"], default="auto",
                        help="student renderer: lite (CPU-fast: coarse body grid, movable face pixels only; a one-time "
                             "~2 s face analysis), full, or auto (lite on the CPU from 60 poses on; default)")
    parser.add_argument("--fit", action="store_true", help="scale and pad a non-512×512 image to 512×512 (keeps aspect)")
    parser.add_argument("--background", default="transparent",
                        help="transparent, a colour name (green, blue, black, white, ...) or #rrggbb")
    parser.add_argument("--list-parameters", action="store_true", help="print the 45 pose parameters and exit")
    parser.add_argument("--list-presets", action="store_true", help="print the expression presets and exit")
    parser.set_defaults(func=run)


def print_parameters(file=None) -> None:
    print(f"{'idx':>3}  {'name':30s} {'group':24s} {'category':14s} range", file=file)
    for p in PARAMETERS:
        print(f"{p.index:>3}  {p.name:30s} {p.group:24s} {p.category:14s} [{p.low:g}, {p.high:g}]", file=file)


def print_presets(file=None) -> None:
    width = max(len(n) for n in PRESETS)
    for name, preset in PRESETS.items():
        values = ", ".join(f"{k}={v:g}" for k, v in preset.values.items()) or "(nothing set)"
        print(f"{name:{width}s}  {preset.description}", file=file)
        print(f"{'':{width}s}    {values}", file=file)


def run(args: argparse.Namespace) -> int:
    if args.list_parameters or args.list_presets:
        if args.list_parameters:
            print_parameters()
        if args.list_presets:
            print_presets()
        return 0
    if args.input is None:
        raise KyaraError("give an INPUT character image or .kyara file (or --list-parameters / --list-presets)")
    if args.output is None:
        raise KyaraError("give an output file with -o OUT.png (or -o DIR/ for a pose sequence)")
    # Validate everything cheap before loading any model.
    poses, _ = build_poses(args.pose, args.preset, args.intensity, args.sets)
    outputs = resolve_outputs(args.output, len(poses), args.pose)
    background = parse_color(args.background)
    if args.batch_size < 1:
        raise KyaraError(f"--batch-size must be at least 1, got {args.batch_size}")
    if is_student_path(args.input) and (args.weights or args.fit):
        print("kyara pose: note: --weights/--fit apply to image inputs; ignored for a character file", file=sys.stderr)
    character = load(args.input, teacher=args.teacher, weights_dir=args.weights, device=args.device,
                     dtype=args.dtype, fit=args.fit)
    if args.student != "full":
        from kyara.student.lite import use_student

        use_student(character, args.student, frames=len(poses))
    frames = iter_pose_images(character, poses, batch_size=args.batch_size)
    if len(poses) > 1:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(poses), unit="frame", desc="kyara pose", file=sys.stderr)
    for rgba, path in zip(frames, outputs):
        save_image(rgba, path, background=background)
    if len(outputs) == 1:
        print(outputs[0])
    else:
        print(f"wrote {len(outputs)} frames: {outputs[0]} … {outputs[-1]}")
    return 0
