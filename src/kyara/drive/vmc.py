"""VMC protocol (OSC over UDP; protocol.vmc.info) as a pose source: kyara acts as a Marionette.

Messages used (everything else is ignored):

* ``/VMC/Ext/Blend/Val (s)name (f)value`` — accumulate; ``/VMC/Ext/Blend/Apply`` — commit a frame.
* ``/VMC/Ext/Bone/Pos (s)name px py pz qx qy qz qw`` for ``Neck`` and ``Head`` — the head
  orientation is Neck⊗Head (VSeeFace splits head turns over both bones).

Blend names are VRM BlendShapeProxy names, case-sensitive: VRM 0.x presets (A I U E O Blink
Blink_L Blink_R Joy Angry Sorrow Fun LookUp LookDown LookLeft LookRight), VRM 1.0 presets (aa ih
ou ee oh blink blinkLeft blinkRight happy angry sad relaxed surprised lookUp lookDown lookLeft
lookRight) and "perfect sync" ARKit names (``eyeBlinkLeft`` or ``EyeBlinkLeft``). Blinks and gaze
become ARKit blendshapes; vowels and emotions go straight to THA3 parameters (ArkitFrame.direct).

Angles: Unity is left-handed (x right, y up, z forward; the avatar faces +z). Unity Euler angles
(order Z, X, Y) are converted to the ARKit convention of ArkitFrame: pitch = +x (down), yaw = −y,
roll = −z, so an avatar turning to its own right gives head_y > 0, like a person doing so in
front of iFacialMocap.
"""
from __future__ import annotations

import math
import time
from types import MappingProxyType

from kyara.drive.arkit import ARKIT_SET, ArkitFrame, ArkitMapping
from kyara.drive.osc import parse_osc_packet
from kyara.drive.source import ProtocolError
from kyara.drive.udp import ArkitUdpReceiver
from kyara.pose import both

VMC_MARIONETTE_PORT = 39539
MAX_BLEND_NAMES = 512  # distinct names remembered; more is garbage or an attack

# VRM blink/gaze presets → ARKit blendshapes they stand for.
_VRM_TO_ARKIT: dict[str, tuple[str, ...]] = {
    "Blink": ("eyeBlinkLeft", "eyeBlinkRight"), "blink": ("eyeBlinkLeft", "eyeBlinkRight"),
    "Blink_L": ("eyeBlinkLeft",), "blinkLeft": ("eyeBlinkLeft",),
    "Blink_R": ("eyeBlinkRight",), "blinkRight": ("eyeBlinkRight",),
    "LookUp": ("eyeLookUpLeft", "eyeLookUpRight"), "lookUp": ("eyeLookUpLeft", "eyeLookUpRight"),
    "LookDown": ("eyeLookDownLeft", "eyeLookDownRight"), "lookDown": ("eyeLookDownLeft", "eyeLookDownRight"),
    # Looking to the avatar's own left: the left eye looks out, the right eye looks in.
    "LookLeft": ("eyeLookOutLeft", "eyeLookInRight"), "lookLeft": ("eyeLookOutLeft", "eyeLookInRight"),
    "LookRight": ("eyeLookInLeft", "eyeLookOutRight"), "lookRight": ("eyeLookInLeft", "eyeLookOutRight"),
}

_JOY = {**both("eye_happy_wink", 1.0), **both("eyebrow_happy", 1.0), **both("mouth_raised_corner", 1.0)}
_ANGRY = {**both("eyebrow_angry", 1.0), **both("eye_unimpressed", 0.3), **both("mouth_lowered_corner", 0.6)}
_SORROW = {**both("eyebrow_troubled", 1.0), **both("eye_relaxed", 0.4), **both("mouth_lowered_corner", 1.0)}
_FUN = {**both("eyebrow_happy", 0.6), **both("mouth_raised_corner", 1.0)}
_RELAXED = {**both("eye_relaxed", 1.0), **both("mouth_raised_corner", 0.4)}
_SURPRISED = {**both("eye_surprised", 1.0), **both("eyebrow_raised", 1.0), **both("iris_small", 0.4)}

# VRM vowel/emotion presets → THA3 parameters at full weight.
_VRM_TO_THA: dict[str, dict[str, float]] = {
    "A": {"mouth_aaa": 1.0}, "aa": {"mouth_aaa": 1.0},
    "I": {"mouth_iii": 1.0}, "ih": {"mouth_iii": 1.0},
    "U": {"mouth_uuu": 1.0}, "ou": {"mouth_uuu": 1.0},
    "E": {"mouth_eee": 1.0}, "ee": {"mouth_eee": 1.0},
    "O": {"mouth_ooo": 1.0}, "oh": {"mouth_ooo": 1.0},
    "Joy": _JOY, "happy": _JOY,
    "Angry": _ANGRY, "angry": _ANGRY,
    "Sorrow": _SORROW, "sad": _SORROW,
    "Fun": _FUN, "relaxed": _RELAXED, "surprised": _SURPRISED,
}


def _arkit_name(name: str) -> str | None:
    """Perfect-sync name → ARKit spelling ('EyeBlinkLeft' and 'eyeBlinkLeft' both work)."""
    if name in ARKIT_SET:
        return name
    lowered = name[:1].lower() + name[1:]
    return lowered if lowered in ARKIT_SET else None


