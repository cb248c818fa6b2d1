"""`kyara scene`: several characters from a scene file → one video. Thin over ``kyara.produce.scene.render_scene``."""
from __future__ import annotations

import argparse
from kyara.cli import HelpFormatter


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scene", help="two or more characters talking on a background, from a YAML scene file",
        description="Render a scene file (schema: docs/produce.md, example: examples/scene.yaml): characters placed "
                    "on a background colour or image, each with an audio track and/or a pose script; whoever speaks "
                    "turns toward the other. Audio tracks are mixed into .mp4/.webm outputs. Paths in the file are "
                    "relative to it and must stay inside its folder; `file: sample` is the bundled sample character.",
        formatter_class=HelpFormatter)
    p.add_argument("scene", help="scene YAML file")
    p.add_argument("-o", "--output", default=None, help="output file (default: <scene file name>.mp4 in the current folder)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--student", choices=["auto", "lite", "full"], default="auto",
                   help="student renderer: lite (CPU-fast: coarse body grid, movable face pixels only), full, "
                        "or auto (lite on the CPU; default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kyara.produce.scene import render_scene

    output = args.output or f"{Path(args.scene).stem}.mp4"
    print(render_scene(args.scene, output, device=args.device, progress=not args.quiet,
                       student=args.student))
    return 0
