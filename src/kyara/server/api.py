"""HTTP and WebSocket message handling for the live studio: validation first, then one engine call.

Every network message passes through a validator here before it reaches the engine:
size cap, strict JSON (no NaN/Infinity), expected types, finite numbers, known names. A bad HTTP
request gets a 4xx JSON ``{"error": "..."}`` naming the bad field; a bad WebSocket message is
dropped, counted (``ServerStats.ws_dropped``) and answered with an error message; the connection
stays. Nothing here raises past a handler.
"""
from __future__ import annotations

import asyncio
import functools
import json
import math
import threading
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kyara.drive.idle import IDLE_PARTS
from kyara.image import encode_image
from kyara.pose import CATEGORIES, NAMES, PARAMETERS, PRESETS, Pose, PoseError

MAX_NAME_CHARS = 64


class MessageError(ValueError):
    """A client message is malformed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ServerStats:
    """Counters shown in /api/status (thread-safe; the engine thread never touches them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ws_clients = 0
        self.ws_connections = 0
        self.ws_messages = 0
        self.ws_dropped = 0
        self.http_rejected = 0
        self.blocked = 0   # refused by the Host / Origin / content-type guard (kyara.server.app.BrowserGuard)
        self.last_ws_error: str | None = None

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict:
        with self._lock:
            return {name: getattr(self, name) for name in ("ws_clients", "ws_connections", "ws_messages", "ws_dropped",
                                                           "http_rejected", "blocked", "last_ws_error")}


# -- pure validators ----------------------------------------------------------------------------
def _reject_constant(name: str):
    raise MessageError(f"{name} is not allowed in JSON; send finite numbers")


def parse_json(data: bytes | str, max_bytes: int) -> Any:
    """Strict JSON: size-capped, UTF-8, no NaN/Infinity, nesting-limited by the size cap."""
    if len(data) > max_bytes:
        raise MessageError(f"message is {len(data)} bytes; the limit is {max_bytes}", 413)
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text, parse_constant=_reject_constant)
    except MessageError:
        raise
    except UnicodeDecodeError:
        raise MessageError("message is not UTF-8 text") from None
    except RecursionError:
        raise MessageError("JSON is nested too deeply") from None
    except ValueError as e:
        raise MessageError(f"message is not valid JSON: {e}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{what}: expected a number, got {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an integer literal like 1e400 written out: valid JSON, too big for a float
        v = math.inf
    if not math.isfinite(v):
        shown = repr(value) if len(repr(value)) <= 24 else f"a {len(str(abs(value)))}-digit number"
        raise MessageError(f"{what}: expected a finite number, got {shown}")
    return v


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise MessageError(f"{what}: expected a name (a non-empty string of at most {MAX_NAME_CHARS} characters)")
    return value


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise MessageError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def validate_pose_values(obj: Any) -> dict[str, float]:
    """A JSON object of parameter name → number; every name known, every value finite and in range."""
    obj = _object(obj, "pose")
    if len(obj) > len(NAMES):
        raise MessageError(f"pose: at most {len(NAMES)} parameters, got {len(obj)}")
    values = {key: _number(value, f"pose parameter {key[:MAX_NAME_CHARS]!r}") for key, value in obj.items()}
    try:
        Pose.from_dict(values)  # names and ranges; PoseError names the parameter
    except PoseError as e:
        raise MessageError(str(e)) from None
    return values


def validate_preset(obj: Any) -> tuple[str, float]:
    obj = _object(obj, "preset")
    name = _name(obj.get("name"), "preset 'name'")
    if name not in PRESETS:
        raise MessageError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}", 404)
    intensity = _number(obj.get("intensity", 1.0), "preset 'intensity'")
    if not 0.0 <= intensity <= 1.0:
        raise MessageError(f"preset 'intensity' must be in [0, 1], got {intensity:g}")
    return name, intensity


def validate_event(obj: Any, known_events: list[str]) -> str:
    obj = _object(obj, "event")
    name = _name(obj.get("name"), "event 'name'")
    if name not in known_events:
        raise MessageError(f"unknown event {name!r}; known events: {', '.join(known_events)}", 404)
    return name


