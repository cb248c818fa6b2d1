"""The live render loop: pose mixer → Pose → character → encoded frame → subscribers; timing stats.

One ``LiveEngine`` owns one render thread and a pool of ``encoders`` encoder threads. Each tick it
asks the mixer for the pose at ``now``; when the pose changed (or an input is waiting to be
acknowledged) it renders the character and hands the frame to the pool, which compresses it once
(WebP with alpha) while the next frames render. Encodes run in parallel and may finish out of
order, but frames are published as ``engine.latest`` strictly in render order (each one waits for
its predecessor's publication). Subscribers are woken without ever blocking the loop: each keeps
only "there is a newer frame", so a slow client skips frames.

Latency is measured from a pose *input* to the publication of the first frame whose pose was
computed after it: ``latency_ms`` for API inputs (``set_manual``, ``trigger``, ``set_preset``, ...),
``tracker_latency_ms`` for tracker inputs (the mixer's sources call ``note_input(when, source)`` with
each packet's arrival time). The mixer owns sliders, presets and idle; the engine tells it the
time of the last rendered frame, so short events (blinks) are latched into the next frame.

Browser render mode (``render="browser"``, `kyara live --render browser`): the pages run the
student themselves, so the loop publishes the mixed pose alone (``rgba`` None, ``webp`` b"") at the
same ticks, rendering and encoding nothing, until a page asks for server frames
(``request_frames``, a page without WebGPU/WebGL2); while any does, every publication carries a
frame as in server mode.

No HTTP here (the server wraps this), no work at import time.
"""
from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Protocol

import numpy as np
from PIL import Image

from kyara.live.session import RENDER_MODES, LiveConfig  # the one home of the live defaults (fps, encoders)
from kyara.pose import NAMES, Pose

log = logging.getLogger(__name__)


class RgbaRenderer(Protocol):
    """What the engine needs from a character: one pose → (512, 512, 4) uint8 sRGB straight RGBA."""

    name: str

    def render_rgba(self, pose: Pose) -> np.ndarray: ...


class PoseMixerLike(Protocol):
    """The subset of ``kyara.drive.mixer.PoseMixer`` the engine uses (same signatures)."""

    on_input: Callable[[float, str], None] | None

    @property
    def manual(self) -> dict[str, float]: ...
    def mix(self, now: float, since: float | None = None) -> Pose: ...
    def set_manual(self, values: Mapping[str, float]) -> None: ...
    def reset_manual(self) -> None: ...
    def set_idle(self, toggles: Mapping[str, bool]) -> dict[str, bool]: ...
    def idle_state(self) -> dict[str, bool] | None: ...
    def set_preset(self, name: str, intensity: float = 1.0) -> None: ...
    def calibrate(self) -> list[str]: ...
    def trigger(self, event_name: str, now: float) -> None: ...
    def sources(self, now: float | None = None) -> list[tuple[str, dict, bool]]: ...


@dataclass(frozen=True)
class EncodedFrame:
    """A published frame. ``rgba``: (H, W, 4) uint8 sRGB straight RGBA; ``webp``: its encoding.
    In browser render mode with no page asking for frames: the pose alone (``rgba`` None, ``webp`` b"").

    seq: 1, 2, ... per publication. inputs_applied: the engine's input counter when the pose was
    read, so a client that sent input number n knows the first frame with inputs_applied >= n
    includes it. published: time.monotonic() at publication.
    """
    seq: int
    rgba: np.ndarray | None
    webp: bytes
    pose: Pose
    inputs_applied: int
    published: float


class RollingStat:
    """The last ``size`` samples of one quantity (e.g. milliseconds); median and p99 on demand."""

    def __init__(self, size: int = 600) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(float(value))

    def summary(self) -> dict[str, float | int | None]:
        with self._lock:
            data = np.asarray(self._samples, dtype=np.float64)
        if data.size == 0:
            return {"n": 0, "median": None, "p99": None, "max": None}
        return {"n": int(data.size), "median": round(float(np.median(data)), 3),
                "p99": round(float(np.percentile(data, 99)), 3), "max": round(float(data.max()), 3)}


