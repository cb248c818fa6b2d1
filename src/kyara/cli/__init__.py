"""`kyara` command line: builds the subcommand table from one module per subcommand, nothing else.

Each module in COMMANDS defines ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed args, returns an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `kyara --help` lists them.
COMMANDS = ["demo", "pose", "models", "distill", "eval", "export", "live", "speak", "stickers", "scene"]


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
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from kyara.errors import KNOWN_ERRORS

    try:
        return int(args.func(args) or 0)
    except KNOWN_ERRORS as e:
        print(f"kyara {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
