"""Test-only senders written from the protocol documents, independent of kyara.drive.

* iFacialMocap: ifacialmocap.com/for-developer — ``name&value|...|=head#rx,ry,rz,px,py,pz|
  rightEye#rx,ry,rz|leftEye#rx,ry,rz|`` with raw ARKit names (``_L``/``_R``), values 0–100, degrees.
* VMC: protocol.vmc.info — OSC over UDP, built with python-osc (an independent OSC encoder):
  ``/VMC/Ext/Bone/Pos name px py pz qx qy qz qw``, ``/VMC/Ext/Blend/Val name value``,
  ``/VMC/Ext/Blend/Apply``, bundled per frame.
"""
from __future__ import annotations

import math
import socket

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

# The 52 ARKit names as iFacialMocap spells them on the wire (Apple's raw values: _L / _R).
_WIRE_SUFFIX = {"Left": "_L", "Right": "_R"}


def arkit_wire_name(name: str) -> str:
    for long, short in _WIRE_SUFFIX.items():
        if name.endswith(long):
            return name[: -len(long)] + short
    return name


def ifacialmocap_packet(blendshapes: dict[str, float], head_deg=(0.0, 0.0, 0.0), head_pos=(0.0, 0.0, 0.0),
                        right_eye=(0.0, 0.0, 0.0), left_eye=(0.0, 0.0, 0.0), version: int = 2) -> bytes:
    """blendshapes: ARKit Swift names → weight 0..1 (sent as integers 0..100 like the app)."""
    sep = "&" if version == 2 else "-"
    parts = [f"{arkit_wire_name(n)}{sep}{round(v * 100)}" for n, v in blendshapes.items()]
    parts.append("=head#" + ",".join(f"{x:.6f}" for x in (*head_deg, *head_pos)))
    parts.append("rightEye#" + ",".join(f"{x:.6f}" for x in right_eye))
    parts.append("leftEye#" + ",".join(f"{x:.6f}" for x in left_eye))
    return ("|".join(parts) + "|").encode("utf-8")


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


def osc_message(address: str, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def vmc_frame(blends: dict[str, float] | None = None, head_quat=None, neck_quat=None, apply: bool = True) -> bytes:
    """One VMC frame as an OSC bundle (Bone/Pos for Neck/Head, Blend/Val..., Blend/Apply)."""
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(_ok())
    for name, q in (("Neck", neck_quat), ("Head", head_quat)):
        if q is not None:
            m = OscMessageBuilder(address="/VMC/Ext/Bone/Pos")
            m.add_arg(name)
            for v in (0.0, 0.1, 0.0, *q):
                m.add_arg(float(v), "f")
            bundle.add_content(m.build())
    for name, v in (blends or {}).items():
        m = OscMessageBuilder(address="/VMC/Ext/Blend/Val")
        m.add_arg(name)
        m.add_arg(float(v), "f")
        bundle.add_content(m.build())
    if apply:
        bundle.add_content(OscMessageBuilder(address="/VMC/Ext/Blend/Apply").build())
    return bundle.build().dgram


def _ok():
    m = OscMessageBuilder(address="/VMC/Ext/OK")
    m.add_arg(1, "i")
    return m.build()


class UdpSender:
    """Sends datagrams to 127.0.0.1:port."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.addr)

    def close(self) -> None:
        self.sock.close()
