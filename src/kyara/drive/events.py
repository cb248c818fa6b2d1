"""One-shot expression/motion clips ("happy_nod", "surprised", ...) layered over the live pose.

A Clip is plain data: per-parameter keyframe tracks (time s, value), linearly interpolated, times
an attack/release envelope so a clip blends in and out smoothly. EventPlayer adds the offsets of
all playing clips; the mixer adds those to the pose and clamps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from kyara.pose import INDEX, PoseError

Track = tuple[tuple[float, float], ...]
MAX_ACTIVE = 8


class UnknownEventError(PoseError, KeyError):
    """trigger() got a name that is not in EVENTS (a KeyError that prints as one clear line)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Clip:
    """duration_s: total length; attack_s/release_s: envelope ramps at the start/end.
    tracks: parameter → keyframes ((t, value), ...) with t in [0, duration_s]; values are offsets
    added to the pose (head angles in the ±1 scale, morphs in 0..1)."""

    description: str
    duration_s: float
    attack_s: float
    release_s: float
    tracks: Mapping[str, Track]

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and self.attack_s >= 0 and self.release_s >= 0
                and self.attack_s + self.release_s <= self.duration_s):
            raise ValueError(f"clip {self.description!r}: need attack + release <= duration")
        for name, keys in self.tracks.items():
            if name not in INDEX:
                raise ValueError(f"clip {self.description!r}: unknown pose parameter {name!r}")
            times = [k[0] for k in keys]
            if not keys or times != sorted(times) or times[0] < 0 or times[-1] > self.duration_s:
                raise ValueError(f"clip {self.description!r}: track {name!r} needs sorted times in [0, duration]")

    def envelope(self, t: float) -> float:
        """0 outside the clip; smoothstep up over attack_s, 1, smoothstep down over release_s."""
        if t < 0 or t > self.duration_s:
            return 0.0
        e = 1.0
        if self.attack_s > 0 and t < self.attack_s:
            e = min(e, _smoothstep(t / self.attack_s))
        if self.release_s > 0 and t > self.duration_s - self.release_s:
            e = min(e, _smoothstep((self.duration_s - t) / self.release_s))
        return e

    def sample(self, t: float) -> dict[str, float]:
        """Offsets at time t (s) since the clip started; {} outside the clip."""
        e = self.envelope(t)
        if e <= 0.0:
            return {}
        return {name: e * _interp(keys, t) for name, keys in self.tracks.items()}


