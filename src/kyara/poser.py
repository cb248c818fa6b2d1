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


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """'auto'/None → cuda if available else cpu; otherwise the named device ('cpu', 'cuda', 'cuda:N',
    'mps' where PyTorch has it). Anything else, or a GPU this machine lacks, raises KyaraError
    naming the allowed values (never PyTorch's RuntimeError)."""
    from kyara.errors import KyaraError

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError, TypeError):
            raise KyaraError(f"--device {device}: unknown device; use {DEVICE_CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise KyaraError(f"--device {device} was requested but no CUDA GPU is available; use --device cpu "
                             "(or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise KyaraError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise KyaraError(f"--device {device}: Apple MPS is not available in this PyTorch; use {DEVICE_CHOICES}")
    elif dev.type != "cpu":
        raise KyaraError(f"--device {device}: kyara does not run on {dev.type} devices; use {DEVICE_CHOICES}")
    return dev


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "half": torch.float16, "float": torch.float32}


def pick_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """A dtype name (float32, float16, bfloat16, ...) → torch.dtype; None → float32.

    With `device` given, half precision on the CPU is refused: there the THA3 teacher gives a fully
    transparent frame (issue 12) and the bundled student NaN pixels (measured, torch 2.13 CPU), silent
    garbage rather than a slower render. The cause: torch's CPU ``grid_sample`` in float16 / bfloat16 returns
    non-finite values at some in-range sample points (31 of 294,912 in bfloat16, 327 in float16 for random
    grids in [-1.2, 1.2], 2026-12-05), and every warp in the teacher and the student is a grid_sample."""
    from kyara.errors import KyaraError

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        picked = dtype
    else:
        try:
            picked = DTYPES[dtype]
        except KeyError:
            raise KyaraError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}") from None
    if device is not None and pick_device(device).type == "cpu" and picked in (torch.float16, torch.bfloat16):
        name = str(picked).removeprefix("torch.")
        raise KyaraError(f"--dtype {name} needs a CUDA GPU (on the CPU it renders garbage); use --dtype float32 "
                         "on the CPU")
    return picked
