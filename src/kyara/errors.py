"""Error types a user can cause; the CLI prints them as one line without a traceback."""
from __future__ import annotations

from kyara.image import ImageError
from kyara.pose import PoseError


class KyaraError(ValueError):
    """Generic user-facing error (bad file, missing weights, bad option)."""


class WeightsError(KyaraError):
    """A weight file is missing, corrupt, or does not match the expected architecture."""


class CharacterFileError(KyaraError):
    """A .kyara character file (or THA4 character_model dir) is missing, corrupt or foreign."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (KyaraError, ImageError, PoseError, FileNotFoundError)
