"""One-euro filter (Casiez, Roussel & Vogel, CHI 2012): low jitter when still, low lag when moving.

The cutoff frequency rises with the (smoothed) speed of the signal: cutoff = min_cutoff + beta·|dx/dt|.
Works element-wise on numpy arrays, so one filter can smooth a whole pose vector.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(dt: float, cutoff):
    """Smoothing factor of a first-order low-pass with the given cutoff (Hz) sampled every dt s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Stateful filter; call with successive (x, t) where t is in seconds and increasing.

    min_cutoff (Hz): smoothing at rest (lower = smoother, more lag). beta: how fast the cutoff
    grows with speed (higher = less lag on fast moves). d_cutoff (Hz): smoothing of the speed.
    A call with t not after the previous one returns the previous output unchanged.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise ValueError(f"one-euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None
        self._t: float | None = None

    def __call__(self, x, t: float):
        scalar = not isinstance(x, np.ndarray)
        xa = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or (self._x.shape != xa.shape):
            self._x, self._dx, self._t = xa.copy(), np.zeros_like(xa), float(t)
            return float(xa) if scalar else xa.copy()
        dt = float(t) - self._t
        if not dt > 0.0:
            return float(self._x) if scalar else self._x.copy()
        a_d = _alpha(dt, self.d_cutoff)
        dx = a_d * ((xa - self._x) / dt) + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(dx)
        a = _alpha(dt, cutoff)
        out = a * xa + (1.0 - a) * self._x
        self._x, self._dx, self._t = out, dx, float(t)
        return float(out) if scalar else out.copy()
