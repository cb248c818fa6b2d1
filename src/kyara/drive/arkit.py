"""ARKit face-tracking samples (52 blendshapes + head angles) → THA3 pose parameter values.

The mapping follows the behaviour of the official THA3/THA4 iFacialMocap converter as described in
``peers-and-protocols.md`` §5.3 and ``tha3-tha4-facts.md`` §1 (own implementation):

* Sides: ARKit ``…Left`` is the *tracked person's own* left; it drives THA3 ``…_left`` unchanged
  (``eyeBlinkLeft`` → ``eye_wink_left``), exactly like the official converter. No mirroring by
  default; ``ArkitMapping(mirror=True)`` swaps sides and negates yaw/roll-like values for users who
  want a mirror-image puppet.
* Head angles (degrees, iFacialMocap/ARKit convention: +pitch = looking down, +yaw = turning to the
  person's own left, +roll = tilting to the person's own right — right-handed ARKit face axes):
  ``head_x = clamp(-pitch, ±15)/15``, ``head_y = clamp(-yaw, ±10)/10``, ``neck_z = clamp(roll, ±15)/15``;
  ``body_y``/``body_z`` copy ``head_y``/``neck_z`` scaled by ``body_follow``.
* Smile degree ramps 0→1 between thresholds 0.4/0.6 and gates brow-down, wink vs happy-wink.
* Mouth: jawOpen rescaled 0.1–0.4 → open amount; when open, a 4-variable bounded least-squares fit
  against aaa/iii/uuu/ooo prototype vectors (coordinate descent here, no scipy), u vs o split by
  mouthFunnel 0.25–0.5; when closed, mouthFrown → lowered corners.

Everything here is pure: no sockets, no threads, no clocks.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from kyara.pose import INDEX, PARAMETERS, mirror_values

# Apple's 52 ARFaceAnchor.BlendShapeLocation names, Swift-identifier spelling (Left/Right suffixes).
ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft",
    "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft",
    "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft", "browDownRight",
    "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
ARKIT_SET: frozenset[str] = frozenset(ARKIT_BLENDSHAPES)
assert len(ARKIT_BLENDSHAPES) == 52 == len(ARKIT_SET)

EYEBROW_DOWN_MODES = ("angry", "troubled", "lowered", "serious")
WINK_MODES = ("normal", "relaxed")

_BLINKS = ("eyeBlinkLeft", "eyeBlinkRight")  # latched by ArkitFrameSource


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ArkitFrame:
    """One tracker sample.

    blendshapes: ARKit name (ARKIT_BLENDSHAPES spelling) → weight in [0, 1]; missing names are 0.
    head_*_deg: head Euler angles in degrees, iFacialMocap/ARKit convention (see module docstring).
    timestamp: monotonic receive time (s) when set by a receiver; 0.0 for hand-made frames.
    direct: THA3 parameter name → value, for senders whose shapes map straight to THA3 (VRM "A",
        "Joy", …); combined with the ARKit-derived values by max (0..1 parameters) in
        arkit_to_pose_values. Calibration does not touch these.
    """

    blendshapes: Mapping[str, float]
    head_pitch_deg: float = 0.0
    head_yaw_deg: float = 0.0
    head_roll_deg: float = 0.0
    timestamp: float = 0.0
    direct: Mapping[str, float] = field(default_factory=_empty)


@dataclass(frozen=True)
class ArkitMapping:
    """Tunables of the ARKit → THA3 mapping. Defaults are the official THA3 converter's."""

    pitch_full_scale_deg: float = 15.0   # ±15° → head_x ±1 (facts §1)
    yaw_full_scale_deg: float = 10.0     # ±10° → head_y ±1
    roll_full_scale_deg: float = 15.0    # ±15° → neck_z ±1
    body_follow: float = 1.0             # body_y = head_y·k, body_z = neck_z·k (official: 1)
    lower_smile_threshold: float = 0.4
    upper_smile_threshold: float = 0.6
    eyebrow_down_mode: str = "angry"     # one of EYEBROW_DOWN_MODES
    wink_mode: str = "normal"            # "normal" → eye_wink, "relaxed" → eye_relaxed
    eye_surprised_max: float = 0.5       # eyeWide at which eye_surprised reaches 1
    eye_blink_max: float = 0.8           # eyeBlink at which the eye is fully closed
    eyebrow_down_max: float = 0.4
    cheek_squint_min: float = 0.1
    cheek_squint_max: float = 0.7
    iris_rotation_factor: float = 1.0 / 0.75
    jaw_open_min: float = 0.1
    jaw_open_max: float = 0.4
    mouth_frown_max: float = 0.6
    mouth_funnel_min: float = 0.25
    mouth_funnel_max: float = 0.5
    iris_small: float | None = None      # None: leave iris_small to manual sliders
    mirror: bool = False                 # True: puppet behaves like a mirror image of the user
    # Prototype (open, lowerDown, funnel, pucker) vectors of aaa, iii, uuu, ooo for the mouth fit.
    mouth_prototypes: tuple[tuple[float, float, float, float], ...] = (
        (1.0, 1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0, 0.0),
        (0.5, 0.3, 0.25, 0.75),
        (1.0, 0.5, 0.5, 0.4),
    )
    mouth_sparsity: float = 0.005        # L1 weight of the mouth fit (prefers fewer shapes)

    def __post_init__(self) -> None:
        if self.eyebrow_down_mode not in EYEBROW_DOWN_MODES:
            raise ValueError(f"eyebrow_down_mode must be one of {EYEBROW_DOWN_MODES}, got {self.eyebrow_down_mode!r}")
        if self.wink_mode not in WINK_MODES:
            raise ValueError(f"wink_mode must be one of {WINK_MODES}, got {self.wink_mode!r}")
        for name in ("pitch_full_scale_deg", "yaw_full_scale_deg", "roll_full_scale_deg", "eye_surprised_max",
                     "eye_blink_max", "eyebrow_down_max", "mouth_frown_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ArkitMapping.{name} must be > 0, got {getattr(self, name)}")
        for lo, hi in (("lower_smile_threshold", "upper_smile_threshold"), ("cheek_squint_min", "cheek_squint_max"),
                       ("jaw_open_min", "jaw_open_max"), ("mouth_funnel_min", "mouth_funnel_max")):
            if not getattr(self, lo) < getattr(self, hi):
                raise ValueError(f"ArkitMapping.{lo} must be < {hi}")
        if self.iris_small is not None and not 0.0 <= self.iris_small <= 1.0:
            raise ValueError(f"ArkitMapping.iris_small must be in [0, 1] or None, got {self.iris_small}")
        if len(self.mouth_prototypes) != 4 or any(len(p) != 4 for p in self.mouth_prototypes):
            raise ValueError("ArkitMapping.mouth_prototypes must be 4 vectors of 4 numbers (aaa, iii, uuu, ooo)")


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at lo, 1 at hi, linear between, clamped."""
    return _clamp((x - lo) / (hi - lo), 0.0, 1.0)


def _wrap_deg(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _weight(x) -> float:
    """A blendshape weight as sent (any type) → a float in [0, 1]; junk → 0."""
    try:
        return _clamp(_finite(float(x)), 0.0, 1.0)
    except (TypeError, ValueError):
        return 0.0


@dataclass
class Calibration:
    """A neutral reference: head angles and resting blendshape weights to subtract.

    Blendshapes are rescaled ``(v - off) / (1 - off)`` so full activation stays reachable.
    """

    head_pitch_deg: float = 0.0
    head_yaw_deg: float = 0.0
    head_roll_deg: float = 0.0
    blendshape_offsets: dict[str, float] = field(default_factory=dict)

    def apply(self, frame: ArkitFrame) -> ArkitFrame:
        shapes = {}
        for name, v in frame.blendshapes.items():
            off = self.blendshape_offsets.get(name, 0.0)
            shapes[name] = _clamp((v - off) / (1.0 - off), 0.0, 1.0) if off > 0.0 else v
        return replace(
            frame,
            blendshapes=shapes,
            head_pitch_deg=_wrap_deg(frame.head_pitch_deg - self.head_pitch_deg),
            head_yaw_deg=_wrap_deg(frame.head_yaw_deg - self.head_yaw_deg),
            head_roll_deg=_wrap_deg(frame.head_roll_deg - self.head_roll_deg),
        )


def calibrate(frame: ArkitFrame, max_blendshape_offset: float = 0.3) -> Calibration:
    """"I'm looking forward": take `frame` as the neutral face.

    Offsets are capped at max_blendshape_offset so calibrating mid-blink or mid-smile cannot make
    a shape unreachable.
    """
    offsets = {}
    for name, v in frame.blendshapes.items():
        v = _finite(float(v))
        if name in ARKIT_SET and v > 0.0:
            offsets[name] = min(v, max_blendshape_offset)
    return Calibration(_finite(frame.head_pitch_deg), _finite(frame.head_yaw_deg), _finite(frame.head_roll_deg), offsets)


@functools.lru_cache(maxsize=8)
def _mouth_system(protos: tuple[tuple[float, ...], ...]):
    """Gram matrix Q of the prototypes and, per subset F of free variables, Q_FF⁻¹ (or None if singular).

    Candidates are ordered so the common answers (few shapes active, the rest at 0) come first.
    """
    import itertools

    import numpy as np

    p = np.asarray(protos, dtype=np.float64)
    q = p @ p.T
    candidates = []
    for states in itertools.product((0, 1, 2), repeat=4):  # 0: at 0, 1: free, 2: at 1
        free = [i for i in range(4) if states[i] == 1]
        sub = q[np.ix_(free, free)]
        if free and abs(np.linalg.det(sub)) < 1e-12:
            continue
        inv = np.linalg.inv(sub).tolist() if free else []
        candidates.append((sum(s == 2 for s in states), len(free), states, free, inv))
    candidates.sort(key=lambda c: (c[0], c[1]))
    return q.tolist(), [(c[2], c[3], c[4]) for c in candidates]


def _solve_mouth(point: tuple[float, float, float, float], mapping: ArkitMapping) -> list[float]:
    """Weights w in [0,1]^4 minimising ½‖Σ w_k·proto_k − point‖² + λ·Σ w_k (box-constrained QP).

    Exact: the objective is strictly convex, so the unique point meeting the KKT conditions is
    found by trying each assignment of {at 0, free, at 1} to the 4 weights (≤ 81, usually a few).
    """
    protos = mapping.mouth_prototypes
    q, candidates = _mouth_system(tuple(tuple(float(x) for x in v) for v in protos))
    lin = [sum(a * b for a, b in zip(protos[i], point)) - mapping.mouth_sparsity for i in range(4)]
    best, best_cost = [0.0, 0.0, 0.0, 0.0], math.inf
    for states, free, inv in candidates:
        w = [1.0 if s == 2 else 0.0 for s in states]
        if free:
            rhs = [lin[i] - sum(q[i][j] * w[j] for j in range(4) if states[j] != 1) for i in free]
            for k, i in enumerate(free):
                w[i] = sum(inv[k][m] * rhs[m] for m in range(len(free)))
            if any(w[i] < -1e-9 or w[i] > 1.0 + 1e-9 for i in free):
                continue
        grad = [sum(q[i][j] * w[j] for j in range(4)) - lin[i] for i in range(4)]
        if all((s == 0 and g >= -1e-9) or (s == 2 and g <= 1e-9) or s == 1 for s, g in zip(states, grad)):
            return [_clamp(x, 0.0, 1.0) for x in w]
        # Keep the best feasible point in case round-off rejects every candidate.
        cost = sum(0.5 * w[i] * (grad[i] - lin[i]) for i in range(4))
        if cost < best_cost:
            best, best_cost = [_clamp(x, 0.0, 1.0) for x in w], cost
    return best


def arkit_to_pose_values(
    frame: ArkitFrame, mapping: ArkitMapping = ArkitMapping(), calibration: Calibration | None = None
) -> dict[str, float]:
    """Partial dict of THA3 parameter names → values, each inside its range.

    Only the parameters this mapping drives are present (e.g. no breathing, no mouth_eee/delta/smirk,
    no eye_unimpressed; eye_relaxed only in "relaxed" wink mode; iris_small only if the mapping sets
    it), so manual sliders and presets keep control of the rest.
    """
    if calibration is not None:
        frame = calibration.apply(frame)

    def bs(name: str) -> float:
        return _weight(frame.blendshapes.get(name))

    m = mapping
    out: dict[str, float] = {}

    smile = (bs("mouthSmileLeft") + bs("mouthSmileRight")) / 2.0 + bs("mouthShrugUpper")
    smile_degree = _ramp(smile, m.lower_smile_threshold, m.upper_smile_threshold)

    # Eyebrows
    brow_inner = bs("browInnerUp")
    for side, arkit_side in (("left", "Left"), ("right", "Right")):
        out[f"eyebrow_raised_{side}"] = _clamp(brow_inner + bs(f"browOuterUp{arkit_side}"), 0.0, 1.0)
        down = (1.0 - smile_degree) * _clamp(bs(f"browDown{arkit_side}") / m.eyebrow_down_max, 0.0, 1.0)
        out[f"eyebrow_{m.eyebrow_down_mode}_{side}"] = down
        out[f"eyebrow_happy_{side}"] = _clamp(smile, 0.0, 1.0) * smile_degree

    # Eyes
    wink_group = "eye_wink" if m.wink_mode == "normal" else "eye_relaxed"
    for side, arkit_side in (("left", "Left"), ("right", "Right")):
        out[f"eye_surprised_{side}"] = _clamp(bs(f"eyeWide{arkit_side}") / m.eye_surprised_max, 0.0, 1.0)
        closed = _clamp(bs(f"eyeBlink{arkit_side}") / m.eye_blink_max, 0.0, 1.0)
        out[f"{wink_group}_{side}"] = (1.0 - smile_degree) * closed
        out[f"eye_happy_wink_{side}"] = smile_degree * closed
        out[f"eye_raised_lower_eyelid_{side}"] = _ramp(bs(f"cheekSquint{arkit_side}"), m.cheek_squint_min, m.cheek_squint_max)
        if m.iris_small is not None:
            out[f"iris_small_{side}"] = m.iris_small

    # Iris rotation
    look_y = (bs("eyeLookInLeft") - bs("eyeLookOutLeft") - bs("eyeLookInRight") + bs("eyeLookOutRight")) / 2.0
    look_x = (bs("eyeLookUpLeft") + bs("eyeLookUpRight") - bs("eyeLookDownLeft") - bs("eyeLookDownRight")) / 2.0
    out["iris_rotation_y"] = _clamp(look_y * m.iris_rotation_factor, -1.0, 1.0)
    out["iris_rotation_x"] = _clamp(look_x * m.iris_rotation_factor, -1.0, 1.0)

    # Head and body
    pitch, yaw, roll = (_finite(float(a)) for a in (frame.head_pitch_deg, frame.head_yaw_deg, frame.head_roll_deg))
    out["head_x"] = _clamp(-pitch / m.pitch_full_scale_deg, -1.0, 1.0)
    out["head_y"] = _clamp(-yaw / m.yaw_full_scale_deg, -1.0, 1.0)
    out["neck_z"] = _clamp(roll / m.roll_full_scale_deg, -1.0, 1.0)
    out["body_y"] = _clamp(out["head_y"] * m.body_follow, -1.0, 1.0)
    out["body_z"] = _clamp(out["neck_z"] * m.body_follow, -1.0, 1.0)

    # Mouth
    opening = _ramp(bs("jawOpen"), m.jaw_open_min, m.jaw_open_max)
    corner = _clamp(smile, 0.0, 1.0)
    out["mouth_raised_corner_left"] = out["mouth_raised_corner_right"] = corner
    aaa = iii = uuu = ooo = lowered = 0.0
    if opening > 0.0:
        lower_down = _clamp(bs("mouthLowerDownLeft") + bs("mouthLowerDownRight"), 0.0, 1.0)
        funnel = bs("mouthFunnel")
        w = _solve_mouth((opening, lower_down, funnel, bs("mouthPucker")), m)
        aaa, iii = w[0], w[1]
        round_lips = _clamp(w[2] + w[3], 0.0, 1.0)
        o_share = _ramp(funnel, m.mouth_funnel_min, m.mouth_funnel_max)
        uuu, ooo = round_lips * (1.0 - o_share), round_lips * o_share
    else:
        lowered = _clamp((bs("mouthFrownLeft") + bs("mouthFrownRight")) / m.mouth_frown_max, 0.0, 1.0)
    out.update(mouth_aaa=aaa, mouth_iii=iii, mouth_uuu=uuu, mouth_ooo=ooo,
               mouth_lowered_corner_left=lowered, mouth_lowered_corner_right=lowered)

    # Shapes the sender maps straight to THA3 (VRM presets): strongest wins.
    for name, v in frame.direct.items():
        idx = INDEX.get(name)
        if idx is None:
            continue
        p = PARAMETERS[idx]
        v = _finite(float(v))
        if p.low >= 0.0:
            out[name] = _clamp(max(out.get(name, 0.0), v), p.low, p.high)
        else:
            out[name] = _clamp(out.get(name, 0.0) + v, p.low, p.high)

    if m.mirror:
        out = mirror_values(out)
    return out


class ArkitFrameSource:
    """Mixin for PoseSources fed by a face tracker (iFacialMocap, VMC, webcam): keeps the newest
    ArkitFrame under a lock and maps it to pose values on demand, cached per frame.

    Blinks are latched: latest() maps the newest frame with each eyeBlink weight raised to its peak
    over the frames received since the previous latest() call (the mixer calls it once per mixed
    frame), so a blink between two frames of a slow renderer still closes the eyes.

    The subclass calls ``_init_frames`` in its constructor and ``_publish_frame`` (holding
    ``self._lock``) whenever its thread decodes a frame.
    """

    def _init_frames(self, mapping: ArkitMapping, stale_after_s: float) -> None:
        import threading

        self.mapping = mapping
        self.calibration: Calibration | None = None
        self.stale_after_s = float(stale_after_s)
        self._lock = threading.Lock()
        self._frame: ArkitFrame | None = None
        self._frame_serial = 0
        self._cache = None   # (serial, mapping, calibration, SourceSample) of the last latest()
        self._blink_peak: dict[str, float] = {}

    def _publish_frame(self, frame: ArkitFrame) -> None:
        for name in _BLINKS:
            self._blink_peak[name] = max(self._blink_peak.get(name, 0.0), _weight(frame.blendshapes.get(name)))
        self._frame = frame
        self._frame_serial += 1

    def latest_frame(self) -> ArkitFrame | None:
        """The newest raw (uncalibrated) frame, for UIs and calibration."""
        with self._lock:
            return self._frame

    def latest(self, now: float):
        """SourceSample of the newest frame, or None when there is none younger than stale_after_s."""
        from kyara.drive.source import SourceSample

        with self._lock:
            frame, serial, cache, peak = self._frame, self._frame_serial, self._cache, self._blink_peak
            self._blink_peak = {}
        if frame is None or now - frame.timestamp > self.stale_after_s:
            return None
        mapping, calibration = self.mapping, self.calibration
        latched = {k: v for k, v in peak.items() if v > _weight(frame.blendshapes.get(k))}
        if latched:  # a one-off: not cached, the next call shows the newest frame as it is
            frame = replace(frame, blendshapes={**frame.blendshapes, **latched})
        elif cache is not None and cache[0] == serial and cache[1] is mapping and cache[2] is calibration:
            return cache[3]
        sample = SourceSample.from_dict(arkit_to_pose_values(frame, mapping, calibration), frame.timestamp)
        if not latched:
            with self._lock:
                self._cache = (serial, mapping, calibration, sample)
        return sample

    def calibrate(self) -> bool:
        frame = self.latest_frame()
        if frame is None:
            return False
        self.calibration = calibrate(frame)
        return True
