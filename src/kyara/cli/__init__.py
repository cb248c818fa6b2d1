"""`kyara` command line: builds the subcommand table from one module per subcommand, nothing else.

Each module in COMMANDS defines ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed args, returns an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order `kyara --help` lists them.
COMMANDS = ["demo", "pose", "models", "distill", "eval", "export", "live", "speak", "stickers", "scene", "web", "farm"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not for on/off flags (``--no-browser`` is not "default: True") or unset options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


class UserError(Exception):
    """An error caused by user input: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kyara",
        description="Pose, distill and drive anime characters from a single image.",
    )
    from kyara import __version__

    parser.add_argument("--version", action="version", version=f"kyara {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"kyara.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"kyara.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:   # reported by the subcommand's parser: "kyara pose: error: unrecognized arguments: ..."
        subcommand_parser(parser, getattr(args, "command", None)).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from kyara.errors import KNOWN_ERRORS

    debug = os.environ.get("KYARA_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KNOWN_ERRORS as e:
        if debug:
            raise
        end_progress_bars()
        print(f"kyara {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        # Last resort for OS failures no writer turned into a KyaraError (disk full, permission denied, ...):
        # they are the machine's state, not a bug. Anything else (a real bug) keeps its traceback.
        if debug:
            raise
        end_progress_bars()
        print(f"kyara {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def subcommand_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand `command` (e.g. ``pose``), or the top-level one if there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def end_progress_bars() -> None:
    """Close any tqdm bar an error interrupted, so the error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        try:
            bar.close()
        except Exception:   # a half-torn-down bar must not hide the real error
            pass


def one_line(message: str) -> str:
    """An error message as one line: a multi-line one (e.g. a VideoError quoting ffmpeg's last lines) has
    its lines joined with ' | ', so the report stays one line and keeps the detail."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    return f"{lines[0]} {' | '.join(lines[1:])}"


def describe_os_error(e: OSError) -> str:
    """'PATH: reason' for an OSError (e.g. '/mnt/usb/a.mp4: No space left on device')."""
    reason = e.strerror or str(e) or type(e).__name__
    return f"{e.filename}: {reason}" if e.filename else reason
