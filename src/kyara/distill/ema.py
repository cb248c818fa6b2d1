"""WeightAverage: an exponential moving average of the student's weights (Polyak averaging).

Why: a distillation run sits at each learning rate's noise floor (in a 10-minute parts run every gain in held-out
PSNR came right after an LR drop, docs/benchmarks.md session 13); the average of the recent weights is what a
smaller step would have reached, without giving up the larger step's progress. Training never reads the
average: it is used for the progress bar's PSNR and written into the final character.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

# Warm-up of the decay: β_t = min(β, (1 + t) / (WARMUP + t)), so that a short run (or the first steps of a long
# one) averages its recent weights, not its random start.
WARMUP = 10


class WeightAverage:
    """An average of `params` (a student's parameters, updated in place by the optimizers): after each step,
    average ← average + (1 − β_t) · (weights − average). decay β ∈ (0, 1): the average spans ~1 / (1 − β) steps."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]], decay: float, updates: int = 0):
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage decay must be in (0, 1), got {decay}")
        named = list(named_params)
        self.names = [n for n, _ in named]
        self.live = [p.detach() for _, p in named]          # views: they see the optimizers' in-place updates
        self.average = [p.clone() for p in self.live]
        self.decay, self.updates = decay, updates

    def beta(self) -> float:
        return min(self.decay, (1 + self.updates) / (WARMUP + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step's update: a few fused kernels, no sync."""
        torch._foreach_lerp_(self.average, self.live, 1.0 - self.beta())
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the average inside the block, their own values again after it."""
        saved = [p.clone() for p in self.live]
        self.copy_to_weights()
        try:
            yield
        finally:
            torch._foreach_copy_(self.live, saved)

    @torch.no_grad()
    def copy_to_weights(self) -> None:
        torch._foreach_copy_(self.live, self.average)

    def tensors(self, prefix: str = "average.") -> dict[str, torch.Tensor]:
        """For a checkpoint: prefix + parameter name → the average (CPU)."""
        return {prefix + n: a.detach().cpu().contiguous() for n, a in zip(self.names, self.average)}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor], prefix: str = "average.") -> None:
        """The average from a checkpoint's tensors (the count of updates comes with the constructor)."""
        missing = [prefix + n for n in self.names if prefix + n not in tensors]
        if missing:
            raise KeyError(f"checkpoint has no weight average for {', '.join(missing[:3])}")
        for n, a in zip(self.names, self.average):
            a.copy_(tensors[prefix + n])
