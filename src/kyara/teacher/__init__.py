"""Pretrained teachers (posers used as ground truth) and their registry.

``TEACHERS`` maps a user-facing name to a loader ``(weights_dir=None, device="cpu", dtype=None) → Teacher``;
``Teacher.load(name, ...)`` looks names up here.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from kyara.teacher.tha3 import PreparedImage, Teacher, TeacherOutputs, load_tha3

TEACHERS: dict[str, Callable[..., Teacher]] = {
    "tha3/separable_float": partial(load_tha3, "separable_float"),
    "tha3/standard_float": partial(load_tha3, "standard_float"),
    "tha3/separable_half": partial(load_tha3, "separable_half"),
    "tha3/standard_half": partial(load_tha3, "standard_half"),
}

__all__ = ["TEACHERS", "PreparedImage", "Teacher", "TeacherOutputs", "load_tha3"]
