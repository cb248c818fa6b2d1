"""A `kyara live` session's configuration: ``LiveConfig``, the one home of every live default.
``kyara.server.runner.run_live(config)`` runs a session from it. This module imports nothing from
the engine or the server (both read their settings from here), so it sits below them.

``kyara live`` maps each flag 1:1 onto a ``LiveConfig`` field of the same name; Python callers
build the same object. Nothing starts at import time.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from kyara.drive.ifacialmocap import IFACIALMOCAP_PORT
from kyara.drive.vmc import VMC_MARIONETTE_PORT
from kyara.errors import KyaraError

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_TEACHER = "tha3/separable_float"
TOKEN_FORBIDDEN = " &#?/"
RENDER_MODES = ("server", "browser")  # where frames are drawn: here (WebP) or in each page (pose packets)
# --render choices: "auto" (the default) is browser for a student the pages can run, else server
# (kyara.server.runner.render_mode resolves it once the character is loaded).
RENDER_CHOICES = (*RENDER_MODES, "auto")
# Server frames on a CPU: 30 frames/s keep a 2-core machine's live server under one core with the lite
# student (0.90 cores measured; rendering at 60 took 1.4 and left little to OBS and a game). --server-fps N.
CPU_SERVER_FPS = 30.0


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_origin(origin: str) -> str:
    """"HTTP://Host:8080/" → "http://host:8080"; KyaraError unless it is scheme://host[:port]."""
    parts = urlsplit(origin.strip())
    try:
        port = parts.port  # raises ValueError for a bad port
    except ValueError:
        port = -1
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or port == -1:
        raise KyaraError(f"--allow-origin {origin!r}: expected an origin like http://localhost:3000 "
                         "(scheme, host and optional port; no path, no wildcard)")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class LiveConfig:
    """Everything a live session is configured with; fields are named like the `kyara live` flags.

    Constructing one validates it (KyaraError naming the flag). Network: binds ``host`` (loopback by
    default; anything else needs ``token``); browsers are only served from the studio's own origin
    or ``allowed_origins``. Sizes are bytes; ``fps`` is the render loop's target rate.
    """
    character: str | None = None          # .kyara file (None: the bundled sample); an image with teacher
    host: str = "127.0.0.1"
    port: int = 8765                      # 0 picks a free port
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()  # extra browser origins allowed to call the API / WebSocket
    device: str = "auto"
    open_browser: bool = True
    teacher: bool = False
    student: str = "auto"                 # auto | lite | full (kyara.student.lite.use_student)
    fps: float = 60.0                     # the mixer's tick: pose packets to pages, server frames at most this often
    server_fps: float | None = None       # most frames/s the server renders (None: fps, but at most
                                          # CPU_SERVER_FPS on a CPU, where each frame costs ~27 CPU-ms)
    encoders: int = 3                     # WebP encoder threads
    render: str = "auto"                  # browser: pose packets, pages draw; server: WebP frames drawn here;
                                          # auto: browser unless the character cannot run in a page
    trackers: bool = True                 # start the iFacialMocap and VMC receivers
    ifacialmocap_port: int = IFACIALMOCAP_PORT
    ifacialmocap_phone_ip: str | None = None
    vmc_port: int = VMC_MARIONETTE_PORT
    listen_host: str = "127.0.0.1"        # address the tracker receivers bind
    webcam: int | None = None
    webcam_model: str | None = None
    audio: str | None = None
    audio_loop: bool = False
    mic: bool = False
    mic_device: int | str | None = None   # implies mic
    max_body_bytes: int = 64 * 1024       # HTTP request bodies; larger → 413
    max_ws_message_bytes: int = 64 * 1024  # WebSocket messages; larger → dropped with an error reply
    max_ws_frame_bytes: int = 1024 * 1024  # transport cap: a larger message closes the connection (1009)
    status_interval_s: float = 0.5

    def __post_init__(self) -> None:
        origins = tuple(normalize_origin(o) for o in (self.allowed_origins or ()))  # None: none (the CLI's default)
        object.__setattr__(self, "allowed_origins", origins)
        if not is_loopback(self.host) and not self.token:
            raise KyaraError(f"--host {self.host or '0.0.0.0'} exposes the studio beyond this machine; it requires "
                             "--token (anyone who can reach the port could drive the character otherwise)")
        if self.token is not None and (len(self.token) < 8 or not self.token.isprintable()
                                       or any(c in self.token for c in TOKEN_FORBIDDEN)):
            raise KyaraError("--token must be at least 8 printable characters without spaces or any of & # ? /")
        for flag, port in (("--port", self.port), ("--ifacialmocap-port", self.ifacialmocap_port),
                           ("--vmc-port", self.vmc_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise KyaraError(f"{flag} {port} is not a port number (0-65535)")
        if not self.fps > 0 or self.fps > 240:
            raise KyaraError(f"--fps must be in (0, 240], got {self.fps}")
        if self.server_fps is not None and not 0 < self.server_fps <= 240:
            raise KyaraError(f"--server-fps must be in (0, 240], got {self.server_fps}")
        if isinstance(self.encoders, bool) or not isinstance(self.encoders, int) or not 1 <= self.encoders <= 16:
            raise KyaraError(f"--encoders must be in [1, 16], got {self.encoders}")
        if self.render not in RENDER_CHOICES:
            raise KyaraError(f"--render must be one of {', '.join(RENDER_CHOICES)}, got {self.render!r}")
        if self.render == "browser" and self.teacher:
            raise KyaraError("--render browser needs a distilled student (the pages run it); --teacher renders "
                             "on the server only: drop --render browser")
        if self.ifacialmocap_phone_ip is not None and not self.trackers:
            raise KyaraError("--ifacialmocap-phone-ip needs the iFacialMocap receiver; drop --no-trackers")
        if min(self.max_body_bytes, self.max_ws_message_bytes) < 1024 \
                or self.max_ws_frame_bytes < self.max_ws_message_bytes:
            raise KyaraError("message size limits must be at least 1024 bytes, and the WebSocket frame cap at least "
                             "the message limit")
        if not self.status_interval_s > 0:
            raise KyaraError(f"status_interval_s must be > 0, got {self.status_interval_s}")

    def frame_fps(self, device_type: str) -> float:
        """The most frames per second the server renders on a device of this type ("cpu", "cuda", ...)."""
        if self.server_fps is not None:
            return min(self.server_fps, self.fps)
        return min(self.fps, CPU_SERVER_FPS) if device_type == "cpu" else self.fps

    @property
    def uses_mic(self) -> bool:
        return self.mic or self.mic_device is not None

    def replace(self, **changes) -> "LiveConfig":
        return dataclasses.replace(self, **changes)

    def url(self, path: str = "/", port: int | None = None) -> str:
        """The address to open from another machine: the LAN address when bound to all interfaces."""
        host = lan_address() if self.host in WILDCARD_HOSTS else self.host
        return self._url(host, path, port)

    def local_url(self, path: str = "/", port: int | None = None) -> str:
        """The address to open on this machine."""
        host = ("::1" if self.host == "::" else "127.0.0.1") if self.host in WILDCARD_HOSTS else self.host
        return self._url(host, path, port)

    def _url(self, host: str, path: str, port: int | None) -> str:
        host = f"[{host}]" if ":" in host else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port if port is None else port}{path}{query}"


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else its hostname's; 127.0.0.1
    when it has no network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, UDP connect sends nothing
            address = s.getsockname()[0]
            if address and not address.startswith(("0.", "127.")):
                return address
        except OSError:
            pass
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    except OSError:
        pass
    return "127.0.0.1"