def _smoothstep(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def _interp(keys: Track, t: float) -> float:
    if t <= keys[0][0]:
        return keys[0][1]
    for (t0, v0), (t1, v1) in zip(keys, keys[1:]):
        if t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return keys[-1][1]


def _hold(value: float, duration: float) -> Track:
    return ((0.0, value), (duration, value))


def _both(group: str, value: float, duration: float) -> dict[str, Track]:
    return {f"{group}_left": _hold(value, duration), f"{group}_right": _hold(value, duration)}


_NOD = ((0.0, 0.0), (0.2, -0.45), (0.4, 0.05), (0.6, -0.35), (0.8, 0.0))

EVENTS: dict[str, Clip] = {
    "nod": Clip("two nods", 0.9, 0.05, 0.1, {"head_x": _NOD}),
    "shake_head": Clip("shake the head no", 1.0, 0.05, 0.15, {
        "head_y": ((0.0, 0.0), (0.15, 0.5), (0.4, -0.5), (0.65, 0.4), (0.85, -0.2), (1.0, 0.0)),
        "body_y": ((0.0, 0.0), (0.15, 0.1), (0.4, -0.1), (0.65, 0.08), (1.0, 0.0))}),
    "happy_nod": Clip("closed-eye smile with two nods", 1.4, 0.15, 0.3, {
        "head_x": _NOD, **_both("eye_happy_wink", 1.0, 1.4), **_both("eyebrow_happy", 1.0, 1.4),
        **_both("mouth_raised_corner", 0.8, 1.4), "mouth_aaa": _hold(0.3, 1.4)}),
    "surprised": Clip("wide eyes, raised brows, round mouth, head back", 1.5, 0.08, 0.5, {
        **_both("eye_surprised", 1.0, 1.5), **_both("eyebrow_raised", 1.0, 1.5),
        **_both("iris_small", 0.5, 1.5), "mouth_ooo": _hold(0.7, 1.5),
        "head_x": ((0.0, 0.0), (0.15, 0.3), (1.5, 0.2))}),
    "wink": Clip("left-eye wink with a small head tilt", 0.8, 0.08, 0.2, {
        "eye_wink_left": _hold(1.0, 0.8), **_both("mouth_raised_corner", 0.6, 0.8),
        "neck_z": ((0.0, 0.0), (0.2, 0.25), (0.8, 0.2))}),
    "laugh": Clip("closed eyes, open mouth, bouncing head", 2.0, 0.1, 0.4, {
        **_both("eye_happy_wink", 1.0, 2.0), **_both("eyebrow_happy", 1.0, 2.0),
        **_both("mouth_raised_corner", 1.0, 2.0),
        "mouth_aaa": ((0.0, 0.9), (0.25, 0.5), (0.5, 0.9), (0.75, 0.5), (1.0, 0.9), (1.25, 0.5), (2.0, 0.8)),
        "head_x": ((0.0, 0.1), (0.25, 0.25), (0.5, 0.1), (0.75, 0.25), (1.0, 0.1), (1.25, 0.25), (2.0, 0.15)),
        "breathing": ((0.0, 0.0), (0.25, 0.4), (0.5, 0.0), (0.75, 0.4), (1.0, 0.0), (2.0, 0.0))}),
    "shy": Clip("troubled brows, relaxed eyes looking down and away, small smile", 2.0, 0.3, 0.5, {
        **_both("eyebrow_troubled", 0.7, 2.0), **_both("eye_relaxed", 0.4, 2.0),
        **_both("mouth_raised_corner", 0.3, 2.0), "iris_rotation_x": _hold(-0.4, 2.0),
        "head_x": _hold(-0.35, 2.0), "head_y": _hold(0.35, 2.0), "neck_z": _hold(0.2, 2.0)}),
    "sad": Clip("troubled brows, lowered mouth corners, head down", 2.5, 0.4, 0.6, {
        **_both("eyebrow_troubled", 1.0, 2.5), **_both("eye_relaxed", 0.5, 2.5),
        **_both("mouth_lowered_corner", 1.0, 2.5), "head_x": _hold(-0.4, 2.5)}),
}


class EventPlayer:
    """Plays clips from EVENTS (or a given registry); several may overlap, offsets add up.

    trigger(name, now) starts a clip (re-triggering restarts it); sample(now) returns the summed
    offsets; ``active`` lists the clips still playing as of the last trigger/sample call.
    """

    def __init__(self, events: Mapping[str, Clip] = EVENTS) -> None:
        self.events = events
        self._playing: dict[str, float] = {}   # name → start time
        self._now = float("-inf")

    def trigger(self, name: str, now: float) -> None:
        if name not in self.events:
            raise UnknownEventError(f"unknown event {name!r}; choose one of: {', '.join(self.events)}")
        self._playing.pop(name, None)
        self._playing[name] = float(now)
        while len(self._playing) > MAX_ACTIVE:
            self._playing.pop(next(iter(self._playing)))
        self._now = max(self._now, float(now))

    def sample(self, now: float, since: float | None = None) -> dict[str, float]:
        """Summed offsets at `now`. since (<= now): the time of the last frame shown; clips are
        latched: one whose full-strength part (before its release) ended in (since, now] is sampled
        at the end of that part, so even a clip that fell between two frames of a slow renderer
        shows once at full strength. None: no latching (the value at now)."""
        self._now = float(now)
        since = self._now if since is None else min(float(since), self._now)
        out: dict[str, float] = {}
        for name, start in list(self._playing.items()):
            clip = self.events[name]
            t, full_end = now - start, clip.duration_s - clip.release_s
            if since - start < full_end:
                t = min(t, full_end)
            elif t > clip.duration_s:
                del self._playing[name]
                continue
            for param, v in clip.sample(t).items():
                out[param] = out.get(param, 0.0) + v
        return out

    @property
    def active(self) -> list[str]:
        """Names of clips playing at the time of the last trigger()/sample()."""
        return [n for n, s in self._playing.items() if s <= self._now <= s + self.events[n].duration_s]
