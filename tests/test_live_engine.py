"""LiveEngine: what a tick renders and publishes (through ``step(now)`` with an injected clock: no
sleeping, no wall-clock speed), input and tracker latency, blink latching at low frame rates; and,
with the real render thread, that slow subscribers never block it, encodes publish in render order,
errors are counted, and stop() joins."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from e2e.fakes import MOUTH_BOX, FakeCharacter, FakeMixer, region_changed
from kyara.drive.idle import IdleConfig, IdleMotion
from kyara.drive.mixer import MixerConfig, PoseMixer, SmoothingConfig
from kyara.drive.source import PoseSource, SourceSample
from kyara.live import LiveEngine, RollingStat
from kyara.pose import PoseError


class Clock:
    """An injected engine clock: the tests move time by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def decode(webp: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(webp))
    assert img.mode == "RGBA"
    return np.asarray(img)


def real_mixer(idle: IdleConfig | None = None, seed: int = 0) -> PoseMixer:
    return PoseMixer(MixerConfig(smoothing=SmoothingConfig(enabled=False)),
                     None if idle is None else IdleMotion(idle, seed=seed))


def test_the_mixer_protocol_matches_the_real_mixer():
    import inspect

    from kyara.live.engine import PoseMixerLike

    members = [n for n, v in vars(PoseMixerLike).items()
               if not n.startswith("_") and (callable(v) or isinstance(v, property))]
    assert {"mix", "set_manual", "reset_manual", "calibrate", "manual"} <= set(members)
    for name in members:
        ours, real = getattr(PoseMixerLike, name), getattr(PoseMixer, name)
        if isinstance(ours, property):
            assert isinstance(real, property), name
            ours, real = ours.fget, real.fget
        assert inspect.signature(ours) == inspect.signature(real), name
    assert "on_input" in PoseMixerLike.__annotations__ and PoseMixer().on_input is None


def test_step_renders_first_frame_then_only_on_change():
    ch, clock = FakeCharacter(), Clock(0.0)
    engine = LiveEngine(ch, FakeMixer(), fps=30, refresh_s=1e9, clock=clock)
    assert engine.latest is None and engine.status()["frames"] == 0   # nothing before the first step
    first = engine.step(now=0.0)
    assert first is not None and first.seq == 1 and engine.latest is first
    assert engine.step(now=0.1) is None          # nothing changed: no render
    assert ch.renders == 1
    engine.mixer.set_manual({"mouth_aaa": 1.0})  # a mixer change without note_input still renders
    second = engine.step(now=0.2)
    assert second is not None and second.seq == 2 and second.pose["mouth_aaa"] == 1.0
    # the WebP keeps alpha: transparent corner, opaque body, and the mouth region changed
    a, b = decode(first.webp), decode(second.webp)
    assert a[5, 5, 3] == 0 and a[300, 256, 3] == 255
    assert region_changed(a, b, MOUTH_BOX) > 0.2
    assert region_changed(a, b, (0, 250, 0, 512)) == 0.0


def test_refresh_rerenders_unchanged_pose():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30, refresh_s=0.5, clock=Clock(0.0))
    engine.step(now=0.0)
    assert engine.step(now=0.2) is None
    assert engine.step(now=0.6) is not None


