"""LiveEngine: pose changes reach published frames quickly, slow subscribers never block the loop,
stats are recorded, and stop() joins the thread."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from e2e.fakes import MOUTH_BOX, FakeCharacter, FakeMixer, region_changed
from kyara.live import LiveEngine, RollingStat
from kyara.pose import Pose, PoseError


def decode(webp: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(webp))
    assert img.mode == "RGBA"
    return np.asarray(img)


def test_step_renders_first_frame_then_only_on_change():
    ch = FakeCharacter()
    engine = LiveEngine(ch, FakeMixer(), fps=30, refresh_s=1e9)
    first = engine.step(now=0.0)
    assert first is not None and first.seq == 1
    assert engine.step(now=0.1) is None          # nothing changed: no render
    assert ch.renders == 1
    engine.mixer.set_manual({"mouth_aaa": 1.0})  # a source change without note_input still renders
    second = engine.step(now=0.2)
    assert second is not None and second.seq == 2 and second.pose["mouth_aaa"] == 1.0
    # the WebP keeps alpha: transparent corner, opaque body, and the mouth region changed
    a, b = decode(first.webp), decode(second.webp)
    assert a[5, 5, 3] == 0 and a[300, 256, 3] == 255
    assert region_changed(a, b, MOUTH_BOX) > 0.2
    assert region_changed(a, b, (0, 250, 0, 512)) == 0.0


def test_refresh_rerenders_unchanged_pose():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30, refresh_s=0.5)
    engine.step(now=0.0)
    assert engine.step(now=0.2) is None
    assert engine.step(now=0.6) is not None


def test_set_manual_validates_and_counts_inputs():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30)
    assert engine.set_manual({"head_y": 0.5}) == 1
    assert engine.set_manual({"mouth_aaa": 0.25}) == 2
    assert engine.manual == {"head_y": 0.5, "mouth_aaa": 0.25}   # merged, not replaced
    assert engine.mixer.manual == engine.manual
    with pytest.raises(PoseError, match="head_x"):
        engine.set_manual({"head_x": 3.0})
    with pytest.raises(PoseError, match="mouht_aaa"):
        engine.set_manual({"mouht_aaa": 0.1})
    frame = engine.step()
    assert frame.inputs_applied == 2
    assert engine.latency_ms.summary()["n"] == 1
    engine.reset_manual()
    assert engine.manual == {} and engine.mixer.manual == {}


def test_running_engine_publishes_pose_change_within_a_few_ticks():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=100)
    sub = engine.subscribe()
    engine.start()
    try:
        assert sub.next_frame(timeout_s=5.0) is not None
        sent_at = time.monotonic()
        n = engine.set_manual({"mouth_aaa": 0.8})
        while True:
            frame = sub.next_frame(timeout_s=5.0)
            assert frame is not None, "no frame after a pose change"
            if frame.inputs_applied >= n:
                break
        assert frame.pose["mouth_aaa"] == pytest.approx(0.8)
        assert time.monotonic() - sent_at < 1.0
        lat = engine.latency_ms.summary()
        assert lat["n"] >= 1 and 0 <= lat["median"] < 1000
        status = engine.status()
        assert status["frames"] >= 2 and status["sources"][0]["name"] == "fake_tracker"
        assert status["render_ms"]["n"] >= 2 and status["running"] is True
    finally:
        engine.stop()
    assert not engine.running


def test_slow_subscriber_does_not_block_the_loop():
    # A subscriber takes one frame and then stops reading. The engine must keep publishing without
    # it, and the subscriber's next read must be the newest frame with everything in between counted
    # as skipped. Progress is counted in frames with a generous deadline, not as frames per second,
    # so a loaded 2-core test machine cannot fail it; an engine that waited for the reader would
    # publish nothing more and fail it for certain.
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=200, refresh_s=0.0)  # re-render every tick
    slow = engine.subscribe()
    engine.start()
    try:
        first = slow.next_frame(timeout_s=10.0)
        assert first is not None, "no first frame within 10 s"
        deadline = time.monotonic() + 30.0
        while engine.latest.seq < first.seq + 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        newest = engine.latest.seq
        assert newest >= first.seq + 10, f"engine published only {newest - first.seq} frames in 30 s " \
                                         "while a subscriber was not reading"
        second = slow.next_frame(timeout_s=10.0)
    finally:
        engine.stop()
    assert second is not None and second.seq >= newest
    assert slow.skipped == second.seq - first.seq - 1 >= 9


def test_stop_joins_and_restart_works():
    engine = LiveEngine(FakeCharacter(delay_s=0.02), FakeMixer(), fps=60)
    engine.start()
    engine.start()  # idempotent
    time.sleep(0.1)
    engine.stop()
    assert not engine.running
    n = engine.latest.seq
    time.sleep(0.1)
    assert engine.latest.seq == n  # nothing published after stop
    engine.start()
    time.sleep(0.1)
    engine.stop()
    assert engine.latest.seq >= n


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
        time.sleep(0.3)
        assert engine.tick_errors >= 1 and "boom" in engine.last_error
        engine.set_manual({"mouth_aaa": 0.1})
        deadline = time.monotonic() + 3
        while engine.latest is None or engine.latest.pose["mouth_aaa"] != pytest.approx(0.1):
            assert time.monotonic() < deadline, "engine did not recover after a failing tick"
            time.sleep(0.02)
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