def _qmul(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Hamilton product a⊗b of (x, y, z, w) quaternions: rotate by b, then by a."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def unity_quaternion_to_euler_deg(q: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Unity (x, y, z, w) rotation → Unity Euler angles (x, y, z) in degrees, R = Ry·Rx·Rz."""
    x, y, z, w = q
    sin_x = max(-1.0, min(1.0, 2.0 * (w * x - y * z)))
    ex = math.asin(sin_x)
    ey = math.atan2(2.0 * (w * y + x * z), 1.0 - 2.0 * (x * x + y * y))
    ez = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (x * x + z * z))
    return math.degrees(ex), math.degrees(ey), math.degrees(ez)


def _float_arg(args: tuple, i: int, address: str) -> float:
    v = args[i]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"{address}: argument {i} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ProtocolError(f"{address}: argument {i} is not finite")
    return v


class VmcState:
    """Pure VMC Marionette state machine: feed() OSC packets, get ArkitFrames on Apply.

    A packet is validated completely before any of it is applied, so a malformed packet changes
    nothing. Blend values persist across Apply (senders that only send changes work).
    Senders that never send Blend/Apply (bones only) get a frame per packet that moves the head.
    """

    def __init__(self) -> None:
        self._blend: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._neck: tuple[float, float, float, float] | None = None
        self._head: tuple[float, float, float, float] | None = None
        self._seen_apply = False
        self.unknown_blend_names = 0

    def feed(self, packet: bytes, now: float | None = None) -> ArkitFrame | None:
        """Raises ProtocolError for malformed packets (state untouched)."""
        ops: list[tuple] = []
        for msg in parse_osc_packet(packet):
            a, args = msg.address, msg.args
            if a == "/VMC/Ext/Blend/Val":
                if len(args) < 2 or not isinstance(args[0], str):
                    raise ProtocolError(f"{a}: expected (string name, float value)")
                v = _float_arg(args, 1, a)
                if abs(v) > 1e3:
                    raise ProtocolError(f"{a}: value {v:g} out of range")
                ops.append(("val", args[0], min(max(v, 0.0), 1.0)))
            elif a == "/VMC/Ext/Blend/Apply":
                ops.append(("apply",))
            elif a == "/VMC/Ext/Bone/Pos":
                if len(args) < 8 or not isinstance(args[0], str):
                    raise ProtocolError(f"{a}: expected (string name, 3 position floats, 4 quaternion floats)")
                if args[0] not in ("Head", "Neck"):
                    continue
                q = tuple(_float_arg(args, i, a) for i in range(4, 8))
                norm = math.sqrt(sum(c * c for c in q))
                if not 0.5 <= norm <= 2.0:
                    raise ProtocolError(f"{a}: {args[0]} quaternion norm {norm:g} is not ~1")
                ops.append((args[0], tuple(c / norm for c in q)))
        # Commit.
        applied = head_moved = False
        for op in ops:
            if op[0] == "val":
                if op[1] not in self._pending and len(self._pending) >= MAX_BLEND_NAMES:
                    continue
                self._pending[op[1]] = op[2]
            elif op[0] == "apply":
                self._blend.update(self._pending)
                if len(self._blend) > MAX_BLEND_NAMES:  # keep memory bounded under hostile input
                    self._blend = dict(list(self._blend.items())[-MAX_BLEND_NAMES:])
                self._pending.clear()
                self._seen_apply = applied = True
            elif op[0] == "Head":
                self._head, head_moved = op[1], True
            else:
                self._neck, head_moved = op[1], True
        if applied or (head_moved and not self._seen_apply):
            return self.frame(time.monotonic() if now is None else now)
        return None

    def frame(self, timestamp: float = 0.0) -> ArkitFrame:
        """The current state as an ArkitFrame."""
        shapes: dict[str, float] = {}
        direct: dict[str, float] = {}
        unknown = 0
        for name, v in self._blend.items():
            if name in _VRM_TO_ARKIT:
                for arkit in _VRM_TO_ARKIT[name]:
                    shapes[arkit] = max(shapes.get(arkit, 0.0), v)
            elif name in _VRM_TO_THA:
                for param, weight in _VRM_TO_THA[name].items():
                    direct[param] = max(direct.get(param, 0.0), weight * v)
            elif (arkit := _arkit_name(name)) is not None:
                shapes[arkit] = max(shapes.get(arkit, 0.0), v)
            else:
                unknown += 1
        self.unknown_blend_names = unknown
        pitch = yaw = roll = 0.0
        q = self._head if self._neck is None else (self._neck if self._head is None else _qmul(self._neck, self._head))
        if q is not None:
            ex, ey, ez = unity_quaternion_to_euler_deg(q)
            pitch, yaw, roll = ex, -ey, -ez
        return ArkitFrame(blendshapes=shapes, head_pitch_deg=pitch, head_yaw_deg=yaw, head_roll_deg=roll,
                          timestamp=timestamp, direct=MappingProxyType(direct))


class VmcReceiver(ArkitUdpReceiver):
    """PoseSource for VMC senders (VSeeFace, VNyan, Warudo, VMagicMirror, Waidayo, ...).

    Listens on host:port (default 127.0.0.1:39539, the Marionette port).
    """

    default_name = "vmc"

    def __init__(self, port: int = VMC_MARIONETTE_PORT, host: str = "127.0.0.1",
                 mapping: ArkitMapping = ArkitMapping(), name: str | None = None,
                 stale_after_s: float = 2.0) -> None:
        super().__init__(port, host, mapping, name, stale_after_s)
        self.state = VmcState()

    def _parse(self, data: bytes, now: float) -> ArkitFrame | None:
        return self.state.feed(data, now)
