"""A `kyara live` session: its configuration (``LiveConfig``, the one home of every live default)
and ``run_live(config)``, which loads the character, starts the pose sources, binds the port and
serves ``kyara.server.app.create_app`` until interrupted.

``kyara live`` maps each flag 1:1 onto a ``LiveConfig`` field of the same name; Python callers
build the same object. Nothing starts at import time.
"""
from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kyara.drive.ifacialmocap import IFACIALMOCAP_PORT
from kyara.drive.vmc import VMC_MARIONETTE_PORT
from kyara.errors import KyaraError

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_TEACHER = "tha3/separable_float"
TOKEN_FORBIDDEN = " &#?/"


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
    fps: float = 60.0
    encoders: int = 3                     # WebP encoder threads
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
        if isinstance(self.encoders, bool) or not isinstance(self.encoders, int) or not 1 <= self.encoders <= 16:
            raise KyaraError(f"--encoders must be in [1, 16], got {self.encoders}")
        if self.ifacialmocap_phone_ip is not None and not self.trackers:
            raise KyaraError("--ifacialmocap-phone-ip needs the iFacialMocap receiver; drop --no-trackers")
        if min(self.max_body_bytes, self.max_ws_message_bytes) < 1024 \
                or self.max_ws_frame_bytes < self.max_ws_message_bytes:
            raise KyaraError("message size limits must be at least 1024 bytes, and the WebSocket frame cap at least "
                             "the message limit")
        if not self.status_interval_s > 0:
            raise KyaraError(f"status_interval_s must be > 0, got {self.status_interval_s}")

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


