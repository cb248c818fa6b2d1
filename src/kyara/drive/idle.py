""""Alive when idle": random blinks, breathing and a gentle head/body sway, as a function of time.

sample(t) is cheap and deterministic for a given seed and sequence of times. Times are
time.monotonic() seconds (any increasing clock works; the schedule starts at the first sample).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

# (parameter, amplitude) of the sway; values are small fractions of the ±1 range (±15°/±10°).
_SWAY = (("head_x", 0.05), ("head_y", 0.08), ("neck_z", 0.06), ("body_y", 0.05), ("body_z", 0.04))
_SWAY_FREQS_HZ = (0.07, 0.11, 0.17)  # incommensurate, so the motion never visibly repeats
IDLE_PARTS = ("blink", "breathing", "sway")  # the parts IdleConfig switches on/off


@dataclass(frozen=True)
class IdleConfig:
    blink: bool = True
    breathing: bool = True
    sway: bool = True
    blink_interval_s: tuple[float, float] = (2.0, 6.0)  # uniform random gap between blinks
    blink_duration_s: float = 0.15                      # close + open
    double_blink_probability: float = 0.1
    breaths_per_min: float = 20.0                       # THA3 puppeteer default
    sway_scale: float = 1.0                             # multiplies every sway amplitude

    def __post_init__(self) -> None:
        lo, hi = self.blink_interval_s
        if not 0 < lo <= hi:
            raise ValueError(f"blink_interval_s must be (min, max) with 0 < min <= max, got {self.blink_interval_s}")
        if not 0 < self.blink_duration_s < lo:
            raise ValueError("blink_duration_s must be > 0 and shorter than the minimum blink interval")
        if not 0 <= self.breaths_per_min <= 60:
            raise ValueError(f"breaths_per_min must be in [0, 60], got {self.breaths_per_min}")
        if not 0 <= self.sway_scale <= 5:
            raise ValueError(f"sway_scale must be in [0, 5], got {self.sway_scale}")


class IdleMotion:
    """Idle animation. sample(t) → {eye_wink_left/right, breathing, head_x, head_y, neck_z, body_y,
    body_z} for the enabled parts (absent when disabled). Blink: 0→1→0 over blink_duration_s
    (sin shape); breathing: (1 − cos 2πft)/2 in [0, 1]; sway: sums of slow sines, |value| ≤ 0.1.
    """

    def __init__(self, config: IdleConfig = IdleConfig(), seed: int = 0) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._phases = [[self._rng.uniform(0, 2 * math.pi) for _ in _SWAY_FREQS_HZ] for _ in _SWAY]
        self._blinks: list[float] = []   # start times, increasing
        self._next_blink: float | None = None

    def _schedule_until(self, t: float) -> None:
        cfg = self.config
        if self._next_blink is None:
            self._next_blink = t + self._rng.uniform(*cfg.blink_interval_s)
        while self._next_blink <= t:
            start = self._next_blink
            self._blinks.append(start)
            gap = self._rng.uniform(*cfg.blink_interval_s)
            if self._rng.random() < cfg.double_blink_probability:
                self._blinks.append(start + 2.0 * cfg.blink_duration_s)
                gap += 2.0 * cfg.blink_duration_s
            self._next_blink = start + gap
        # Forget blinks long past (keeps memory bounded on long runs).
        horizon = t - 2.0 * cfg.blink_interval_s[1]
        while len(self._blinks) > 4 and self._blinks[0] < horizon:
            self._blinks.pop(0)

    def blink_times(self, until: float) -> list[float]:
        """Blink start times scheduled up to `until` (for tests and UIs)."""
        self._schedule_until(until)
        return [b for b in self._blinks if b <= until]

    def _blink_value(self, t: float, since: float) -> float:
        """sin(π·u), u = time into the blink / its duration; 1 (closed) if a blink's middle is in (since, t]."""
        self._schedule_until(t)
        d = self.config.blink_duration_s
        value = 0.0
        for start in reversed(self._blinks):
            if start + d < since - 1.0:
                break
            if since < start + d / 2 <= t:
                return 1.0
            if start <= t <= start + d:
                value = max(value, math.sin(math.pi * (t - start) / d))
        return value

    def sample(self, t: float, since: float | None = None) -> dict[str, float]:
        """Values at time t. since (<= t): the time of the last frame shown; blinks are latched: one
        whose middle (eyes closed) passed in (since, t] shows closed, so a blink between two frames of
        a slow renderer still closes the eyes fully in one of them. None: no latching (the value at t)."""
        cfg = self.config
        out: dict[str, float] = {}
        if cfg.blink:
            v = self._blink_value(t, t if since is None else min(since, t))
            out["eye_wink_left"] = out["eye_wink_right"] = v
        if cfg.breathing:
            f = cfg.breaths_per_min / 60.0
            out["breathing"] = (1.0 - math.cos(2.0 * math.pi * f * t)) / 2.0 if f > 0 else 0.0
        if cfg.sway:
            for (name, amp), phases in zip(_SWAY, self._phases):
                s = sum(math.sin(2 * math.pi * fr * t + ph) for fr, ph in zip(_SWAY_FREQS_HZ, phases))
                out[name] = max(-1.0, min(1.0, cfg.sway_scale * amp * s / len(_SWAY_FREQS_HZ)))
        return out