def test_sliders_live_in_the_mixer_only():
    clock = Clock(10.0)
    engine = LiveEngine(FakeCharacter(), real_mixer(), fps=30, clock=clock)
    assert engine.set_manual({"head_y": 0.5}) == 1
    assert engine.set_manual({"mouth_aaa": 0.25}) == 2
    assert engine.manual == engine.mixer.manual == {"head_y": 0.5, "mouth_aaa": 0.25}   # merged, one copy
    with pytest.raises(PoseError, match="head_x"):
        engine.set_manual({"head_x": 3.0})
    with pytest.raises(PoseError, match="mouht_aaa"):
        engine.set_manual({"mouht_aaa": 0.1, "head_y": 0.0})
    assert engine.manual == {"head_y": 0.5, "mouth_aaa": 0.25}                      # failed calls changed nothing
    clock.t = 10.25
    frame = engine.step()
    assert frame.inputs_applied == 2 and frame.pose["head_y"] == 0.5
    assert engine.latency_ms.summary() == {"n": 1, "median": 250.0, "p99": 250.0, "max": 250.0}
    engine.reset_manual()
    assert engine.manual == {} and engine.step(now=10.3).pose["head_y"] == 0.0
    engine.set_preset("happy", 0.5)
    assert engine.step(now=10.4).pose["eye_happy_wink_left"] == pytest.approx(0.5)
    assert engine.mixer.calibrate() == [] and engine.calibrate() == 5              # list[str] from the mixer


def test_input_latency_counts_to_publication():
    clock = Clock(5.0)
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30, refresh_s=1e9, clock=clock)
    engine.step()
    engine.note_input()                 # at 5.0 ...
    clock.t = 5.02
    engine.note_input()                 # ... and at 5.02: latency runs from the oldest pending one
    clock.t = 5.1
    frame = engine.step()
    assert frame is not None and frame.inputs_applied == 2   # an input renders even with the pose unchanged
    assert engine.latency_ms.summary()["max"] == pytest.approx(100.0)
    assert engine.step(now=5.2) is None and engine.latency_ms.summary()["n"] == 1


def test_frame_fps_renders_every_other_tick_and_keeps_inputs_for_the_next():
    """60 ticks/s, at most 30 frames/s (the CPU default): a tick 1/60 s after a frame renders nothing and
    consumes nothing; the pose and the pending input are in the next allowed tick's frame."""
    clock = Clock(0.0)
    engine = LiveEngine(FakeCharacter(), real_mixer(), fps=60, frame_fps=30, refresh_s=1e9, clock=clock)
    assert engine.status()["frame_fps"] == 30.0
    assert engine.step(now=0.0) is not None
    clock.t = 0.005
    assert engine.set_manual({"mouth_aaa": 1.0}) == 1   # an API input at t = 0.005
    assert engine.step(now=1 / 60) is None         # too soon after the frame at 0
    frame = engine.step(now=2 / 60 - 0.001)        # a tick a little early still renders (timer jitter)
    assert frame is not None and frame.pose["mouth_aaa"] == 1.0 and frame.inputs_applied == 1
    assert engine.latency_ms.summary()["n"] == 1
    times = [k / 60 for k in range(3, 63)]         # one second of ticks with the pose changing every tick
    published = 0
    for k, t in enumerate(times):
        engine.set_manual({"head_x": (k % 7) / 7})
        published += engine.step(now=t) is not None
    assert published == 30
    # frame_fps >= fps, or None: one frame per tick as before
    assert LiveEngine(FakeCharacter(), FakeMixer(), fps=30, frame_fps=60).frame_fps == 30.0
    with pytest.raises(ValueError, match="frame_fps"):
        LiveEngine(FakeCharacter(), FakeMixer(), fps=30, frame_fps=0)


def test_frame_fps_does_not_slow_pose_packets_in_browser_mode():
    engine = LiveEngine(FakeCharacter(), real_mixer(), fps=60, frame_fps=30, refresh_s=1e9, clock=Clock(0.0),
                        render="browser")
    sent = 0
    for k in range(60):
        engine.set_manual({"head_x": (k % 7) / 7})
        sent += engine.step(now=k / 60) is not None
    assert sent == 60


