"""`kyara web CHARACTER.kyara -o site/`: a static folder that renders the character in the browser."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from kyara.cli import HelpFormatter

    p = subparsers.add_parser(
        "web", formatter_class=HelpFormatter,
        help="write a static web page that renders a character in the browser (no server)",
        description="Write a self-contained static folder (index.html, scripts, embedded weights) that renders "
                    "a distilled character in the browser with WebGPU or WebGL2, with sliders, presets and idle "
                    "motion. Open index.html from disk or serve the folder from any static host. The weights "
                    "also carry the CPU-lite student's plan (its movable-face analysis takes a few seconds here); "
                    "the page draws the full or the lite student by itself, ?student=full|lite in its address "
                    "picks one, ?render=webgl2|webgpu the backend.")
    p.add_argument("character", type=Path, help="a .kyara character file (a distilled student)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created)")
    p.add_argument("--float32", action="store_true",
                   help="store float32 weights instead of float16 (2.9 MB instead of 2.0 MB; no visible difference)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kyara.character import load_character
    from kyara.errors import KyaraError
    from kyara.web.site import build_site
    from kyara.web.weights import WebWeightsError

    character = load_character(args.character)
    if not character.is_student:
        raise KyaraError(f"{args.character}: only distilled (student) characters render in the browser")
    if args.output.exists() and not args.output.is_dir():
        raise KyaraError(f"-o {args.output}: exists and is not a folder")
    try:
        files = build_site(character, args.output, "float32" if args.float32 else "float16")
    except WebWeightsError as e:
        raise KyaraError(str(e)) from None
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} files ({size / 2**20:.1f} MiB) to {args.output}; open {args.output / 'index.html'}")
    return 0
