"""Test-only tracker senders written from the protocol documents, independent of kyara.drive.

Nothing here imports kyara: the receivers are checked against what the documents say senders put
on the wire, not against themselves.

* iFacialMocap (ifacialmocap.com/for-developer; docs/../peers-and-protocols.md §5.2): one UDP
  datagram of UTF-8 text per frame, ``name&value|...|=head#rx,ry,rz,px,py,pz|rightEye#rx,ry,rz|
  leftEye#rx,ry,rz|`` (v2; v1 writes ``name-value``) with raw ARKit names (``_L``/``_R``),
  blendshape values as integers 0–100, angles in degrees.
* VMC (protocol.vmc.info, §5.1): OSC 1.0 over UDP — ``/VMC/Ext/Bone/Pos (s)name px py pz qx qy qz qw``,
  ``/VMC/Ext/Blend/Val (s)name (f)value`` then ``/VMC/Ext/Blend/Apply``; one bundle per frame, or
  the same messages as separate datagrams. The OSC encoder below is written from the OSC 1.0
  specification (opensoundcontrol.stanford.edu/spec-1_0): OSC-strings NUL-terminated and padded to
  4 bytes, big-endian int32/float32, type tag string ``,ifsbTF``, bundles ``#bundle\\0`` + 64-bit
  time tag + (int32 size, element) pairs.
"""
from __future__ import annotations

import math
import socket
import struct

# -- OSC 1.0 encoder --------------------------------------------------------------------------
IMMEDIATELY = 1  # the special time tag 0x0000000000000001: "process immediately"


def osc_string(text: str) -> bytes:
    """UTF-8 bytes, a NUL, then NULs up to a multiple of 4 bytes."""
    raw = text.encode("utf-8") + b"\x00"
    return raw + b"\x00" * (-len(raw) % 4)


def osc_blob(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data + b"\x00" * (-len(data) % 4)


def osc_message(address: str, *args) -> bytes:
    """One OSC message. Argument types by Python type: bool → T/F, int → i (int32), float → f
    (float32), str → s, bytes → b. A (value, tag) tuple forces the tag ("i", "f", "s", "b")."""
    tags = ","
    payload = b""
    for arg in args:
        value, tag = arg if isinstance(arg, tuple) else (arg, None)
        if tag is None:
            if isinstance(value, bool):
                tags += "T" if value else "F"
                continue
            tag = {int: "i", float: "f", str: "s", bytes: "b"}.get(type(value))
            if tag is None:
                raise TypeError(f"no OSC type for {type(value).__name__}")
        tags += tag
        if tag == "i":
            payload += struct.pack(">i", value)
        elif tag == "f":
            payload += struct.pack(">f", value)
        elif tag == "s":
            payload += osc_string(value)
        elif tag == "b":
            payload += osc_blob(value)
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r}")
    return osc_string(address) + osc_string(tags) + payload


def osc_bundle(*elements: bytes, timetag: int = IMMEDIATELY) -> bytes:
    """A bundle of encoded messages (or bundles), each prefixed with its int32 size."""
    return b"#bundle\x00" + struct.pack(">Q", timetag) + b"".join(struct.pack(">i", len(e)) + e for e in elements)


# -- iFacialMocap -------------------------------------------------------------------------------
_WIRE_SUFFIX = {"Left": "_L", "Right": "_R"}


def arkit_wire_name(name: str) -> str:
    """ARKit Swift name → the raw spelling iFacialMocap sends (eyeBlinkLeft → eyeBlink_L)."""
    for long, short in _WIRE_SUFFIX.items():
        if name.endswith(long):
            return name[: -len(long)] + short
    return name


def ifacialmocap_packet(blendshapes: dict[str, float], head_deg=(0.0, 0.0, 0.0), head_pos=(0.0, 0.0, 0.0),
                        right_eye=(0.0, 0.0, 0.0), left_eye=(0.0, 0.0, 0.0), version: int = 2) -> bytes:
    """blendshapes: ARKit Swift names → weight 0..1 (sent as integers 0..100 like the app).
    head_deg: (pitch, yaw, roll) degrees as the app sends them (rx, ry, rz)."""
    sep = "&" if version == 2 else "-"
    parts = [f"{arkit_wire_name(n)}{sep}{round(v * 100)}" for n, v in blendshapes.items()]
    parts.append("=head#" + ",".join(f"{x:.6f}" for x in (*head_deg, *head_pos)))
    parts.append("rightEye#" + ",".join(f"{x:.6f}" for x in right_eye))
    parts.append("leftEye#" + ",".join(f"{x:.6f}" for x in left_eye))
    return ("|".join(parts) + "|").encode("utf-8")


# -- VMC ----------------------------------------------------------------------------------------
def unity_quaternion(x_deg=0.0, y_deg=0.0, z_deg=0.0) -> tuple[float, float, float, float]:
    """Unity Quaternion.Euler(x, y, z) = Ry · Rx · Rz, as (x, y, z, w)."""
    def axis(ax, deg):
        h = math.radians(deg) / 2
        q = [0.0, 0.0, 0.0, math.cos(h)]
        q[ax] = math.sin(h)
        return q

    def mul(a, b):
        ax, ay, az, aw = a
        bx, by, bz, bw = b
        return [aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz]

    return tuple(mul(mul(axis(1, y_deg), axis(0, x_deg)), axis(2, z_deg)))


def vmc_messages(blends: dict[str, float] | None = None, head_quat=None, neck_quat=None,
                 apply: bool = True) -> list[bytes]:
    """One VMC frame as separate OSC messages: OK, Bone/Pos (Neck, Head), Blend/Val..., Blend/Apply."""
    messages = [osc_message("/VMC/Ext/OK", 1)]
    for name, q in (("Neck", neck_quat), ("Head", head_quat)):
        if q is not None:
            messages.append(osc_message("/VMC/Ext/Bone/Pos", name, *((float(v), "f") for v in (0.0, 0.1, 0.0, *q))))
    for name, v in (blends or {}).items():
        messages.append(osc_message("/VMC/Ext/Blend/Val", name, (float(v), "f")))
    if apply:
        messages.append(osc_message("/VMC/Ext/Blend/Apply"))
    return messages


def vmc_frame(blends: dict[str, float] | None = None, head_quat=None, neck_quat=None, apply: bool = True) -> bytes:
    """One VMC frame as one OSC bundle (the messages of ``vmc_messages``)."""
    return osc_bundle(*vmc_messages(blends, head_quat, neck_quat, apply))


# -- transport ----------------------------------------------------------------------------------
class UdpSender:
    """Sends datagrams to host:port (default 127.0.0.1)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    def close(self) -> None:
        self.sock.close()


class IFacialMocapSender(UdpSender):
    """An iFacialMocap v2 phone app, as far as the PC side can tell: text frames to UDP port."""

    def send_frame(self, blendshapes: dict[str, float], head_deg=(0.0, 0.0, 0.0), version: int = 2) -> None:
        self.send(ifacialmocap_packet(blendshapes, head_deg=head_deg, version=version))


class VmcSender(UdpSender):
    """A VMC Performer/Assistant: one bundle per frame, or (bundle=False) one datagram per message."""

    def send_frame(self, blends: dict[str, float] | None = None, head_quat=None, neck_quat=None,
                   bundle: bool = True) -> None:
        if bundle:
            self.send(vmc_frame(blends, head_quat, neck_quat))
        else:
            for message in vmc_messages(blends, head_quat, neck_quat):
                self.send(message)