def test_live_config_frame_fps_defaults_to_30_on_a_cpu_only():
    from kyara.errors import KyaraError
    from kyara.live.session import CPU_SERVER_FPS, LiveConfig

    assert CPU_SERVER_FPS == 30.0
    assert LiveConfig().frame_fps("cpu") == 30.0 and LiveConfig().frame_fps("cuda") == 60.0
    assert LiveConfig(fps=24).frame_fps("cpu") == 24.0
    assert LiveConfig(server_fps=60).frame_fps("cpu") == 60.0 and LiveConfig(server_fps=20).frame_fps("cuda") == 20.0
    assert LiveConfig(fps=30, server_fps=60).frame_fps("cpu") == 30.0   # never more frames than ticks
    with pytest.raises(KyaraError, match="--server-fps"):
        LiveConfig(server_fps=0)


class TickingSource(PoseSource):
    """A tracker stand-in: put() stores a sample and reports the arrival like a UDP receiver does."""

    name = "tracker"

    def __init__(self) -> None:
        self.sample = None

    def start(self) -> None: ...
    def stop(self) -> None: ...

    def put(self, values: dict, arrival: float) -> None:
        self.sample = SourceSample.from_dict(values, arrival)
        self._input_arrived(arrival)

    def latest(self, now: float):
        return self.sample


def test_tracker_inputs_are_timed_to_the_frame_that_shows_them():
    clock = Clock(50.0)
    mixer, tracker = real_mixer(), TickingSource()
    mixer.add_source(tracker)
    engine = LiveEngine(FakeCharacter(), mixer, fps=60, refresh_s=1e9, clock=clock)
    engine.step()
    tracker.put({"mouth_aaa": 0.5}, 50.01)
    tracker.put({"mouth_aaa": 0.6}, 50.02)   # two packets before the next tick: the older one counts
    clock.t = 50.05
    frame = engine.step()
    assert frame.pose["mouth_aaa"] == pytest.approx(0.6)
    assert engine.tracker_latency_ms.summary()["max"] == pytest.approx(40.0)
    status = engine.status()
    assert status["tracker_latency_ms"]["n"] == 1 and status["inputs"] == 0   # not an API input
    assert status["latency_ms"]["n"] == 0
    tracker.put({"mouth_aaa": 0.6}, 50.06)   # same values: nothing new to show, nothing rendered
    assert engine.step(now=50.07) is None
    tracker.put({"mouth_aaa": 0.7}, 50.08)
    engine.step(now=50.1)
    assert engine.tracker_latency_ms.summary()["n"] == 2   # the unshown packet was not counted


class Blank:
    name = "blank"

    def render_rgba(self, pose) -> np.ndarray:
        return np.zeros((8, 8, 4), np.uint8)


def _blink_run(fps: float, seconds: float, latched: bool, monkeypatch) -> tuple[list, list]:
    """Idle (blink, breathing, sway) through the engine at `fps` ticks per second; the encoder is a
    stub (no speed is measured). Returns ([(t, eye_wink_left) per published frame], blink starts)."""
    monkeypatch.setattr("kyara.live.engine.encode_webp", lambda rgba, quality=90: b"")
    idle = IdleMotion(IdleConfig(double_blink_probability=0.0), seed=5)
    mixer = PoseMixer(MixerConfig(), idle)
    if not latched:
        real_mix = mixer.mix
        mixer.mix = lambda now, since=None: real_mix(now, since=now)   # the old behaviour: no window
    clock = Clock(100.0)
    engine = LiveEngine(Blank(), mixer, fps=fps, clock=clock)
    frames, blinks = [], set()
    for k in range(int(seconds * fps)):
        clock.t = 100.0 + k / fps
        frame = engine.step()
        if frame is not None:
            frames.append((clock.t, frame.pose["eye_wink_left"]))
        blinks.update(idle.blink_times(clock.t))
    last = 100.0 + (int(seconds * fps) - 1) / fps
    return frames, sorted(b for b in blinks if b + idle.config.blink_duration_s <= last)