class Subscription:
    """A consumer of published frames that never blocks the engine.

    Thread consumers call ``next_frame(timeout_s)``; asyncio consumers create the subscription
    inside their event loop with ``asyncio_loop=...`` and ``await next_frame_async()``. Either way
    only the newest frame is returned; frames published meanwhile are skipped.
    """

    def __init__(self, engine: "LiveEngine", asyncio_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._engine = engine
        self._loop = asyncio_loop
        self._thread_event = threading.Event()
        self._async_event = asyncio.Event() if asyncio_loop is not None else None
        self.last_seq = 0
        self.skipped = 0  # frames published but never handed to this consumer

    def _notify(self) -> None:
        """Called on the engine thread: must return at once."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._async_event.set)  # type: ignore[union-attr]
        else:
            self._thread_event.set()

    def _take(self) -> EncodedFrame | None:
        frame = self._engine.latest
        if frame is None or frame.seq == self.last_seq:
            return None
        self.skipped += max(0, frame.seq - self.last_seq - 1) if self.last_seq else 0
        self.last_seq = frame.seq
        return frame

    def next_frame(self, timeout_s: float | None = None) -> EncodedFrame | None:
        """Block until a frame newer than the last one taken exists; None on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._thread_event.wait(remaining)
            self._thread_event.clear()

    async def next_frame_async(self) -> EncodedFrame:
        assert self._async_event is not None, "create the subscription with asyncio_loop= to await it"
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            await self._async_event.wait()
            self._async_event.clear()

    def close(self) -> None:
        self._engine.unsubscribe(self)


def encode_webp(rgba: np.ndarray, quality: int = 100) -> bytes:
    """(H, W, 4) uint8 RGBA → WebP bytes. quality 100 (default): lossless at the least effort, the exact
    pixels; below 100: lossy colour at that quality with a lossless alpha plane (method 0: fastest).
    On a 512² student frame lossless took 6.7 ms CPU and 77 KiB, lossy 90 15.5 ms and 31 KiB (issue 15,
    docs/benchmarks.md): on a CPU-bound server the encode, not the bytes, is what costs."""
    buf = io.BytesIO()
    if quality >= 100:
        Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", lossless=True, quality=0, method=0)
    else:
        Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", quality=quality, alpha_quality=100, method=0)
    return buf.getvalue()


class _Rendered(NamedTuple):
    rgba: np.ndarray | None   # (H, W, 4) uint8; None: the pose alone (browser render mode)
    pose: Pose
    inputs_applied: int
    pending_since: float | None
    tracker_since: float | None


@dataclass
class _Inputs:
    counter: int = 0               # total API pose inputs so far
    pending_since: float | None = None  # time of the oldest API input not yet in a published frame
    tracker_since: float | None = None  # the same for tracker inputs (they do not force a render)


class LiveEngine:
    """The one render loop of a live session.

    character: anything with ``render_rgba(pose) -> (512, 512, 4) uint8`` (a ``kyara.character.Character``).
    mixer: a ``kyara.drive.mixer.PoseMixer`` (or anything with its methods, see ``PoseMixerLike``).
    fps: target ticks per second; rendering happens only when the pose changed, an input is pending,
    or ``refresh_s`` passed since the last render. frame_fps: the most frames per second rendered
    (server frames; None: one per tick); ticks in between leave the pose and pending inputs for the
    next rendered tick, so nothing is dropped. Pose packets (browser mode) go out at every tick while
    no page asks for server frames (while one does, every publication carries a frame, at frame_fps).
    encoders: WebP encoder threads of the running loop, and the most frames being encoded at once
    (1 = the encoder alone bounds the frame rate at 1 / encode time). ``step()`` encodes inline.
    render: "server" (render + encode every publication) or "browser" (publish poses only, unless a
    page asked for frames with ``request_frames``).
    """

    def __init__(self, character: RgbaRenderer, mixer: PoseMixerLike, fps: float = LiveConfig.fps, *,
                 refresh_s: float = 2.0, webp_quality: int = 100, encoders: int = LiveConfig.encoders,
                 render: str = "server", clock: Callable[[], float] = time.monotonic,
                 frame_fps: float | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if frame_fps is not None and not frame_fps > 0:
            raise ValueError(f"frame_fps must be > 0, got {frame_fps}")
        if isinstance(encoders, bool) or not isinstance(encoders, int) or encoders < 1:
            raise ValueError(f"encoders must be an integer >= 1, got {encoders!r}")
        if render not in RENDER_MODES:
            raise ValueError(f"render must be one of {RENDER_MODES}, got {render!r}")
        self.character = character
        self.mixer = mixer
        self.fps = float(fps)
        self.frame_fps = min(float(frame_fps), self.fps) if frame_fps is not None else self.fps
        # 0.9: a tick a little early (timer jitter) still renders, a tick one period after a render does not
        self._min_frame_gap = 0.9 / self.frame_fps if self.frame_fps < self.fps else 0.0
        self.refresh_s = float(refresh_s)
        self.webp_quality = int(webp_quality)
        self.encoders = encoders
        self.render_mode = render
        self.clock = clock
        self.latest: EncodedFrame | None = None
        self.pose: Pose = Pose()          # the last pose read from the mixer
        self.render_ms = RollingStat()
        self.encode_ms = RollingStat()
        self.latency_ms = RollingStat()
        self.tracker_latency_ms = RollingStat()
        mixer.on_input = self.note_input
        self.tick_errors = 0
        self.last_error: str | None = None
        self._error_lock = threading.Lock()    # render and encoder threads both count errors
        self._publish_times: deque[float] = deque(maxlen=240)
        self._inputs = _Inputs()
        self._lock = threading.Lock()          # guards _inputs and mixer calls from other threads
        self._subscribers: list[Subscription] = []
        self._sub_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_render = -float("inf")
        self._frames_wanted = 0               # pages that asked for server frames (browser render mode)
        self._force_frame = False             # render the next tick even if the pose did not change
        self._render_lock = threading.Lock()  # the loop and frame_rgba() share one character
        self._seq = 0
        self.started_at: float | None = None

    # -- inputs (any thread) ------------------------------------------------------------------
    def note_input(self, when: float | None = None, source: str | None = None) -> int:
        """Record that a pose input arrived at ``when`` (default now); returns the input number.

        source: None for API inputs (numbered; the next tick renders); a source name for tracker
        inputs, which are timed into ``tracker_latency_ms`` only (their pose change renders anyway).
        """
        when = self.clock() if when is None else when
        with self._lock:
            inp = self._inputs
            if source is not None:
                inp.tracker_since = when if inp.tracker_since is None else min(inp.tracker_since, when)
                return inp.counter
            inp.counter += 1
            if inp.pending_since is None:
                inp.pending_since = when
            return inp.counter

    @property
    def manual(self) -> dict[str, float]:
        """The slider values (held by the mixer)."""
        return self.mixer.manual

    def set_manual(self, values: Mapping[str, float]) -> int:
        """Merge parameter values into the mixer's sliders (PoseError if invalid); returns the input number."""
        with self._lock:
            self.mixer.set_manual(values)
        return self.note_input()

    def reset_manual(self) -> int:
        with self._lock:
            self.mixer.reset_manual()
        return self.note_input()

    def set_preset(self, name: str, intensity: float) -> int:
        with self._lock:
            self.mixer.set_preset(name, float(intensity))
        return self.note_input()

    def trigger(self, event_name: str) -> int:
        with self._lock:
            self.mixer.trigger(event_name, self.clock())
        return self.note_input()

    def calibrate(self) -> int:
        with self._lock:
            self.mixer.calibrate()
        return self.note_input()

    def set_idle(self, toggles: Mapping[str, bool]) -> dict[str, bool]:
        """The mixer's ``set_idle`` (e.g. {"blink": False}; LookupError, KeyError) as an input."""
        with self._lock:
            state = self.mixer.set_idle(toggles)
        self.note_input()
        return state

    def idle_state(self) -> dict[str, bool] | None:
        return self.mixer.idle_state()

    # -- server frames in browser render mode ---------------------------------------------------
    def request_frames(self, on: bool) -> None:
        """A page starts (True) or stops (False) needing server-rendered frames. Counted: in browser
        render mode frames are rendered while the count is above 0. No effect on the server mode."""
        with self._lock:
            self._frames_wanted = max(0, self._frames_wanted + (1 if on else -1))
            if on:
                self._force_frame = True

    @property
    def renders_frames(self) -> bool:
        """Whether publications carry frames now (always in server mode)."""
        return self.render_mode == "server" or self._frames_wanted > 0

    def frame_rgba(self) -> tuple[int, np.ndarray] | None:
        """(seq, (H, W, 4) uint8 RGBA) of the latest publication; in browser render mode a pose-only
        publication is rendered here on demand (on the caller's thread). None before the first."""
        frame = self.latest
        if frame is None:
            return None
        if frame.rgba is not None:
            return frame.seq, frame.rgba
        with self._render_lock:
            rgba = np.ascontiguousarray(self.character.render_rgba(frame.pose))
        return frame.seq, rgba

    # -- subscribers ----------------------------------------------------------------------------
    def subscribe(self, asyncio_loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        sub = Subscription(self, asyncio_loop)
        with self._sub_lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._sub_lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._sub_lock:
            return len(self._subscribers)

    # -- the loop -------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> EncodedFrame | None:
        """One tick: read the pose, render + encode + publish if needed. Returns the new frame or None."""
        rendered = self._render(now)
        return None if rendered is None else self._encode_and_publish(rendered)

    def _render(self, now: float | None = None) -> "_Rendered | None":
        """Read the pose; render it when it changed, an input waits, or the frame is stale."""
        now = self.clock() if now is None else now
        if self.renders_frames and now - self._last_render < self._min_frame_gap:
            return None   # too soon after the last frame: this tick's pose and inputs wait for the next
        with self._lock:
            inp = self._inputs
            pending_since, tracker_since, inputs_applied = inp.pending_since, inp.tracker_since, inp.counter
            inp.pending_since = inp.tracker_since = None
            pose = self.mixer.mix(now, since=self._last_render)  # blinks since the last render are latched
            forced, self._force_frame = self._force_frame, False
        changed = pose != self.pose or self.latest is None or forced
        stale = now - self._last_render >= self.refresh_s
        self.pose = pose
        if not (changed or stale or pending_since is not None):
            return None
        if not self.renders_frames:  # browser render mode: the pages draw this pose themselves
            self._last_render = now
            return _Rendered(None, pose, inputs_applied, pending_since, tracker_since)
        t0 = time.perf_counter()
        with self._render_lock:
            rgba = np.ascontiguousarray(self.character.render_rgba(pose))
        if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
            raise ValueError(f"character.render_rgba returned {rgba.shape} {rgba.dtype}; expected (H, W, 4) uint8")
        self.render_ms.add((time.perf_counter() - t0) * 1000.0)
        self._last_render = now
        return _Rendered(rgba, pose, inputs_applied, pending_since, tracker_since)

    def _encode_and_publish(self, rendered: "_Rendered") -> EncodedFrame:
        return self._publish(rendered, self._encode(rendered))

    def _encode(self, rendered: "_Rendered") -> bytes:
        """The slow, parallel part: any encoder thread, any order. A pose alone encodes to b""."""
        if rendered.rgba is None:
            return b""
        t1 = time.perf_counter()
        webp = encode_webp(rendered.rgba, self.webp_quality)
        self.encode_ms.add((time.perf_counter() - t1) * 1000.0)
        return webp

    def _publish(self, rendered: "_Rendered", webp: bytes) -> EncodedFrame:
        """The ordered part: callers run it one at a time, in render order (seq is numbered here)."""
        self._seq += 1
        published = self.clock()
        frame = EncodedFrame(self._seq, rendered.rgba, webp, rendered.pose, rendered.inputs_applied, published)
        self.latest = frame
        self._publish_times.append(published)
        for stat, since in ((self.latency_ms, rendered.pending_since),
                            (self.tracker_latency_ms, rendered.tracker_since)):
            if since is not None:
                stat.add((published - since) * 1000.0)
        with self._sub_lock:
            subs = list(self._subscribers)
        for sub in subs:
            try:
                sub._notify()
            except RuntimeError:  # its event loop is closed: the client is gone
                self.unsubscribe(sub)
        return frame

    def _count_error(self, e: Exception) -> None:
        with self._error_lock:
            self.tick_errors += 1
            count = self.tick_errors
            self.last_error = f"{type(e).__name__}: {e}"
        if count <= 3 or count % 100 == 0:
            log.exception("live engine tick failed (%d so far)", count)

    def _encode_worker(self, rendered: "_Rendered", previous: threading.Event | None,
                       published: threading.Event) -> None:
        """Encode in parallel, then publish after ``previous`` (the frame rendered before) is done.

        ``published`` is set in every case, a failed encode included, or the frames after this one
        would wait forever. A failed frame still waits for its predecessor first, so a later frame
        cannot overtake a slow earlier one through it.
        """
        try:
            webp = None
            try:
                webp = self._encode(rendered)
            except Exception as e:  # counted like a render failure; the frame is dropped, the loop goes on
                self._count_error(e)
            if previous is not None:
                previous.wait()
            if webp is not None:
                self._publish(rendered, webp)
        except Exception as e:
            self._count_error(e)
        finally:
            published.set()

    def _run(self) -> None:
        # Two-stage pipeline: this thread renders frame N+k while ``encoders`` pool threads compress
        # frames N..N+k-1 in parallel (torch and Pillow's WebP encoder both release the GIL). Each
        # job publishes only after the job before it, so frames appear in render order whatever
        # order the encodes finish in. At most ``encoders`` frames are in flight: latency stays
        # bounded and rendered frames cannot pile up in memory.
        from concurrent.futures import ThreadPoolExecutor

        period = 1.0 / self.fps
        next_tick = self.clock()
        pool = ThreadPoolExecutor(max_workers=self.encoders, thread_name_prefix="kyara-live-encode")
        try:
            self._loop(period, next_tick, pool)
        finally:
            pool.shutdown(wait=True)  # in-flight frames finish and publish (in order) before stop() returns

    def _loop(self, period: float, next_tick: float, pool) -> None:
        in_flight: deque = deque()  # futures of submitted frames, oldest first
        previous: threading.Event | None = None  # "published" event of the last submitted frame
        while not self._stop.is_set():
            try:
                rendered = self._render()
                if rendered is not None:
                    while in_flight and (len(in_flight) >= self.encoders or in_flight[0].done()):
                        in_flight.popleft().result()  # the worker catches everything; this only waits
                    published = threading.Event()
                    in_flight.append(pool.submit(self._encode_worker, rendered, previous, published))
                    previous = published
            except Exception as e:  # a bad frame must not kill the session; it is counted and shown
                self._count_error(e)
                self._stop.wait(0.1)
            next_tick += period
            delay = next_tick - self.clock()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_tick = self.clock()  # behind schedule: do not try to catch up with a burst

    def start(self) -> None:
        """Start the render thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.started_at = self.clock()
        self._thread = threading.Thread(target=self._run, name="kyara-live-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the render thread and wait for it (a tick in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"live engine thread did not stop within {timeout_s} s")
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- reporting ------------------------------------------------------------------------------
    def measured_fps(self, window_s: float = 2.0) -> float:
        now = self.clock()
        times = [t for t in list(self._publish_times) if now - t <= window_s]
        if len(times) < 2:
            return 0.0
        span = max(times[-1] - times[0], 1e-9)
        return (len(times) - 1) / span

    def status(self) -> dict:
        """JSON-ready snapshot: fps, timings (ms), sources, subscribers, errors."""
        try:
            sources = [{"name": str(name), "stats": _jsonable(stats), "live": bool(live)}
                       for name, stats, live in self.mixer.sources()]
        except Exception as e:  # reporting must never take the status endpoint down
            sources = [{"name": "?", "stats": {"error": str(e)}, "live": False}]
        latest = self.latest
        return {
            "character": str(getattr(self.character, "name", "character")),
            "target_fps": self.fps,
            "frame_fps": self.frame_fps,
            "encoders": self.encoders,
            "render": self.render_mode,
            "frames_wanted": self._frames_wanted,
            "fps": round(self.measured_fps(), 2),
            "frames": latest.seq if latest else 0,
            "frame_bytes": len(latest.webp) if latest else 0,
            "render_ms": self.render_ms.summary(),
            "encode_ms": self.encode_ms.summary(),
            "latency_ms": self.latency_ms.summary(),
            "tracker_latency_ms": self.tracker_latency_ms.summary(),
            "inputs": self._inputs.counter,
            "subscribers": self.subscriber_count,
            "sources": sources,
            "idle": self.idle_state(),
            "tick_errors": self.tick_errors,
            "last_error": self.last_error,
            "running": self.running,
        }


def _jsonable(value, depth: int = 0):
    """Sources report arbitrary stats; keep numbers, strings, bools and shallow containers only."""
    if depth > 3:
        return None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item(), depth)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k), depth + 1) for k in value.__dataclass_fields__}
    return str(value)


__all__ = ["LiveEngine", "EncodedFrame", "Subscription", "RollingStat", "encode_webp", "NAMES"]
