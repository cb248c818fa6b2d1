"""The live-studio ASGI app of one session: ``create_app(engine, config)`` (a factory; nothing runs at
import). The session around it (character, sources, port, uvicorn) is ``kyara.live.session``.

Routes (add new ones to the list in ``create_app``)
  /            studio page (sliders, presets, idle toggles, events, background, stats)
  /obs         the character alone on a transparent page, for an OBS Browser Source
  /ws          WebSocket: binary frames (8-byte header, see ``api.FrameHeader``, then WebP with alpha),
               or with ``config.render == "browser"`` 192-byte pose packets (kyara.web.pose_packet) until
               the page sends {"type": "frames", "on": true}; JSON text messages (status every ``status_interval_s``, state on connect and on change,
               error for each dropped message); accepts JSON commands
  /api/pose    GET the current mixed 45 values; PUT some by name (manual layer); DELETE clears it
  /api/state   GET what the controls show: the manual layer, the preset, the idle toggles
  /api/frame.png, /api/event, /api/preset, /api/idle, /api/calibrate, /api/status, /api/parameters
  /api/character  GET the student as browser weights (.kyw, kyara.web) for /static/render/viewer.html
  /api/render  GET {"render": "server" | "browser", "shapes": the weights' tensor shapes} for the pages
  /static/*    the pages' JS and CSS

Security (outermost first):
  BrowserGuard  Host must name this server (loopback names, the bound address; any IP literal when
                bound to all interfaces): defeats DNS rebinding. Origin, when a browser sends one,
                must be the studio's own origin or in ``config.allowed_origins``: other pages cannot
                open the WebSocket or post to the API. POST/PUT need ``Content-Type: application/json``,
                which no cross-site form or no-cors fetch can send without a CORS preflight.
  CORS          only for ``allowed_origins`` (their pages may then call the API with fetch).
  TokenGate     with a token, every request except /static/* must carry it.
The server binds 127.0.0.1 by default; a non-loopback host is refused without a token (``LiveConfig``).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from kyara.drive.events import EVENTS
from kyara.live.session import WILDCARD_HOSTS, LiveConfig
from kyara.server.api import Api, FrameHeader, MessageError, ServerStats
from kyara.web.pose_packet import encode_pose_packet
from kyara.web.routes import web_character_route

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
WRITE_METHODS = ("POST", "PUT", "PATCH")


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def split_host(host_header: str) -> str:
    """"Example.COM:80" → "example.com"; "[::1]:80" → "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BrowserGuard:
    """ASGI middleware: Host and Origin checks on every HTTP and WebSocket request, JSON content type
    on writes. Requests without an Origin header (curl, scripts, same-origin GETs) pass the Origin
    check: browsers send Origin on every WebSocket handshake and every cross-origin write."""

    def __init__(self, app, config: LiveConfig, stats: ServerStats) -> None:
        self.app = app
        self.stats = stats
        self.wildcard = config.host in WILDCARD_HOSTS
        self.allowed_origins = set(config.allowed_origins)
        names = {"localhost", config.host.lower()} | {urlsplit(o).hostname or "" for o in config.allowed_origins}
        if self.wildcard:  # reachable by this machine's names too
            hostname = socket.gethostname().lower()
            names |= {hostname, hostname + ".local"}
        self.host_names = names - {""}

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None:
            return True  # HTTP/1.0 without Host: not a browser
        host = split_host(host_header)
        if host in self.host_names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # a name we do not serve: a rebinding attacker's domain
        # an IP literal cannot be rebound; the page's origin is then this server itself
        return address.is_loopback or self.wildcard

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None:
            return True
        origin = origin.strip().lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and host_header is not None \
            and parts.netloc == host_header.strip().lower()

    async def _refuse(self, scope, receive, send, status: int, message: str) -> None:
        self.stats.add("blocked")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await JSONResponse({"error": message}, status_code=status)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not self.host_allowed(host):
            await self._refuse(scope, receive, send, 421,
                               f"this server does not answer for host {split_host(host or '')[:64]!r}; "
                               "open it as http://127.0.0.1:PORT or http://localhost:PORT")
            return
        origin = _header(scope, b"origin")
        if not self.origin_allowed(origin, host):
            await self._refuse(scope, receive, send, 403,
                               f"requests from the web page at {origin[:80]!r} are not allowed; start kyara live "
                               "with --allow-origin ORIGIN to allow that page")
            return
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            media_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                await self._refuse(scope, receive, send, 415,
                                   f"{scope['method']} needs 'Content-Type: application/json' (got "
                                   f"{media_type[:40] or 'none'!r}); send a JSON object, {{}} when there is nothing")
                return
        await self.app(scope, receive, send)