def test_idle_blinks_close_the_eyes_fully_at_2_fps(monkeypatch):
    # Issue 12.10: at 2 frames/s a 0.15 s blink used to show as a half-closed frame or not at all.
    frames, blinks = _blink_run(2.0, 40.0, latched=True, monkeypatch=monkeypatch)
    assert len(blinks) >= 6 and len(frames) == 80   # breathing changes the pose every tick
    for b in blinks:   # the first frame at or after the middle of each blink shows the eyes closed
        t, v = next((t, v) for t, v in frames if t >= b + 0.075)
        assert v == 1.0, f"blink at {b:.2f}: frame at {t:.1f} shows eye_wink_left = {v:.3f}"
    old, _ = _blink_run(2.0, 40.0, latched=False, monkeypatch=monkeypatch)
    assert sum(v == 1.0 for _, v in old) == 0   # without latching none is fully closed (this seed)


def test_blinks_at_60_fps_are_unchanged_by_latching(monkeypatch):
    frames, blinks = _blink_run(60.0, 40.0, latched=True, monkeypatch=monkeypatch)
    old, _ = _blink_run(60.0, 40.0, latched=False, monkeypatch=monkeypatch)
    assert [t for t, _ in frames] == [t for t, _ in old]        # the same frames ...
    latched, plain = np.array([v for _, v in frames]), np.array([v for _, v in old])
    assert np.array_equal(latched > 0, plain > 0)                # ... the eyes move on the same frames
    # the first frame after each blink's middle reads 1.0 instead of sin(pi * u) with u at most
    # 1/60 s / 0.15 s past 1/2, i.e. >= cos(pi / 9) = 0.94; every other frame is identical
    differ = np.flatnonzero(latched != plain)
    assert len(differ) == len(blinks) and np.all(latched[differ] == 1.0)
    assert np.all(plain[differ] >= np.cos(np.pi / 9) - 1e-6)


# -- the render thread ------------------------------------------------------------------------------
def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.01)


def test_running_engine_publishes_a_pose_change():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=100)
    sub = engine.subscribe()
    engine.start()
    try:
        assert sub.next_frame(timeout_s=10.0) is not None
        n = engine.set_manual({"mouth_aaa": 0.8})
        while True:
            frame = sub.next_frame(timeout_s=10.0)
            assert frame is not None, "no frame after a pose change"
            if frame.inputs_applied >= n:
                break
        assert frame.pose["mouth_aaa"] == pytest.approx(0.8)
        lat = engine.latency_ms.summary()
        assert lat["n"] >= 1 and lat["median"] >= 0
        status = engine.status()
        assert status["frames"] >= 2 and status["sources"][0]["name"] == "fake_tracker"
        assert status["render_ms"]["n"] >= 2 and status["running"] is True
    finally:
        engine.stop()
    assert not engine.running


def test_slow_subscriber_does_not_block_the_loop():
    # A subscriber takes one frame and then stops reading. The engine must keep publishing without
    # it, and the subscriber's next read must be the newest frame with everything in between counted
    # as skipped. Progress is counted in frames with a generous deadline, not as frames per second.
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=200, refresh_s=0.0)  # re-render every tick
    slow = engine.subscribe()
    engine.start()
    try:
        first = slow.next_frame(timeout_s=10.0)
        assert first is not None, "no first frame within 10 s"
        wait_for(lambda: engine.latest.seq >= first.seq + 10,
                 "10 frames published while a subscriber was not reading", 30.0)
        newest = engine.latest.seq
        second = slow.next_frame(timeout_s=10.0)
    finally:
        engine.stop()
    assert second is not None and second.seq >= newest
    assert slow.skipped == second.seq - first.seq - 1 >= 9


def test_stop_joins_and_restart_works():
    engine = LiveEngine(FakeCharacter(delay_s=0.02), FakeMixer(), fps=60, refresh_s=0.0)
    sub = engine.subscribe()
    engine.start()
    engine.start()  # idempotent
    assert sub.next_frame(timeout_s=10.0) is not None
    engine.stop()
    assert not engine.running
    n = engine.latest.seq
    time.sleep(0.1)
    assert engine.latest.seq == n  # nothing published after stop
    engine.start()
    wait_for(lambda: engine.latest.seq > n, "a frame after restart")
    engine.stop()