def bind_listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), so a taken port fails at once with a
    clear KyaraError instead of after the model load. uvicorn serves on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like uvicorn: restart without TIME_WAIT
        sock.bind((host or "0.0.0.0", port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise KyaraError(f"port {port} on {host} is in use (another program, maybe another `kyara live`, listens "
                             "there); pick another with --port N, or --port 0 for a free one") from None
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise KyaraError(f"--host {host}: not an address of this machine ({e.strerror})") from None
        if e.errno == errno.EACCES:
            raise KyaraError(f"port {port} on {host}: permission denied (ports below 1024 need privileges)") from None
        raise KyaraError(f"cannot bind {host}:{port}: {e.strerror or e}") from None
    except socket.gaierror as e:
        sock.close()
        raise KyaraError(f"--host {host}: {e}") from None
    return sock


def load_live_character(config: LiveConfig, print_fn=print):
    """A student from a .kyara file (default: the bundled sample), or with ``teacher`` a slow
    teacher-backed character from an image."""
    from kyara import character as character_module
    from kyara.poser import pick_device

    device_name = str(pick_device(config.device))
    character = config.character
    if character is None:
        sample = getattr(character_module, "SAMPLE_CHARACTER", None)
        if sample is None or not Path(sample).exists():
            raise KyaraError("no CHARACTER given and no bundled sample character is installed; "
                             "pass a .kyara file (make one with `kyara distill IMAGE`)")
        character = sample
    path = Path(character)
    if not path.exists():
        raise KyaraError(f"{path}: character file not found")
    if config.teacher:
        if character_module.is_student_path(path):
            raise KyaraError(f"{path}: --teacher needs a character image (.png, .webp, .jpg), not a distilled character")
        print_fn(f"warning: --teacher renders with the full {DEFAULT_TEACHER} model on {device_name}: expect a few "
                 "frames per second on CPU and ~20-40 fps on a GPU; distill a student for real-time use")
    elif not character_module.is_student_path(path):
        raise KyaraError(f"{path} is an image; distill it first (`kyara distill {path}`) or pass --teacher "
                         "to drive it with the slow teacher model")
    return character_module.load(path, teacher=DEFAULT_TEACHER, device=device_name)


def build_sources(config: LiveConfig, print_fn=print) -> list:
    """Start the pose sources the config asks for, in mixer order (later ones win where they overlap,
    so the audio and microphone mouths override a face tracker's): webcam, iFacialMocap, VMC, audio
    file, microphone. Tracker ports 0 pick free ports.

    A UDP port already in use is a warning, not fatal. A source the user asked for by name (webcam,
    audio, microphone) that cannot start is a KyaraError; sources already started are stopped first.
    """
    sources = []
    candidates = []
    listen_host, phone_ip = config.listen_host, config.ifacialmocap_phone_ip
    if config.webcam is not None:
        from kyara.drive.webcam import WebcamSource

        candidates.append((f"webcam {config.webcam} (MediaPipe face tracking; use Calibrate while looking at the "
                           "camera)", lambda: WebcamSource(config.webcam, model_path=config.webcam_model, log=print_fn)))
    if config.trackers:
        from kyara.drive.ifacialmocap import IFacialMocapReceiver
        from kyara.drive.vmc import VmcReceiver

        def make_ifacialmocap():
            try:
                return IFacialMocapReceiver(port=config.ifacialmocap_port, host=listen_host, phone_ip=phone_ip)
            except ValueError as e:  # phone_ip malformed, or a LAN phone with a loopback-only receiver
                raise KyaraError(f"--ifacialmocap-phone-ip: {e}") from None

        to_phone = f", start message to {phone_ip}:{IFACIALMOCAP_PORT}" if phone_ip else ""
        candidates.append((f"iFacialMocap UDP {listen_host}:{config.ifacialmocap_port}{to_phone}", make_ifacialmocap))
        candidates.append((f"VMC (OSC/UDP) {listen_host}:{config.vmc_port}",
                           lambda: VmcReceiver(port=config.vmc_port, host=listen_host)))
    if config.audio is not None:
        from kyara.drive.audio import AudioFileSource

        candidates.append((f"audio file {config.audio} ({'looping' if config.audio_loop else 'once'}; mouth only, "
                           "no sound)", lambda: AudioFileSource(config.audio, loop=config.audio_loop)))
    if config.uses_mic:
        from kyara.drive.audio import MicrophoneSource

        device = config.mic_device
        candidates.append((f"microphone {device if device is not None else '(default input)'}",
                           lambda: MicrophoneSource(device=device)))
    try:
        for label, make in candidates:
            source = make()
            try:
                source.start()
            except OSError as e:
                print_fn(f"warning: {label} not started: {e}")
                continue
            print_fn(f"listening: {label}")
            sources.append(source)
    except BaseException:
        for source in sources:
            source.stop()
        raise
    return sources


def run_live(config: LiveConfig, print_fn=print) -> None:
    """Serve the live studio until interrupted (what `kyara live` runs).

    Order matters for the user: the port is bound first (a taken port fails in milliseconds), then
    the character loads (seconds), then the sources start and uvicorn serves.
    """
    import threading
    import webbrowser

    import uvicorn

    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer
    from kyara.live.engine import LiveEngine
    from kyara.server.app import create_app, uvicorn_config

    sock = bind_listen_socket(config.host, config.port)
    sources: list = []
    engine = None
    try:
        port = sock.getsockname()[1]
        ch = load_live_character(config, print_fn)
        mixer = PoseMixer(MixerConfig(), IdleMotion(IdleConfig()))
        sources = build_sources(config, print_fn)
        for source in sources:
            mixer.add_source(source)
        engine = LiveEngine(ch, mixer, fps=config.fps, encoders=config.encoders)
        server = uvicorn.Server(uvicorn_config(create_app(engine, config), config))

        def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                threading.Event().wait(0.05)
            print_fn(f"kyara live: {getattr(ch, 'name', 'character')} on {engine.fps:g} fps target")
            print_fn(f"  studio:             {config.url('/', port)}")
            if config.host in WILDCARD_HOSTS:
                print_fn(f"  on this machine:    {config.local_url('/', port)}")
            print_fn(f"  OBS Browser Source: {config.url('/obs', port)}  (512×512, transparent)")
            print_fn("  Ctrl+C to stop")
            if config.open_browser:
                webbrowser.open(config.local_url("/", port))

        threading.Thread(target=announce, name="kyara-live-announce", daemon=True).start()
        server.run(sockets=[sock])
    finally:
        sock.close()
        if engine is not None:
            engine.stop()
        for source in sources:
            source.stop()
