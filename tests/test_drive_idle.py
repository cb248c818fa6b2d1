"""Idle motion: blink timing/shape, breathing formula, bounded sway, determinism."""
import math

import numpy as np
import pytest

from kyara.drive.idle import IdleConfig, IdleMotion


def _all_blinks(idle, t0, seconds):
    seen = set()
    for i in range(seconds + 1):  # step the clock; old blinks are forgotten as time passes
        seen.update(idle.blink_times(t0 + i))
    return sorted(seen)


def test_blink_intervals_and_shape():
    idle = IdleMotion(IdleConfig(double_blink_probability=0.0), seed=3)
    t0 = 1000.0
    idle.sample(t0)
    blinks = _all_blinks(idle, t0, 600)
    gaps = np.diff(blinks)
    assert 100 <= len(blinks) <= 300  # ~ one blink every 4 s
    assert gaps.min() >= 2.0 - 1e-9 and gaps.max() <= 6.0 + 1e-9
    b = idle.blink_times(t0 + 700)[-1]
    assert idle.sample(b + 0.075)["eye_wink_left"] == pytest.approx(1.0)    # closed mid-blink
    assert idle.sample(b + 0.0375)["eye_wink_right"] == pytest.approx(math.sin(math.pi / 4))
    assert idle.sample(b + 0.16)["eye_wink_left"] == 0.0                    # open again after 0.15 s
    assert idle.sample(b - 0.01)["eye_wink_left"] == 0.0


def test_blink_coverage_on_a_frame_clock():
    idle = IdleMotion(seed=1)
    vals = [idle.sample(10.0 + i / 60)["eye_wink_left"] for i in range(60 * 60)]
    closed_frames = sum(v > 0.5 for v in vals)
    assert 10 <= closed_frames <= 200  # a few frames per blink, 10-30 blinks per minute


def test_double_blinks_happen_when_enabled():
    idle = IdleMotion(IdleConfig(double_blink_probability=1.0), seed=0)
    idle.sample(0.0)
    gaps = np.diff(_all_blinks(idle, 0.0, 100))
    assert np.isclose(gaps, 0.3).sum() >= 10


def test_breathing_formula():
    idle = IdleMotion(IdleConfig(breaths_per_min=20, blink=False, sway=False))
    period = 3.0
    assert idle.sample(0.0) == {"breathing": pytest.approx(0.0)}
    assert idle.sample(period / 2)["breathing"] == pytest.approx(1.0)
    assert idle.sample(period / 4)["breathing"] == pytest.approx(0.5)


def test_sway_small_moving_and_deterministic():
    a, b = IdleMotion(seed=7), IdleMotion(seed=7)
    ts = np.arange(0, 60, 0.1)
    ya = np.array([a.sample(t)["head_y"] for t in ts])
    yb = np.array([b.sample(t)["head_y"] for t in ts])
    assert np.array_equal(ya, yb)
    assert np.abs(ya).max() <= 0.08 + 1e-9 and ya.std() > 0.01
    c = IdleMotion(seed=8)
    assert not np.allclose(ya, [c.sample(t)["head_y"] for t in ts])


def test_disabled_parts_absent_and_config_checked():
    idle = IdleMotion(IdleConfig(blink=False, breathing=False, sway=False))
    assert idle.sample(1.0) == {}
    with pytest.raises(ValueError):
        IdleConfig(blink_interval_s=(3.0, 1.0))
    with pytest.raises(ValueError):
        IdleConfig(breaths_per_min=100)


def test_blink_latched_over_a_window():
    idle = IdleMotion(IdleConfig(double_blink_probability=0.0), seed=3)
    idle.sample(0.0)
    b = idle.blink_times(10.0)[-1]
    assert idle.sample(b + 0.2, since=b - 0.3)["eye_wink_left"] == 1.0           # whole blink in the window
    assert idle.sample(b + 0.12, since=b + 0.07)["eye_wink_left"] == 1.0          # its middle (b + 0.075) too
    # the middle is not in the window: the value at t, as without latching (never an older value)
    assert idle.sample(b + 0.03, since=b - 0.3)["eye_wink_left"] == pytest.approx(math.sin(math.pi * 0.2))
    assert idle.sample(b + 0.12, since=b + 0.08)["eye_wink_left"] == pytest.approx(math.sin(math.pi * 0.8))
    assert idle.sample(b + 0.5, since=b + 0.1)["eye_wink_left"] == 0.0             # eyes open again
    assert idle.sample(b + 0.05, since=b + 0.05) == idle.sample(b + 0.05)          # empty window: no latching
