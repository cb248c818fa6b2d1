"""PoseMixer: manual < idle < tracking (with fade) < events; smoothing; clamping; robustness."""
import numpy as np
import pytest

from kyara.drive.idle import IdleConfig, IdleMotion
from kyara.drive.mixer import MixerConfig, PoseMixer, SmoothingConfig
from kyara.drive.source import PoseSource, SourceSample
from kyara.pose import Pose, PoseError

NO_SMOOTH = MixerConfig(smoothing=SmoothingConfig(enabled=False))


class FakeSource(PoseSource):
    def __init__(self, name="fake"):
        self.name = name
        self.sample = None
        self.calibrated = 0

    def start(self):
        pass

    def stop(self):
        pass

    def put(self, values, t):
        self.sample = SourceSample(dict(values), t)

    def latest(self, now):
        return self.sample

    def stats(self):
        return {"packets_ok": 1 if self.sample else 0}

    def calibrate(self):
        self.calibrated += 1
        return True


class BrokenSource(FakeSource):
    def latest(self, now):
        raise RuntimeError("boom")


def test_manual_and_preset():
    m = PoseMixer(NO_SMOOTH)
    assert m.pose(0.0) == Pose()
    m.set_preset("happy", 0.5)
    m.set_manual({"head_y": 0.4, "mouth_aaa": 0.0})
    p = m.pose(0.0)
    assert p["eye_happy_wink_left"] == pytest.approx(0.5) and p["head_y"] == pytest.approx(0.4)
    assert p["mouth_aaa"] == 0.0  # slider overrides preset
    with pytest.raises(PoseError):
        m.set_manual({"head_y": 2.0})
    with pytest.raises(PoseError):
        m.set_manual({"head_z": 0.1})
    with pytest.raises(PoseError):
        m.set_preset("ecstatic")
    assert m.pose(0.0)["head_y"] == pytest.approx(0.4)  # failed calls changed nothing


def test_idle_over_manual():
    idle = IdleMotion(IdleConfig(blink=False, sway=True, breathing=True), seed=0)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    m.set_manual({"head_y": 0.5})
    t = 0.75  # quarter period of 20 breaths/min
    expected = IdleMotion(IdleConfig(blink=False), seed=0).sample(t)
    p = m.pose(t)
    assert p["head_y"] == pytest.approx(0.5 + expected["head_y"], abs=1e-6)  # sway adds around the slider
    assert p["breathing"] == pytest.approx(expected["breathing"], abs=1e-6)


def test_tracking_overrides_then_fades_to_idle():
    idle = IdleMotion(IdleConfig(blink=False, sway=False, breathing=True), seed=0)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    src = FakeSource()
    m.add_source(src)
    m.set_manual({"head_y": 0.2})
    src.put({"head_y": -0.8, "eye_wink_left": 1.0}, 100.0)
    p = m.pose(100.5)
    assert p["head_y"] == pytest.approx(-0.8) and p["eye_wink_left"] == 1.0
    assert p["breathing"] > 0  # the tracker does not drive breathing: idle keeps it
    assert m.sources() == [("fake", {"packets_ok": 1}, True)]
    assert m.pose(101.0)["head_y"] == pytest.approx(-0.8)            # fade_after_s = 1.0
    assert m.pose(101.25)["head_y"] == pytest.approx(0.5 * -0.8 + 0.5 * 0.2)  # half way through fade_s = 0.5
    p = m.pose(101.6)
    assert p["head_y"] == pytest.approx(0.2) and p["eye_wink_left"] == 0.0  # back to manual + idle
    assert m.sources()[0][2] is False
    src.put({"head_y": 0.1}, 102.0)  # comes back
    assert m.pose(102.0)["head_y"] == pytest.approx(0.1)


def test_source_returning_none_still_fades_smoothly():
    m = PoseMixer(NO_SMOOTH)
    src = FakeSource()
    m.add_source(src)
    src.put({"mouth_aaa": 1.0}, 0.0)
    m.pose(0.0)
    src.sample = None  # the source itself says "nothing recent" early
    assert m.pose(1.25)["mouth_aaa"] == pytest.approx(0.5)


def test_later_source_wins_and_events_on_top():
    m = PoseMixer(NO_SMOOTH)
    face, mic = FakeSource("face"), FakeSource("mic")
    m.add_source(face)
    m.add_source(mic)
    face.put({"mouth_aaa": 0.1, "head_x": 0.9}, 5.0)
    mic.put({"mouth_aaa": 0.7}, 5.0)
    p = m.pose(5.0)
    assert p["mouth_aaa"] == pytest.approx(0.7) and p["head_x"] == pytest.approx(0.9)
    m.trigger("nod", 5.0)
    p = m.pose(5.2)  # nod offset -0.45 at 0.2 s (envelope 1)
    assert p["head_x"] == pytest.approx(0.9 - 0.45)
    m.trigger("laugh", 5.2)
    p = m.pose(5.5)
    assert p["mouth_aaa"] == 1.0  # 0.7 + laugh, clamped to the range
    assert set(m.active_events()) == {"nod", "laugh"}
    with pytest.raises(KeyError, match="happy_nod"):
        m.trigger("moonwalk", 5.5)
    with pytest.raises(ValueError):
        m.add_source(FakeSource("mic"))
    assert m.remove_source("mic") is mic and [s[0] for s in m.sources()] == ["face"]
    with pytest.raises(KeyError):
        m.remove_source("mic")


def test_smoothing_reduces_tracking_jitter():
    rng = np.random.default_rng(0)
    out = {}
    for enabled in (False, True):
        m = PoseMixer(MixerConfig(smoothing=SmoothingConfig(enabled=enabled)))
        src = FakeSource()
        m.add_source(src)
        ys = []
        for i in range(300):
            t = i / 60
            src.put({"head_y": float(np.clip(0.3 + rng.normal(0, 0.03), -1, 1))}, t)
            ys.append(m.pose(t)["head_y"])
        out[enabled] = np.std(ys[60:])
    assert out[True] < 0.5 * out[False]


def test_smoothing_keeps_blinks():
    m = PoseMixer()  # default smoothing
    src = FakeSource()
    m.add_source(src)
    peak = 0.0
    for i in range(60):
        t = i / 60
        closed = 1.0 if 20 <= i < 29 else 0.0  # a 0.15 s blink at 60 fps
        src.put({"eye_wink_left": closed}, t)
        peak = max(peak, m.pose(t)["eye_wink_left"])
    assert peak > 0.8


def test_calibrate_and_broken_source():
    m = PoseMixer()
    good, bad = FakeSource("good"), BrokenSource("bad")
    m.add_source(good)
    m.add_source(bad)
    assert m.calibrate() == ["good", "bad"] and good.calibrated == 1
    good.put({"head_y": 0.5}, 1.0)
    assert m.pose(1.0)["head_y"] == pytest.approx(0.5)  # the broken source does not stop rendering


def test_bad_values_from_a_source_are_ignored_or_clamped():
    m = PoseMixer(NO_SMOOTH)
    src = FakeSource()
    m.add_source(src)
    src.put({"head_y": float("nan"), "mouth_aaa": 3.0, "not_a_param": 1.0, "head_x": -7.0}, 0.0)
    p = m.pose(0.0)
    assert p["head_y"] == 0.0 and p["mouth_aaa"] == 1.0 and p["head_x"] == -1.0
