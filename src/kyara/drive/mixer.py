"""PoseMixer: the one owner of the pose. Combines sliders/presets, idle motion, live sources and
one-shot events into a ``Pose`` per rendered frame.

Layering, lowest first (per parameter):

1. manual   — preset (set_preset) with slider values (set_manual, merged; reset_manual) on top;
              validated by kyara.pose.
2. idle     — sway is added to the manual head/body angles; blink and breathing take the max of
              manual and idle values.
3. tracking — each live source (in add_source order; later sources win where they overlap, so add
              a microphone mouth source after a face tracker) replaces the values its sample's mask
              covers, one-euro smoothed, with weight 1 while fresh, fading linearly to 0 over fade_s
              once its newest sample is older than fade_after_s (a silent tracker fades back to idle).
4. events   — offsets of playing clips are added on top.

The result is clamped into each parameter's range. Short events are latched: ``mix(now, since)``
shows idle blinks and event clips at their strongest moment in (since, now], ``since`` being the
time of the last frame actually shown (the live engine passes its last render), so a blink cannot
fall between two frames of a slow renderer. All methods are thread-safe; times are
time.monotonic() seconds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from kyara.drive.events import EventPlayer
from kyara.drive.idle import IDLE_PARTS, IdleMotion
from kyara.drive.smoothing import OneEuroFilter
from kyara.drive.source import PoseSource, SourceSample
from kyara.pose import HIGH, INDEX, LOW, NAMES, NUM_PARAMETERS, Pose

_ADDITIVE_IDLE = ("head_x", "head_y", "neck_z", "body_y", "body_z")


@dataclass(frozen=True)
class SmoothingConfig:
    """One-euro parameters for tracked values (see kyara.drive.smoothing.OneEuroFilter).

    Defaults keep jitter low at rest while a 0.15 s blink still closes the eye most of the way.
    """

    enabled: bool = True
    min_cutoff: float = 2.0
    beta: float = 1.0
    d_cutoff: float = 1.0


@dataclass(frozen=True)
class MixerConfig:
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    fade_after_s: float = 1.0   # a source silent this long starts fading out ...
    fade_s: float = 0.5         # ... and is gone this much later

    def __post_init__(self) -> None:
        if self.fade_after_s < 0 or self.fade_s < 0:
            raise ValueError("MixerConfig.fade_after_s and fade_s must be >= 0")


class _Track:
    """Mixer-side state of one source: last sample and its smoothed (45,) vector."""

    def __init__(self, source: PoseSource, smoothing: SmoothingConfig) -> None:
        self.source = source
        self.filter = (OneEuroFilter(smoothing.min_cutoff, smoothing.beta, smoothing.d_cutoff)
                       if smoothing.enabled else None)
        self.sample: SourceSample | None = None
        self.vector = np.zeros(NUM_PARAMETERS)
        self.mask = np.zeros(NUM_PARAMETERS, dtype=bool)

    def update(self, sample: SourceSample) -> None:
        if self.sample is not None and sample.timestamp <= self.sample.timestamp:
            return  # the same (or an older) sample again: keep the smoothed state
        values = np.asarray(sample.values, dtype=np.float64).reshape(NUM_PARAMETERS)
        mask = np.asarray(sample.mask, dtype=bool).reshape(NUM_PARAMETERS) & np.isfinite(values)
        raw = np.where(mask, np.clip(values, LOW, HIGH), self.vector)  # NaN/inf from a bad source: ignored
        if self.filter is not None:
            if not np.array_equal(mask, self.mask):
                self.filter.reset()  # new parameters start from their raw value, not a stale one
            self.vector = self.filter(raw, sample.timestamp)
        else:
            self.vector = raw
        self.mask = mask
        self.sample = sample

    def weight(self, now: float, config: MixerConfig) -> float:
        if self.sample is None:
            return 0.0
        age = now - self.sample.timestamp
        if age <= config.fade_after_s:
            return 1.0
        if config.fade_s <= 0:
            return 0.0
        return max(0.0, 1.0 - (age - config.fade_after_s) / config.fade_s)


class PoseMixer:
    """See the module docstring. Sources are registered, not owned: start/stop them yourself.

    on_input: None or a callable(when, source_name), called from a source's thread for each input
    it receives (the live engine sets its ``note_input`` here to time tracker → frame latency).
    """

    def __init__(self, config: MixerConfig = MixerConfig(), idle: IdleMotion | None = None) -> None:
        self.config = config
        self.idle = idle
        self.events = EventPlayer()
        self.on_input: Callable[[float, str], None] | None = None
        self._lock = threading.RLock()
        self._tracks: dict[str, _Track] = {}
        self.preset: tuple[str, float] = ("neutral", 1.0)   # (name, intensity) of the last set_preset
        self._preset = np.zeros(NUM_PARAMETERS)
        self._manual = np.zeros(NUM_PARAMETERS)
        self._manual_mask = np.zeros(NUM_PARAMETERS, dtype=bool)
        self._last_now = float("-inf")

    # -- sources ------------------------------------------------------------------------------
    def add_source(self, src: PoseSource) -> None:
        with self._lock:
            if src.name in self._tracks:
                raise ValueError(f"a pose source named {src.name!r} is already added")
            self._tracks[src.name] = _Track(src, self.config.smoothing)
            src.on_input = functools.partial(self._input_arrived, src.name)

    def remove_source(self, name: str) -> PoseSource:
        """Unregister and return the source (the caller stops it)."""
        with self._lock:
            if name not in self._tracks:
                raise KeyError(f"no pose source named {name!r}; have: {', '.join(self._tracks) or 'none'}")
            src = self._tracks.pop(name).source
            src.on_input = None
            return src

    def _input_arrived(self, name: str, when: float) -> None:
        hook = self.on_input
        if hook is not None:
            hook(when, name)

    def sources(self, now: float | None = None) -> list[tuple[str, dict, bool]]:
        """(name, stats, live) per source; live = a sample no older than fade_after_s at `now`
        (default: the newest time passed to mix())."""
        with self._lock:
            t = self._last_now if now is None else now
            out = []
            for name, track in self._tracks.items():
                stats_fn = getattr(track.source, "stats", None)
                stats = dict(stats_fn()) if callable(stats_fn) else {}
                live = track.sample is not None and t - track.sample.timestamp <= self.config.fade_after_s
                out.append((name, stats, live))
            return out

    # -- manual layer -------------------------------------------------------------------------
    @property
    def manual(self) -> dict[str, float]:
        """The slider values set so far, by name."""
        with self._lock:
            return {NAMES[i]: float(self._manual[i]) for i in np.flatnonzero(self._manual_mask)}

    def set_manual(self, values: Mapping[str, float]) -> None:
        """Merge slider values (a partial mapping) into the ones set before. Raises PoseError (and
        changes nothing) for an unknown name or a value out of range."""
        vec = Pose.from_dict(values).vector  # validates names, types and ranges
        index = [INDEX[str(name)] for name in values]
        with self._lock:
            self._manual[index] = vec[index]
            self._manual_mask[index] = True

    def reset_manual(self) -> None:
        with self._lock:
            self._manual_mask[:] = False

    def set_preset(self, name: str, intensity: float = 1.0) -> None:
        """Expression preset under the sliders ("neutral" clears it). Raises PoseError."""
        vec = Pose.preset(name, intensity).vector.astype(np.float64)
        with self._lock:
            self._preset, self.preset = vec, (name, float(intensity))

    def set_idle(self, toggles: Mapping[str, bool]) -> dict[str, bool]:
        """Switch idle parts (IDLE_PARTS) on/off, e.g. {"blink": False}; returns idle_state(). The
        frozen config is swapped, so the blink schedule and sway phases continue. LookupError
        without idle motion, KeyError for an unknown part."""
        if self.idle is None:
            raise LookupError("this session has no idle motion")
        unknown = [k for k in toggles if k not in IDLE_PARTS]
        if unknown:
            raise KeyError(f"unknown idle part {unknown[0]!r}; known: {', '.join(IDLE_PARTS)}")
        with self._lock:
            self.idle.config = dataclasses.replace(self.idle.config, **{k: bool(v) for k, v in toggles.items()})
            return self.idle_state()

    def idle_state(self) -> dict[str, bool] | None:
        """{part: on} for IDLE_PARTS; None without idle motion."""
        return None if self.idle is None else {p: bool(getattr(self.idle.config, p)) for p in IDLE_PARTS}

    # -- actions ------------------------------------------------------------------------------
    def calibrate(self) -> list[str]:
        """Ask every source to take its current input as neutral; returns the names that did."""
        with self._lock:
            sources = [t.source for t in self._tracks.values()]
        done = []
        for src in sources:
            fn = getattr(src, "calibrate", None)
            if callable(fn) and fn():
                done.append(src.name)
        return done

    def trigger(self, event_name: str, now: float) -> None:
        """Start a one-shot clip from kyara.drive.events.EVENTS (UnknownEventError lists them)."""
        with self._lock:
            self.events.trigger(event_name, now)

    # -- output -------------------------------------------------------------------------------
    def mix(self, now: float, since: float | None = None) -> Pose:
        """The pose at `now`. since: time of the last frame shown (blinks and events latched over
        (since, now]); None: the previous mix() call's time, i.e. every mix is shown."""
        with self._lock:
            since = self._last_now if since is None else since
            since = min(since, now) if math.isfinite(since) else now
            self._last_now = now
            vec = np.where(self._manual_mask, self._manual, self._preset)

            if self.idle is not None:
                for name, v in self.idle.sample(now, since).items():
                    i = INDEX[name]
                    vec[i] = vec[i] + v if name in _ADDITIVE_IDLE else max(vec[i], v)

            for track in self._tracks.values():
                try:
                    sample = track.source.latest(now)
                    if sample is not None:
                        track.update(sample)
                except Exception:  # a broken source must not stop the render loop
                    pass
                w = track.weight(now, self.config)
                if w > 0.0:
                    m = track.mask
                    vec[m] = (1.0 - w) * vec[m] + w * track.vector[m]

            for name, v in self.events.sample(now, since).items():
                vec[INDEX[name]] += v
            return Pose.clamped(vec)

    def active_events(self) -> list[str]:
        with self._lock:
            return self.events.active
