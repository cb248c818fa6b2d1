"""The pose-source contract: anything that turns outside input into (partial) pose parameter values.

Clock: every time in kyara.drive (``now``, ``SourceSample.timestamp``, ``last_packet_time``) is
``time.monotonic()`` seconds, so sources and the mixer agree without wall-clock jumps.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass


class ProtocolError(ValueError):
    """A network message is malformed (bad syntax, wrong type, non-finite or absurd value).

    Parsers raise only this; receivers catch it, drop the packet and count it.
    """


@dataclass(frozen=True)
class SourceSample:
    """What a source says right now.

    values: partial mapping of THA3 parameter names (kyara.pose.NAMES) to values inside each
        parameter's range; parameters the source does not drive are absent.
    timestamp: monotonic time (s) the underlying input arrived; the mixer fades a source whose
        newest sample grows old.
    """

    values: dict[str, float]
    timestamp: float


class PoseSource(abc.ABC):
    """A named producer of SourceSamples (tracker receiver, microphone, ...).

    start() begins background work (threads, sockets) and must be idempotent; stop() ends it
    quickly and is idempotent too. latest(now) never blocks and returns None when the source has
    produced nothing recent. Sources never touch a model or images.
    """

    name: str

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