def validate_idle(obj: Any) -> dict[str, bool]:
    obj = _object(obj, "idle")
    unknown = [k for k in obj if k not in IDLE_PARTS]
    if unknown:
        raise MessageError(f"idle: unknown part {unknown[0][:MAX_NAME_CHARS]!r}; known parts: {', '.join(IDLE_PARTS)}")
    for key, value in obj.items():
        if not isinstance(value, bool):
            raise MessageError(f"idle {key!r}: expected true or false, got {type(value).__name__}")
    return dict(obj)


# -- HTTP handlers ------------------------------------------------------------------------------
async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request body as strict JSON, refusing bodies over ``max_bytes`` before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MessageError("bad Content-Length header")
        if int(declared) > max_bytes:
            raise MessageError(f"request body is {int(declared)} bytes; the limit is {max_bytes}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise MessageError(f"request body exceeds the limit of {max_bytes} bytes", 413)
    if not body:
        raise MessageError("request body is empty; send a JSON object")
    return parse_json(bytes(body), max_bytes)


def _answers_bad_requests(handler):
    """A MessageError raised by an Api handler becomes its 4xx JSON answer (counted as http_rejected)."""
    @functools.wraps(handler)
    async def wrapped(self: "Api", request: Request) -> Response:
        try:
            return await handler(self, request)
        except MessageError as e:
            self.stats.add("http_rejected")
            return JSONResponse({"error": str(e)}, status_code=e.status)
    return wrapped


class Api:
    """The /api/* endpoints over one engine. ``known_events`` are the names POST /api/event accepts."""

    def __init__(self, engine, stats: ServerStats, max_body_bytes: int, known_events: list[str]) -> None:
        self.engine = engine
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.known_events = known_events
        # What the studio's preset buttons show: the last preset set through this server. The mixer
        # keeps only the preset's values, so the name and intensity are remembered here.
        self.current_preset: dict = {"name": "neutral", "intensity": 1.0}
        self.state_version = 0  # bumped when the manual layer, preset or idle toggles change
        self._shapes: tuple | None = None  # (character, its weights' tensor shapes) for /api/render

    def _changed(self, result=None):
        """The manual layer, preset or idle toggles changed: bump state_version; returns `result`."""
        self.state_version += 1
        return result

    def state_dict(self) -> dict:
        """What the studio's controls show: the manual (slider) layer only, never preset or tracker
        values mixed in; the preset by name; the idle toggles (None without idle motion)."""
        return {"manual": dict(self.engine.manual), "preset": dict(self.current_preset), "idle": self.engine.idle_state()}

    async def _body(self, request: Request) -> Any:
        try:
            return await read_json_body(request, self.max_body_bytes)
        except MessageError:
            self.stats.add("http_rejected")
            raise

    async def get_pose(self, request: Request) -> Response:
        return JSONResponse(self.engine.pose.as_dict())

    @_answers_bad_requests
    async def put_pose(self, request: Request) -> Response:
        values = validate_pose_values(await self._body(request))
        input_number = self._changed(self.engine.set_manual(values))
        return JSONResponse({"ok": True, "input": input_number, "manual": self.engine.manual})

    async def delete_pose(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "input": self._changed(self.engine.reset_manual())})

    async def state(self, request: Request) -> Response:
        return JSONResponse(self.state_dict())

    async def frame_png(self, request: Request) -> Response:
        latest = self.engine.latest
        if latest is None:
            return JSONResponse({"error": "no frame rendered yet; try again in a moment"}, status_code=503)
        # browser render mode publishes poses only: the latest one is rendered here, on demand
        seq, rgba = (latest.seq, latest.rgba) if latest.rgba is not None else await asyncio.to_thread(self.engine.frame_rgba)
        png = encode_image(rgba, "PNG", compress_level=1)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    async def render_info(self, request: Request) -> Response:
        """GET /api/render: where frames are drawn ("server" | "browser") and, for a student, the
        tensor shapes its /api/character weights must have (the page checks them; null otherwise)."""
        character = self.engine.character
        shapes = None
        if getattr(character, "is_student", False):
            if self._shapes is None or self._shapes[0] is not character:
                from kyara.web.weights import student_tensors

                tensors = await asyncio.to_thread(student_tensors, character)
                self._shapes = (character, {**{k: list(v.shape) for k, v in tensors.items()},
                                            "character_image": [512, 512, 4]})
            shapes = self._shapes[1]
        return JSONResponse({"render": self.engine.render_mode, "shapes": shapes})

    @_answers_bad_requests
    async def event(self, request: Request) -> Response:
        name = validate_event(await self._body(request), self.known_events)
        return JSONResponse({"ok": True, "event": name, "input": self.engine.trigger(name)})

    @_answers_bad_requests
    async def preset(self, request: Request) -> Response:
        name, intensity = validate_preset(await self._body(request))
        return JSONResponse({"ok": True, "preset": name, "intensity": intensity,
                             "input": self.set_preset(name, intensity)})

    def set_preset(self, name: str, intensity: float) -> int:
        input_number = self.engine.set_preset(name, intensity)
        self.current_preset = {"name": name, "intensity": intensity}
        return self._changed(input_number)

    @_answers_bad_requests
    async def idle(self, request: Request) -> Response:
        toggles = validate_idle(await self._body(request))
        if self.engine.idle_state() is None:
            raise MessageError("idle motion control is not available in this session", 409)
        return JSONResponse({"ok": True, "idle": self._changed(self.engine.set_idle(toggles))})

    async def calibrate(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "input": self.engine.calibrate()})

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.status_dict())

    def status_dict(self) -> dict:
        return {**self.engine.status(), "server": self.stats.as_dict()}

    async def parameters(self, request: Request) -> Response:
        return JSONResponse({
            "parameters": [{"index": p.index, "name": p.name, "group": p.group, "category": p.category,
                            "low": p.low, "high": p.high, "side": p.side} for p in PARAMETERS],
            "categories": list(CATEGORIES),
            "presets": {name: p.description for name, p in PRESETS.items()},
            "events": self.known_events,
            "idle_parts": list(IDLE_PARTS),
        })

    # -- WebSocket commands -----------------------------------------------------------------------
    def handle_ws_message(self, data: bytes | str, max_bytes: int) -> bool | None:
        """Apply one client WebSocket message, or raise MessageError (the caller drops, counts and
        answers it). Returns the requested value of a "frames" message (the connection's own
        setting, applied by the caller), else None.

        Messages are JSON objects with a "type": pose {values}, reset, event {name},
        preset {name, intensity}, idle {blink, breathing, sway}, calibrate, ping,
        frames {on: bool} (browser render mode: this page wants server frames instead of pose packets).
        """
        msg = _object(parse_json(data, max_bytes), "message")
        kind = msg.get("type")
        if kind == "pose":
            self._changed(self.engine.set_manual(validate_pose_values(msg.get("values"))))
        elif kind == "reset":
            self._changed(self.engine.reset_manual())
        elif kind == "event":
            self.engine.trigger(validate_event(msg, self.known_events))
        elif kind == "preset":
            self.set_preset(*validate_preset(msg))
        elif kind == "idle":
            if self.engine.idle_state() is None:
                raise MessageError("idle motion control is not available")
            self._changed(self.engine.set_idle(validate_idle({k: v for k, v in msg.items() if k != "type"})))
        elif kind == "calibrate":
            self.engine.calibrate()
        elif kind == "ping":
            pass
        elif kind == "frames":
            on = msg.get("on")
            if not isinstance(on, bool):
                raise MessageError(f"frames 'on': expected true or false, got {type(on).__name__}")
            return on
        else:
            raise MessageError(f"unknown message type {str(kind)[:MAX_NAME_CHARS]!r}")


@dataclass(frozen=True)
class FrameHeader:
    """The 8 bytes before each WebP in a binary WebSocket message: big-endian uint32 seq, then the
    uint32 count of pose inputs the frame includes (compare with the "input" that PUT /api/pose returns)."""
    size: int = 8

    @staticmethod
    def pack(seq: int, inputs_applied: int) -> bytes:
        return (seq & 0xFFFFFFFF).to_bytes(4, "big") + (inputs_applied & 0xFFFFFFFF).to_bytes(4, "big")

    @staticmethod
    def unpack(data: bytes) -> tuple[int, int]:
        return int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big")