class TokenGate:
    """ASGI middleware: every HTTP and WebSocket request except /static/* must carry the token."""

    def __init__(self, app, token: str, stats: ServerStats) -> None:
        self.app = app
        self.token = token.encode()
        self.stats = stats

    def _authorized(self, scope) -> bool:
        value = _header(scope, b"authorization")
        if value is not None:
            scheme, _, given = value.encode("latin-1").partition(b" ")
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
        await JSONResponse({"error": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"},
                           status_code=401)(scope, receive, send)


def create_app(engine, config: LiveConfig = LiveConfig(), *, known_events: list[str] | None = None):
    """Build the Starlette app over a ``kyara.live.LiveEngine``.

    The app starts the engine on startup if it is not running and stops it on shutdown if it
    started it. known_events (the names /api/event accepts) defaults to ``kyara.drive.events.EVENTS``.
    ``config`` was validated when it was made (``LiveConfig.__post_init__``).
    """
    stats = ServerStats()
    api = Api(engine, stats, config.max_body_bytes, known_events if known_events is not None else list(EVENTS))

    def page(name: str):
        async def serve(request):
            return FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-store"})
        return serve

    async def ws(websocket: WebSocket):
        await websocket_session(websocket, engine, api, stats, config)

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
        Route("/", page("index.html")),
        Route("/obs", page("obs.html")),
        WebSocketRoute("/ws", ws),
        Route("/api/pose", api.get_pose, methods=["GET"]),
        Route("/api/pose", api.put_pose, methods=["PUT"]),
        Route("/api/pose", api.delete_pose, methods=["DELETE"]),
        Route("/api/state", api.state, methods=["GET"]),
        Route("/api/frame.png", api.frame_png, methods=["GET"]),
        Route("/api/event", api.event, methods=["POST"]),
        Route("/api/preset", api.preset, methods=["POST"]),
        Route("/api/idle", api.idle, methods=["POST"]),
        Route("/api/calibrate", api.calibrate, methods=["POST"]),
        Route("/api/status", api.status, methods=["GET"]),
        Route("/api/parameters", api.parameters, methods=["GET"]),
        Route("/api/character", web_character_route(engine), methods=["GET"]),  # browser renderer weights (.kyw)
        Route("/api/render", api.render_info, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine, app.state.stats, app.state.api, app.state.config = engine, stats, api, config
    # add_middleware wraps: the last one added runs first (BrowserGuard, CORS, TokenGate, routes)
    if config.token:
        app.add_middleware(TokenGate, token=config.token, stats=stats)
    if config.allowed_origins:  # preflights are answered before the token is asked for
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                           allow_methods=["GET", "PUT", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Frame-Seq"])
    app.add_middleware(BrowserGuard, config=config, stats=stats)
    return app


def uvicorn_config(app, config: LiveConfig):
    """The uvicorn settings a live app is served with. The WebSocket transport cap is
    ``max_ws_frame_bytes``; messages between ``max_ws_message_bytes`` and it are dropped by the app
    with an error reply, and the connection stays."""
    import uvicorn

    return uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", lifespan="on",
                          ws_max_size=config.max_ws_frame_bytes, ws_ping_interval=20.0)


async def websocket_session(websocket: WebSocket, engine, api: Api, stats: ServerStats, config: LiveConfig) -> None:
    """One client: a sender task streams frames, status and state; this task applies its commands.
    A bad command is dropped, counted and answered with {"type": "error"}; the connection stays."""
    await websocket.accept()
    stats.add("ws_clients")
    stats.add("ws_connections")
    send_lock = asyncio.Lock()  # the sender task and error replies share one socket
    client = _Client(packets=getattr(engine, "render_mode", "server") == "browser")
    sub = engine.subscribe(asyncio.get_running_loop())
    sender = asyncio.create_task(_send_loop(websocket, sub, api, config.status_interval_s, send_lock, client))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            stats.add("ws_messages")
            try:
                data = message.get("text")
                if data is None:
                    raise MessageError("binary messages are not accepted; send JSON text")
                size = len(data.encode("utf-8"))
                if size > config.max_ws_message_bytes:
                    raise MessageError(f"message is {size} bytes; the limit is {config.max_ws_message_bytes}")
                frames = api.handle_ws_message(data, config.max_ws_message_bytes)
                if frames is not None:
                    client.want_frames(engine, frames)
                continue
            except MessageError as e:
                error = str(e)[:200]
            except Exception as e:  # a message must never take the connection down with a traceback
                error = f"{type(e).__name__}: {str(e)[:200]}"
                log.exception("unexpected error handling a WebSocket message")
            stats.add("ws_dropped")
            stats.last_ws_error = error
            async with send_lock:
                await websocket.send_text(json.dumps({"type": "error", "error": error}))
    except (WebSocketDisconnect, RuntimeError):  # RuntimeError: an error reply raced the client's close
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        sub.close()
        client.want_frames(engine, False)
        stats.add("ws_clients", -1)


class _Client:
    """One WebSocket connection's delivery: pose packets (browser render mode) or frames."""

    def __init__(self, packets: bool) -> None:
        self.packets = packets
        self.frames_requested = False

    def want_frames(self, engine, on: bool) -> None:
        """A "frames" message (or the disconnect, with False): counted by the engine once per change."""
        if on == self.frames_requested or getattr(engine, "render_mode", "server") != "browser":
            return
        self.frames_requested = on
        self.packets = not on
        engine.request_frames(on)


async def _send_loop(websocket: WebSocket, sub, api: Api, status_interval_s: float, send_lock: asyncio.Lock,
                     client: _Client) -> None:
    """State first (and again whenever the controls' state changes), then the newest frame (or pose
    packet) whenever there is one and status JSON every status_interval_s. A slow client only slows
    this task; the engine keeps publishing and this client skips to the newest frame."""
    loop = asyncio.get_running_loop()
    next_status = loop.time()
    sent_state = None
    while True:
        version = api.state_version
        if version != sent_state:
            async with send_lock:
                await websocket.send_text(json.dumps({"type": "state", **api.state_dict()}))
            sent_state = version
        now = loop.time()
        if now >= next_status:
            async with send_lock:
                await websocket.send_text(json.dumps({**api.status_dict(), "type": "status", "skipped_frames": sub.skipped}))
            next_status = now + status_interval_s
        try:
            frame = await asyncio.wait_for(sub.next_frame_async(), timeout=max(0.0, next_status - loop.time()))
        except asyncio.TimeoutError:
            continue
        if client.packets:
            message = encode_pose_packet(frame.seq, frame.inputs_applied, frame.pose.vector)
        elif frame.webp:
            message = FrameHeader.pack(frame.seq, frame.inputs_applied) + frame.webp
        else:
            continue  # a pose alone, published before this page's frame request reached the engine
        async with send_lock:
            await websocket.send_bytes(message)


# Old names, kept for callers written before kyara.live.session existed (benchmarks/live_latency.py).
ServerSettings = LiveConfig
