"""Pretrained teachers (posers used as ground truth) and their registry.

``TEACHERS`` maps a user-facing name to a loader ``(weights_dir=None, device="cpu", dtype=None) → Teacher``;
``load_teacher(name, ...)`` looks names up here. The registry lives in this package module only: the
teacher implementations (tha3.py) never import it, so the package and its modules form no import cycle.
"""
from __future__ import annotations

import difflib
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from kyara.errors import KyaraError
from kyara.teacher.tha3 import PreparedImage, Teacher, TeacherOutputs, load_tha3
from kyara.teacher.tha4 import load_tha4

TEACHERS: dict[str, Callable[..., Teacher]] = {
    "tha3/separable_float": partial(load_tha3, "separable_float"),
    "tha3/standard_float": partial(load_tha3, "standard_float"),
    "tha3/separable_half": partial(load_tha3, "separable_half"),
    "tha3/standard_half": partial(load_tha3, "standard_half"),
    "tha4": load_tha4,   # official THA4 weights (CC BY-NC), downloaded by hand: --weights DIR
}


def registered(name: str) -> Callable[..., Teacher]:
    """The loader registered as `name`; a KyaraError naming the choices (and the closest one) otherwise."""
    if name not in TEACHERS:
        close = difflib.get_close_matches(name, list(TEACHERS), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise KyaraError(f"unknown teacher {name!r}; choose one of: {', '.join(TEACHERS)}.{hint}")
    return TEACHERS[name]


def load_teacher(name: str, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None) -> Teacher:
    """Load a registered teacher from its official weight files.

    weights_dir: directory of the weight files; None → the variant's default (``weights.default_weights_dir``).
    dtype: None → the variant's own (float16 for *_half).
    """
    return registered(name)(weights_dir=weights_dir, device=device, dtype=dtype)


__all__ = ["TEACHERS", "PreparedImage", "Teacher", "TeacherOutputs", "load_teacher", "load_tha3", "registered"]