def test_tick_errors_are_counted_not_fatal():
    class Broken(FakeCharacter):
        def render_rgba(self, pose):
            if pose["mouth_aaa"] > 0.5:
                raise RuntimeError("boom")
            return super().render_rgba(pose)

    engine = LiveEngine(Broken(), FakeMixer(), fps=100)
    engine.start()
    try:
        engine.set_manual({"mouth_aaa": 0.9})
        wait_for(lambda: engine.tick_errors >= 1, "a counted tick error")
        assert "boom" in engine.last_error
        engine.set_manual({"mouth_aaa": 0.1})
        wait_for(lambda: engine.latest is not None and engine.latest.pose["mouth_aaa"] == pytest.approx(0.1),
                 "recovery after a failing tick")
    finally:
        engine.stop()


def test_rolling_stat():
    s = RollingStat(size=100)
    assert s.summary()["median"] is None
    for v in range(1, 201):
        s.add(v)
    summary = s.summary()
    assert summary["n"] == 100 and summary["median"] == pytest.approx(150.5) and summary["max"] == 200
    assert 198 <= summary["p99"] <= 200


def test_import_starts_nothing():
    import subprocess
    import sys

    code = ("import threading, kyara.live.engine, kyara.server.app, kyara.server.api; "
            "assert threading.active_count() == 1, threading.enumerate()")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- parallel encoders: frames encode out of order but publish in render order -------------------
class NumberedCharacter(FakeCharacter):
    """Stamps its render count (1, 2, ...) into pixel (0, 0) so a fake encoder can tell frames apart."""

    def render_rgba(self, pose):
        rgba = super().render_rgba(pose)
        rgba[0, 0, :] = np.frombuffer(self.renders.to_bytes(4, "little"), np.uint8)
        return rgba


def render_number(rgba: np.ndarray) -> int:
    return int.from_bytes(rgba[0, 0, :].tobytes(), "little")


def record_publications(engine: LiveEngine) -> list:
    """Every published frame, in publication order: a subscriber's notify runs inside each publication."""
    published = []
    sub = engine.subscribe()
    notify = sub._notify
    sub._notify = lambda: (published.append(engine.latest), notify())
    return published


def run_until(engine: LiveEngine, published: list, frames: int, timeout_s: float = 20.0) -> None:
    engine.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(published) < frames and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.stop()
    assert len(published) >= frames, f"only {len(published)} frames published in {timeout_s} s"


def test_parallel_encodes_finishing_out_of_order_publish_in_render_order(monkeypatch):
    import random

    rng = random.Random(1234)
    finished: list[int] = []  # render numbers in the order their encodes finished

    def jittery_encode(rgba, quality=90):
        time.sleep(rng.uniform(0.0, 0.02))
        number = render_number(rgba)
        finished.append(number)
        return number.to_bytes(4, "little")

    monkeypatch.setattr("kyara.live.engine.encode_webp", jittery_encode)
    engine = LiveEngine(NumberedCharacter(), FakeMixer(), fps=200, refresh_s=0.0, encoders=3)
    published = record_publications(engine)
    reader = engine.subscribe()
    seen: list[int] = []
    latest_seqs: list[int] = []
    done = threading.Event()

    def read() -> None:  # a second consumer, through the public API, plus a poller of engine.latest
        while not done.is_set():
            frame = reader.next_frame(timeout_s=0.005)
            if frame is not None:
                seen.append(frame.seq)
            if engine.latest is not None:
                latest_seqs.append(engine.latest.seq)

    t = threading.Thread(target=read)
    t.start()
    try:
        run_until(engine, published, 60)
    finally:
        done.set()
        t.join(5)
    assert engine.tick_errors == 0, engine.last_error
    n = len(published)
    # every rendered frame is published exactly once, numbered 1..n without gaps, in render order,
    # and each frame carries its own encoding (not a neighbour's that finished at the same time)
    assert [f.seq for f in published] == list(range(1, n + 1))
    assert [render_number(f.rgba) for f in published] == list(range(1, n + 1))
    assert all(f.webp == render_number(f.rgba).to_bytes(4, "little") for f in published)
    assert [f.published for f in published] == sorted(f.published for f in published)
    # the encodes really did finish out of order (else this test would prove nothing)
    assert finished != sorted(finished)
    assert seen and all(a < b for a, b in zip(seen, seen[1:]))
    assert latest_seqs and all(a <= b for a, b in zip(latest_seqs, latest_seqs[1:]))
    assert engine.latest.seq == n  # stop() waited for the frames in flight


