"""The Poser contract shared by teachers and students, and the Frame handed to sinks.

A poser maps (character image, pose batch) → posed images, all in model space
(see ``kyara.image``): images (N, 4, 512, 512) float32 linear RGB in [-1, 1], straight alpha;
poses (N, 45) float32 in THA3 order. Swapping teacher for student is one argument.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from kyara.pose import Pose


@runtime_checkable
class Poser(Protocol):
    name: str            # e.g. "tha3/separable_float" or "student"
    device: torch.device
    dtype: torch.dtype

    def pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """image: (4, H, W) or (N, 4, H, W); poses: (N, 45) → (N, 4, H, W) posed images, model space."""
        ...


@dataclass(frozen=True)
class Frame:
    """One rendered frame: (H, W, 4) uint8 sRGB straight RGBA plus where it came from."""
    rgba: "object"                 # numpy.ndarray (H, W, 4) uint8
    pose: Pose
    poser: str
    timestamp: float = field(default_factory=time.monotonic)


def pick_device(device: str | None = None) -> torch.device:
    """'auto'/None → cuda if available else cpu; otherwise the named device, with a clear error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    return dev


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "half": torch.float16, "float": torch.float32}


def pick_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None
