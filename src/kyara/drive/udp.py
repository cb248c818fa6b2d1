"""UDP receiver plumbing shared by the tracker sources: a socket read by a daemon thread.

A subclass supplies ``_parse(data, now) -> ArkitFrame | None``; ProtocolError there drops and
counts the packet. The latest frame is mapped to pose values lazily in latest(), so calibration
and mapping changes apply at once.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

from kyara.drive.arkit import ArkitFrame, ArkitFrameSource, ArkitMapping
from kyara.drive.source import PoseSource, ProtocolError

MAX_PACKET_BYTES = 64 * 1024     # larger datagrams are dropped as malformed
RECEIVE_BUFFER_BYTES = 1 << 20   # room for a burst of packets while the thread is busy
POLL_S = 0.05                    # socket timeout: bounds how long stop() waits for the thread
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ArkitUdpReceiver(ArkitFrameSource, PoseSource):
    """Listens on UDP host:port, parses packets into ArkitFrames, maps them to pose values.

    host defaults to 127.0.0.1 (project rule); use "0.0.0.0" to accept a phone on the LAN.
    port 0 picks a free port (see ``address`` after start()). stale_after_s: latest() returns
    None when the newest frame is older than this.
    """

    default_name = "udp"

    def __init__(self, port: int, host: str = "127.0.0.1", mapping: ArkitMapping = ArkitMapping(),
                 name: str | None = None, stale_after_s: float = 2.0) -> None:
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"UDP port must be in 0..65535, got {port}")
        self.name = name or self.default_name
        self.host = host
        self.port = int(port)
        self._init_frames(mapping, stale_after_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._ok = 0
        self._dropped = 0
        self._last_packet_time: float | None = None
        self._last_error = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            except OSError:
                pass  # a smaller kernel default still works
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            # Stays an OSError (callers treat a busy port as non-fatal) but names host, port and a fix.
            raise OSError(e.errno,
                          f"{self.name}: cannot listen on UDP {self.host}:{self.port}: {e.strerror or e} "
                          "(is another tracker app or kyara already using this port? choose another port)") from None
        sock.settimeout(POLL_S)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stop.clear()
        self._on_start(sock)
        self._thread = threading.Thread(target=self._run, name=f"kyara-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the port is only final after start()."""
        return self.host, self.port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- receive loop -------------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            self._on_idle(sock)
            try:
                data, _addr = sock.recvfrom(MAX_PACKET_BYTES + 1)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                time.sleep(POLL_S)  # transient error (e.g. ICMP port unreachable on some OSes)
                continue
            self.handle_packet(data, time.monotonic())

    def handle_packet(self, data: bytes, now: float) -> bool:
        """Parse one datagram (also usable without a socket); True if accepted."""
        try:
            if len(data) > MAX_PACKET_BYTES:
                raise ProtocolError(f"packet of {len(data)} bytes exceeds {MAX_PACKET_BYTES}")
            frame = self._parse(data, now)
        except ProtocolError as e:
            with self._lock:
                self._dropped += 1
                self._last_error = str(e)[:200]
            return False
        except Exception as e:  # a parser bug must not kill the thread; count it as a drop
            with self._lock:
                self._dropped += 1
                self._last_error = f"internal error: {type(e).__name__}: {e}"[:200]
            return False
        with self._lock:
            self._ok += 1
            self._last_packet_time = now
            if frame is not None:
                self._publish_frame(replace(frame, timestamp=now))
        if frame is not None:
            self._input_arrived(now)
        return True

    # -- hooks for subclasses -----------------------------------------------------------------
    def _parse(self, data: bytes, now: float) -> ArkitFrame | None:
        raise NotImplementedError

    def _on_start(self, sock: socket.socket) -> None:
        """Called after bind, before the thread starts."""

    def _on_idle(self, sock: socket.socket) -> None:
        """Called from the receive thread at least every POLL_S seconds."""

    # -- PoseSource ---------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            return {
                "packets_ok": self._ok,
                "packets_dropped": self._dropped,
                "last_packet_time": self._last_packet_time,
                "last_error": self._last_error,
                "host": self.host,
                "port": self.port,
                "running": self.running,
                "calibrated": self.calibration is not None,
            }