def _encode_concurrency(monkeypatch, encoders: int, frames: int = 20) -> tuple[int, int]:
    """The most encodes running at once and the largest backlog (frames rendered but not yet
    published) while `frames` frames publish with a 30 ms encode (a sleep) and a ~1 ms render."""
    lock = threading.Lock()
    running = [0, 0]  # now, max

    def slow_encode(rgba, quality=90):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return b"x"

    monkeypatch.setattr("kyara.live.engine.encode_webp", slow_encode)
    character = FakeCharacter()
    engine = LiveEngine(character, FakeMixer(), fps=200, refresh_s=0.0, encoders=encoders)
    sub = engine.subscribe()
    backlog = 0
    engine.start()
    try:
        first = sub.next_frame(timeout_s=10.0)
        assert first is not None
        deadline = time.monotonic() + 30.0
        while engine.latest.seq < first.seq + frames:
            assert time.monotonic() < deadline, f"{frames} frames not published in 30 s"
            renders = character.renders  # read before latest: never overstates the backlog
            backlog = max(backlog, renders - engine.latest.seq)
            time.sleep(0.005)
    finally:
        engine.stop()
    return running[1], backlog


def test_encoders_run_in_parallel_up_to_the_limit(monkeypatch):
    # Encoding is the bottleneck, so the render thread keeps `encoders` encodes in flight, and never
    # more: it waits for the oldest instead of queueing 200 frames/s behind the encoders. (How many
    # frames per second that buys is a benchmark's question, not a test's.)
    max1, backlog1 = _encode_concurrency(monkeypatch, encoders=1)
    max3, backlog3 = _encode_concurrency(monkeypatch, encoders=3)
    assert (max1, max3) == (1, 3)
    assert backlog1 <= 2 and backlog3 <= 4, (backlog1, backlog3)  # in flight + the one being rendered


def test_failed_encode_is_counted_and_later_frames_still_publish_in_order(monkeypatch):
    # Frame 4 encodes slowly and frame 5 fails at once: frame 6 must still wait for frame 4.
    def encode(rgba, quality=90):
        number = render_number(rgba)
        if number == 4:
            time.sleep(0.1)
        if number == 5:
            raise RuntimeError("encoder boom")
        return number.to_bytes(4, "little")

    monkeypatch.setattr("kyara.live.engine.encode_webp", encode)
    engine = LiveEngine(NumberedCharacter(), FakeMixer(), fps=200, refresh_s=0.0, encoders=3)
    published = record_publications(engine)
    run_until(engine, published, 15)
    assert engine.tick_errors == 1 and "encoder boom" in engine.last_error
    n = len(published)
    assert [f.seq for f in published] == list(range(1, n + 1))              # no gap in seq
    assert [render_number(f.rgba) for f in published] == [k for k in range(1, n + 2) if k != 5]


def test_step_with_several_encoders_is_unchanged():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30, refresh_s=0.0, encoders=4)
    assert [engine.step(now=t).seq for t in (0.0, 0.1, 0.2)] == [1, 2, 3]
    assert engine.status()["encoders"] == 4


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_encoders_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="encoders"):
        LiveEngine(FakeCharacter(), FakeMixer(), encoders=bad)
