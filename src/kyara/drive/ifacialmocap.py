"""iFacialMocap (iPhone ARKit face capture) over UDP: strict parser and receiver.

Protocol (ifacialmocap.com/for-developer; peers-and-protocols.md §5.2): the PC sends the start
string to the phone's UDP 49983; the phone then streams one text datagram per frame (60 fps) to
the PC's UDP 49983::

    mouthSmile_R&0|eyeBlink_L&7|...|=head#pitch,yaw,roll,px,py,pz|rightEye#x,y,z|leftEye#x,y,z|

Blendshape values are 0–100, angles degrees. v2 (requested by the ``|sendDataVersion=v2`` suffix
of the start string) separates name and value with ``&``; v1 uses ``-``. Both are accepted.
Raw ARKit names use ``_L``/``_R``; they become ``Left``/``Right``. Unknown names (e.g.
Facemotion3d's ``FM_*`` extras) are ignored; a packet with no known field at all is malformed.
"""
from __future__ import annotations

import ipaddress
import math
import re
import socket
import time

from kyara.drive.arkit import ARKIT_SET, ArkitFrame, ArkitMapping
from kyara.drive.source import ProtocolError
from kyara.drive.udp import LOOPBACK_HOSTS, ArkitUdpReceiver

IFACIALMOCAP_PORT = 49983
START_STRING = b"iFacialMocap_sahuasouryya9218sauhuiayeta91555dy3719|sendDataVersion=v2"
_TCP_SUFFIX = "___iFacialMocap"
MAX_FIELDS = 1024
MAX_ABS_VALUE = 1e6   # anything larger is garbage, not a pose
RESEND_START_S = 3.0  # re-send the start string while the phone is silent this long

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}", re.ASCII)


def _number(text: str, what: str) -> float:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise ProtocolError(f"iFacialMocap {what}: {text[:32]!r} is not a number")
    v = float(text)
    if not math.isfinite(v) or abs(v) > MAX_ABS_VALUE:
        raise ProtocolError(f"iFacialMocap {what}: value {text[:32]!r} out of range")
    return v


def _numbers(text: str, what: str, counts: tuple[int, ...]) -> list[float]:
    parts = text.split(",")
    if len(parts) not in counts:
        raise ProtocolError(f"iFacialMocap {what}: expected {' or '.join(map(str, counts))} numbers, got {len(parts)}")
    return [_number(p, what) for p in parts]


def _arkit_name(raw: str) -> str:
    if raw.endswith("_L"):
        return raw[:-2] + "Left"
    if raw.endswith("_R"):
        return raw[:-2] + "Right"
    return raw


def parse_ifacialmocap_v2(data: bytes) -> ArkitFrame:
    """One iFacialMocap datagram → ArkitFrame (timestamp 0.0; receivers set the arrival time).

    Raises ProtocolError (and nothing else) on malformed input: not UTF-8, a field that is neither
    ``name&value``/``name-value`` nor ``key#numbers``, non-numeric/NaN/inf/|x|>1e6 numbers, wrong
    number counts, more than MAX_FIELDS fields, or no known field at all.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"iFacialMocap packet must be bytes, got {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("iFacialMocap packet is not UTF-8 text") from None
    text = text.strip()
    if text.endswith(_TCP_SUFFIX):
        text = text[: -len(_TCP_SUFFIX)]
    fields = text.split("|")
    if len(fields) > MAX_FIELDS:
        raise ProtocolError(f"iFacialMocap packet has more than {MAX_FIELDS} fields")

    shapes: dict[str, float] = {}
    head: list[float] | None = None
    for field in fields:
        field = field.strip()
        if not field:
            continue
        if "#" in field:
            key, _, rest = field.partition("#")
            key = key.strip()
            if key in ("=head", "head"):
                head = _numbers(rest, "head", (3, 6))
            elif key in ("rightEye", "leftEye"):
                _numbers(rest, key, (3,))  # validated; gaze comes from the eyeLook blendshapes
            elif not _NAME.fullmatch(key.lstrip("=")):
                raise ProtocolError(f"iFacialMocap field {field[:40]!r}: bad key")
            continue
        sep = "&" if "&" in field else "-"
        name, found, value = field.partition(sep)
        if not found or not _NAME.fullmatch(name):
            raise ProtocolError(f"iFacialMocap field {field[:40]!r} is not name{sep}value")
        v = _number(value, name)
        name = _arkit_name(name)
        if name in ARKIT_SET:
            shapes[name] = min(max(v / 100.0, 0.0), 1.0)
    if not shapes and head is None:
        raise ProtocolError("iFacialMocap packet holds no known blendshape or head pose")
    pitch, yaw, roll = head[:3] if head is not None else (0.0, 0.0, 0.0)
    return ArkitFrame(blendshapes=shapes, head_pitch_deg=pitch, head_yaw_deg=yaw, head_roll_deg=roll)


class IFacialMocapReceiver(ArkitUdpReceiver):
    """PoseSource for iFacialMocap (and compatible senders: Facemotion3d, NVIDIA Broadcast build,
    MeowFace). Listens on host:port (default 127.0.0.1:49983).

    phone_ip: if given, the start string is sent from the listening socket to phone_ip:49983 on
    start() and again every few seconds while nothing arrives, so the phone streams to us. That
    needs a LAN-reachable listen host (``--listen-host 0.0.0.0``).
    """

    default_name = "ifacialmocap"

    def __init__(self, port: int = IFACIALMOCAP_PORT, host: str = "127.0.0.1",
                 mapping: ArkitMapping = ArkitMapping(), phone_ip: str | None = None,
                 phone_port: int = IFACIALMOCAP_PORT, name: str | None = None,
                 stale_after_s: float = 2.0) -> None:
        super().__init__(port, host, mapping, name, stale_after_s)
        if phone_ip is not None:
            try:
                ip = ipaddress.ip_address(phone_ip)
            except ValueError:
                raise ValueError(f"phone_ip must be an IP address like 192.168.1.7, got {phone_ip!r}") from None
            if host in LOOPBACK_HOSTS and not ip.is_loopback:
                raise ValueError(
                    f"phone_ip {phone_ip} is on the network but the receiver listens on {host} only; "
                    "start with --listen-host 0.0.0.0 (or this PC's LAN address) so the phone can reach it")
            phone_ip = str(ip)
        self.phone_ip = phone_ip
        self.phone_port = int(phone_port)
        self._last_start_sent = -math.inf

    def _parse(self, data: bytes, now: float) -> ArkitFrame:
        return parse_ifacialmocap_v2(data)

    def _send_start(self, sock: socket.socket) -> None:
        self._last_start_sent = time.monotonic()
        try:
            sock.sendto(START_STRING, (self.phone_ip, self.phone_port))
        except OSError as e:  # phone unreachable right now: retry later, never kill the thread
            with self._lock:
                self._last_error = f"cannot send start string to {self.phone_ip}: {e}"[:200]

    def _on_start(self, sock: socket.socket) -> None:
        if self.phone_ip is not None:
            self._send_start(sock)

    def _on_idle(self, sock: socket.socket) -> None:
        if self.phone_ip is None:
            return
        now = time.monotonic()
        last = self._last_packet_time if self._last_packet_time is not None else -math.inf
        if now - last > RESEND_START_S and now - self._last_start_sent > RESEND_START_S:
            self._send_start(sock)

    def stats(self) -> dict:
        out = super().stats()
        out["phone_ip"] = self.phone_ip
        return out
