"""`kyara stickers`: an expression sticker pack. Thin over ``kyara.produce.stickers.make_stickers``."""
from __future__ import annotations

import argparse

from kyara.produce.stickers import StickerConfig
from kyara.cli import HelpFormatter

DEFAULTS = StickerConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stickers", help="expression sticker pack: transparent PNGs, animated WebP/GIF loops, a contact sheet",
        description="Render 16 expressions (the presets' names, pushed further, plus head angles and combinations) as "
                    "a transparent PNG, an animated WebP and a GIF loop (neutral → expression → hold with a blink → "
                    "back), and a labelled contact sheet. Stickers show the bust (head and shoulders) unless "
                    "--full-body; the pack of 16 is about 4 MB at the default size.",
        formatter_class=HelpFormatter)
    p.add_argument("character", help="a .kyara character file (fast student) or an image (slow THA3 teacher)")
    p.add_argument("-o", "--output", default="stickers", help="output directory")
    p.add_argument("--only", nargs="+", metavar="NAME", default=None, help="render only these expressions")
    p.add_argument("--size", type=int, default=DEFAULTS.size, help="sticker size in pixels (square)")
    p.add_argument("--fps", type=float, default=DEFAULTS.fps, help="animation frames per second")
    p.add_argument("--full-body", dest="framing", action="store_const", const="full", default=DEFAULTS.framing,
                   help="show the whole 512×512 frame instead of the bust (the face is then small)")
    p.add_argument("--no-animations", dest="animations", action="store_false", help="PNGs and contact sheet only")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="poses rendered per model call")
    p.add_argument("--student", choices=["auto", "lite", "full"], default="auto",
                   help="student renderer: lite (CPU-fast plan: coarse body grid, movable face pixels only; ~40 dB from full), full, or auto (lite on the CPU; default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kyara.errors import KyaraError
    from kyara.character import load
    from kyara.produce.stickers import make_stickers

    if not 16 <= args.size <= 2048:
        raise KyaraError(f"--size must be in 16..2048, got {args.size}")
    if not 0 < args.fps <= 60 or args.batch_size < 1:
        raise KyaraError(f"--fps must be in (0, 60] and --batch-size at least 1, got --fps {args.fps:g} "
                         f"--batch-size {args.batch_size}")
    config = StickerConfig(fps=args.fps, size=args.size, batch_size=args.batch_size, animations=args.animations,
                           framing=args.framing)
    from kyara.student.lite import use_student

    written = make_stickers(use_student(load(args.character, device=args.device), args.student), args.output, config, names=args.only,
                            progress=not args.quiet)
    print(f"{sum(len(v) for v in written.values())} files in {args.output} ({len(written) - 1} expressions)")
    return 0
