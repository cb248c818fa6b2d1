"""The pose-source contract: anything that turns outside input into (some of the) pose parameters.

Clock: every time in kyara.drive (``now``, ``SourceSample.timestamp``, ``last_packet_time``) is
``time.monotonic()`` seconds, so sources and the mixer agree without wall-clock jumps.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from kyara.pose import INDEX, NAMES, NUM_PARAMETERS, PoseError


class ProtocolError(ValueError):
    """A network message is malformed (bad syntax, wrong type, non-finite or absurd value).

    Parsers raise only this; receivers catch it, drop the packet and count it.
    """


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class SourceSample:
    """What a source says right now.

    values: (45,) float64 in THA3 order (kyara.pose.NAMES); where ``mask`` is set, inside each
        parameter's range (the mixer clamps, and drops non-finite values, anyway).
    mask: (45,) bool, the parameters this source drives; the others are left to the layers below.
    timestamp: monotonic time (s) the underlying input arrived; the mixer fades a source whose
        newest sample grows old.
    """

    values: np.ndarray
    mask: np.ndarray
    timestamp: float

    @classmethod
    def from_dict(cls, values: Mapping[str, float], timestamp: float) -> "SourceSample":
        """Parameter name → value (how mappers such as arkit_to_pose_values write them); PoseError
        for an unknown name."""
        vec, mask = np.zeros(NUM_PARAMETERS), np.zeros(NUM_PARAMETERS, dtype=bool)
        for name, v in values.items():
            if name not in INDEX:
                raise PoseError(f"pose source value for unknown parameter {name!r}")
            vec[INDEX[name]], mask[INDEX[name]] = v, True
        return cls(vec, mask, float(timestamp))

    def as_dict(self) -> dict[str, float]:
        """The driven parameters by name (for UIs and tests)."""
        return {NAMES[i]: float(self.values[i]) for i in np.flatnonzero(self.mask)}


class PoseSource(abc.ABC):
    """A named producer of SourceSamples (tracker receiver, microphone, ...).

    start() begins background work (threads, sockets) and must be idempotent; stop() ends it
    quickly and is idempotent too. latest(now) never blocks and returns None when the source has
    produced nothing recent. Sources never touch a model or images.

    on_input: set by the mixer it is added to; a receiver calls ``_input_arrived(when)`` for each
    input it accepts (never while holding its own lock: the callee takes the engine's), which is
    how the live engine times tracker → frame latency.
    """

    name: str
    on_input: Callable[[float], None] | None = None

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def latest(self, now: float) -> SourceSample | None: ...

    def stats(self) -> dict:
        """Counters for UIs; receivers report packets_ok, packets_dropped, last_packet_time."""
        return {}

    def calibrate(self) -> bool:
        """Take the current input as neutral ("I'm looking forward"). False if unsupported/no data."""
        return False

    def _input_arrived(self, when: float) -> None:
        hook = self.on_input
        if hook is not None:
            hook(when)
