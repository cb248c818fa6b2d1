"""The live-studio ASGI app: ``create_app(engine, settings)`` (a factory; nothing runs at import).

Routes
  /            studio page (sliders, presets, idle toggles, events, background, stats)
  /obs         the character alone on a transparent page, for an OBS Browser Source
  /ws          WebSocket: binary frames (8-byte header, see ``api.FrameHeader``, then WebP with alpha)
               and a JSON status text message every ``status_interval_s``; accepts JSON commands
  /api/pose    GET the current 45 values; PUT some by name; DELETE clears the manual layer
  /api/frame.png, /api/event, /api/preset, /api/idle, /api/calibrate, /api/status, /api/parameters
  /static/*    the pages' JS and CSS

Security: binds 127.0.0.1 by default; a non-loopback host is refused without a token, and with a
token every page, API and WebSocket request must carry it (``Authorization: Bearer T`` or
``?token=T``). Static assets carry no secrets and are served without it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from kyara.errors import KyaraError
from kyara.server.api import Api, FrameHeader, MessageError, ServerStats

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServerSettings:
    """Network settings of a live session. ``token`` None means no authentication (loopback only)."""
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_body_bytes: int = 64 * 1024
    max_ws_message_bytes: int = 64 * 1024
    status_interval_s: float = 0.5

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def page_url(self, path: str = "/") -> str:
        return self.url + path + (f"?token={self.token}" if self.token else "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServerSettings) -> None:
    """Refuse unsafe or impossible settings with a clear error (KyaraError)."""
    if not is_loopback(settings.host) and not settings.token:
        raise KyaraError(f"--host {settings.host} exposes the studio beyond this machine; it requires --token "
                         "(anyone who can reach the port could drive the character otherwise)")
    if settings.token is not None and (len(settings.token) < 8 or not settings.token.isprintable()
                                       or any(c in settings.token for c in " &#?/")):
        raise KyaraError("--token must be at least 8 printable characters without spaces or any of & # ? /")
    if not 0 <= settings.port <= 65535:
        raise KyaraError(f"--port {settings.port} is not a TCP port (0-65535)")
    if settings.max_body_bytes < 1024 or settings.max_ws_message_bytes < 1024:
        raise KyaraError("message size limits must be at least 1024 bytes")


class TokenGate:
    """ASGI middleware: every HTTP and WebSocket request except /static/* must carry the token."""

    def __init__(self, app, token: str, stats: ServerStats) -> None:
        self.app = app
        self.token = token.encode()
        self.stats = stats

    def _authorized(self, scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
                    return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(hmac.compare_digest(t.encode("latin-1", "replace"), self.token) for t in query.get("token", []))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith("/static/") \
                or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        self.stats.add("http_rejected")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong token"})
            return
        response = JSONResponse({"error": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"},
                                status_code=401)
        await response(scope, receive, send)


def _known_events() -> list[str]:
    try:
        from kyara.drive.events import EVENTS
    except ImportError:
        return []
    return list(EVENTS)


def create_app(engine, settings: ServerSettings = ServerSettings(), *, known_events: list[str] | None = None):
    """Build the Starlette app over a ``kyara.live.LiveEngine``.

    The app starts the engine on startup if it is not running and stops it on shutdown if it
    started it. known_events (the names /api/event accepts) defaults to ``kyara.drive.events.EVENTS``.
    Raises KyaraError for unsafe settings (see ``check_settings``).
    """
    check_settings(settings)
    stats = ServerStats()
    api = Api(engine, stats, settings.max_body_bytes,
              known_events if known_events is not None else _known_events())

    async def studio(request):
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def obs(request):
        return FileResponse(STATIC_DIR / "obs.html", headers={"Cache-Control": "no-store"})

    async def ws(websocket: WebSocket):
        await websocket.accept()
        stats.add("ws_clients")
        stats.add("ws_connections")
        sub = engine.subscribe(asyncio.get_running_loop())
        sender = asyncio.create_task(_send_loop(websocket, sub, api, settings.status_interval_s))
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                stats.add("ws_messages")
                data = message.get("text")
                if data is None:
                    stats.add("ws_dropped")  # clients send JSON text only
                    continue
                try:
                    api.handle_ws_message(data, settings.max_ws_message_bytes)
                except MessageError as e:
                    stats.add("ws_dropped")
                    stats.last_ws_error = str(e)[:200]
                except Exception as e:  # a message must never take the connection down with a traceback
                    stats.add("ws_dropped")
                    stats.last_ws_error = f"{type(e).__name__}: {str(e)[:200]}"
                    log.exception("unexpected error handling a WebSocket message")
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            sub.close()
            stats.add("ws_clients", -1)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        started_here = not engine.running
        if started_here:
            engine.start()
        try:
            yield
        finally:
            if started_here:
                engine.stop()

    routes = [
        Route("/", studio),
        Route("/obs", obs),
        WebSocketRoute("/ws", ws),
        Route("/api/pose", api.get_pose, methods=["GET"]),
        Route("/api/pose", api.put_pose, methods=["PUT"]),
        Route("/api/pose", api.delete_pose, methods=["DELETE"]),
        Route("/api/frame.png", api.frame_png, methods=["GET"]),
        Route("/api/event", api.event, methods=["POST"]),
        Route("/api/preset", api.preset, methods=["POST"]),
        Route("/api/idle", api.idle, methods=["POST"]),
        Route("/api/calibrate", api.calibrate, methods=["POST"]),
        Route("/api/status", api.status, methods=["GET"]),
        Route("/api/parameters", api.parameters, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    app.state.stats = stats
    app.state.api = api
    app.state.settings = settings
    if settings.token:
        app.add_middleware(TokenGate, token=settings.token, stats=stats)
    return app


async def _send_loop(websocket: WebSocket, sub, api: Api, status_interval_s: float) -> None:
    """Newest frame whenever there is one, status JSON every status_interval_s. A slow client only
    slows this task; the engine keeps publishing and this client skips to the newest frame."""
    loop = asyncio.get_running_loop()
    next_status = loop.time()
    while True:
        now = loop.time()
        if now >= next_status:
            status = api.status_dict()
            status["type"] = "status"
            status["skipped_frames"] = sub.skipped
            await websocket.send_text(json.dumps(status))
            next_status = now + status_interval_s
        try:
            frame = await asyncio.wait_for(sub.next_frame_async(), timeout=max(0.0, next_status - loop.time()))
        except asyncio.TimeoutError:
            continue
        await websocket.send_bytes(FrameHeader.pack(frame.seq, frame.inputs_applied) + frame.webp)


# -- the `kyara live` session ---------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")
DEFAULT_TEACHER = "tha3/separable_float"


def load_live_character(character: str | Path | None, device: str, teacher: bool, print_fn=print):
    """A student from a .kyara file (default: the bundled sample), or with ``teacher`` a slow
    teacher-backed character from an image."""
    from kyara import character as character_module
    from kyara.poser import pick_device

    device_name = str(pick_device(device))
    if character is None:
        sample = getattr(character_module, "SAMPLE_CHARACTER", None)
        if sample is None or not Path(sample).exists():
            raise KyaraError("no CHARACTER given and no bundled sample character is installed; "
                             "pass a .kyara file (make one with `kyara distill IMAGE`)")
        character = sample
    path = Path(character)
    if not path.exists():
        raise KyaraError(f"{path}: character file not found")
    if teacher:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise KyaraError(f"{path}: --teacher needs a character image ({', '.join(IMAGE_SUFFIXES)})")
        print_fn(f"warning: --teacher renders with the full {DEFAULT_TEACHER} model on {device_name}: expect a few "
                 "frames per second on CPU and ~20-40 fps on a GPU; distill a student for real-time use")
        return character_module.Character.from_image(path, teacher=DEFAULT_TEACHER, device=device_name)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise KyaraError(f"{path} is an image; distill it first (`kyara distill {path}`) or pass --teacher "
                         "to drive it with the slow teacher model")
    return character_module.load_character(path, device=device_name)


def build_sources(ifacialmocap_port: int | None, vmc_port: int | None, listen_host: str,
                  audio: str | Path | None, print_fn=print, *, phone_ip: str | None = None,
                  webcam: int | str | None = None, webcam_model: str | Path | None = None, audio_loop: bool = False,
                  mic: bool = False, mic_device: int | str | None = None) -> list:
    """Start the pose sources, in mixer order (later ones win where they overlap, so the audio and
    microphone mouths override a face tracker's): webcam, iFacialMocap, VMC, audio file, microphone.

    A UDP port already in use is a warning, not fatal. A source the user asked for by name (webcam,
    audio, microphone) that cannot start is a KyaraError; sources already started are stopped first.
    """
    sources = []
    candidates = []
    if webcam is not None:
        from kyara.drive.webcam import WebcamSource

        candidates.append((f"webcam {webcam} (MediaPipe face tracking; use Calibrate while looking at the camera)",
                           lambda: WebcamSource(webcam, model_path=webcam_model, log=print_fn)))
    if ifacialmocap_port is not None:
        from kyara.drive.ifacialmocap import IFacialMocapReceiver

        def make_ifacialmocap():
            try:
                return IFacialMocapReceiver(port=ifacialmocap_port, host=listen_host, phone_ip=phone_ip)
            except ValueError as e:  # phone_ip malformed, or a LAN phone with a loopback-only receiver
                raise KyaraError(f"--ifacialmocap-phone-ip: {e}") from None

        to_phone = f", start message to {phone_ip}:49983" if phone_ip else ""
        candidates.append((f"iFacialMocap UDP {listen_host}:{ifacialmocap_port}{to_phone}", make_ifacialmocap))
    if vmc_port is not None:
        from kyara.drive.vmc import VmcReceiver

        candidates.append((f"VMC (OSC/UDP) {listen_host}:{vmc_port}", lambda: VmcReceiver(port=vmc_port, host=listen_host)))
    if audio is not None:
        try:
            from kyara.drive.audio import AudioFileSource
        except ImportError:
            raise KyaraError("--audio: this build has no audio file source (kyara.drive.audio.AudioFileSource)") from None
        candidates.append((f"audio file {audio} ({'looping' if audio_loop else 'once'}; mouth only, no sound)",
                           lambda: AudioFileSource(audio, loop=audio_loop)))
    if mic:
        from kyara.drive.audio import MicrophoneSource

        candidates.append((f"microphone {mic_device if mic_device is not None else '(default input)'}",
                           lambda: MicrophoneSource(device=mic_device)))
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


def run_live(character: str | Path | None = None, *, port: int = 8765, host: str = "127.0.0.1",
             token: str | None = None, device: str = "auto", open_browser: bool = True, teacher: bool = False,
             fps: float = 60.0, ifacialmocap_port: int | None = 49983, vmc_port: int | None = 39539,
             listen_host: str = "127.0.0.1", trackers: bool = True, audio: str | Path | None = None,
             phone_ip: str | None = None, webcam: int | str | None = None, webcam_model: str | Path | None = None,
             audio_loop: bool = False, mic: bool = False, mic_device: int | str | None = None,
             encoders: int = 3, print_fn=print) -> None:
    """Serve the live studio until interrupted (what `kyara live` runs; same parameter names)."""
    import threading
    import webbrowser

    import uvicorn

    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer
    from kyara.live import LiveEngine

    settings = ServerSettings(host=host, port=port, token=token)
    check_settings(settings)  # refuse unsafe binds before the slow model load
    if not fps > 0 or fps > 240:
        raise KyaraError(f"--fps must be in (0, 240], got {fps}")
    if not 1 <= encoders <= 16:
        raise KyaraError(f"--encoders must be in [1, 16], got {encoders}")
    if phone_ip is not None and not trackers:
        raise KyaraError("--ifacialmocap-phone-ip needs the iFacialMocap receiver; drop --no-trackers")
    ch = load_live_character(character, device, teacher, print_fn)
    mixer = PoseMixer(MixerConfig(), IdleMotion(IdleConfig()))
    sources = build_sources(ifacialmocap_port if trackers else None, vmc_port if trackers else None,
                            listen_host, audio, print_fn, phone_ip=phone_ip, webcam=webcam,
                            webcam_model=webcam_model, audio_loop=audio_loop, mic=mic, mic_device=mic_device)
    for source in sources:
        mixer.add_source(source)
    engine = LiveEngine(ch, mixer, fps=fps, encoders=encoders)
    app = create_app(engine, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            ws_max_size=settings.max_ws_message_bytes, ws_ping_interval=20.0)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        bound = settings
        if port == 0 and server.servers:
            bound = ServerSettings(host=host, port=server.servers[0].sockets[0].getsockname()[1], token=token)
        print_fn(f"kyara live: {getattr(ch, 'name', 'character')} on {engine.fps:g} fps target")
        print_fn(f"  studio:            {bound.page_url('/')}")
        print_fn(f"  OBS Browser Source: {bound.page_url('/obs')}  (512×512, transparent)")
        print_fn("  Ctrl+C to stop")
        if open_browser:
            webbrowser.open(bound.page_url("/"))

    threading.Thread(target=announce, name="kyara-live-announce", daemon=True).start()
    try:
        server.run()
    finally:
        engine.stop()
        for source in sources:
            source.stop()
