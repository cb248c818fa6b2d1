"""Error types a user can cause; the CLI prints them as one line without a traceback.

The bottom of the layer table: this module imports nothing from kyara, so every module may raise
these (kyara.image and kyara.pose re-export ImageError and PoseError under their old homes).
"""
from __future__ import annotations

import os


class ImageError(ValueError):
    """An input image cannot be used. The message names the file and what was expected."""


class PoseError(ValueError):
    """A pose, pose file or parameter name/value is invalid. The message names the culprit."""


class KyaraError(ValueError):
    """Generic user-facing error (bad file, missing weights, bad option)."""


class WeightsError(KyaraError):
    """A weight file is missing, corrupt, or does not match the expected architecture."""


class CharacterFileError(KyaraError):
    """A .kyara character file (or THA4 character_model dir) is missing, corrupt or foreign."""


class DeviceMemoryError(KyaraError):
    """A job ran out of GPU memory; the message says how much the big allocations need and what to lower."""


class OutputError(KyaraError, OSError):
    """An output file could not be written (read-only or full filesystem, permission denied, a file
    where a folder should be). Also an OSError, so code that catches write failures keeps working."""

    @classmethod
    def writing(cls, path: os.PathLike | str, error: OSError) -> "OutputError":
        """One line naming the output path and the reason, e.g. '/mnt/ro/a.png: cannot write: Read-only
        file system'. The OS's file name (often a temporary or parent path) is left out: `path` is what
        the user asked for."""
        if isinstance(error, cls):
            return error
        reason = error.strerror or str(error) or type(error).__name__
        if isinstance(error, (FileExistsError, NotADirectoryError)):
            from pathlib import Path

            for parent in Path(path).parents:   # nearest first: the existing file blocking the folder
                if parent.exists():
                    if not parent.is_dir():
                        reason = f"{parent} is a file, not a folder"
                    break
        return cls(f"{os.fspath(path)}: cannot write: {reason}")


KNOWN_ERRORS: tuple[type[BaseException], ...] = (KyaraError, ImageError, PoseError, FileNotFoundError)


def describe_yaml_error(error: BaseException) -> str:
    """A YAML (or JSON) parse error in one line: 'PROBLEM at line L, column C' (PyYAML's own text spans
    several lines and quotes the input as "<unicode string>")."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())
