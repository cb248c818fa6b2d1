"""PoseMixer: manual < idle < tracking (with fade) < events; smoothing; clamping; robustness; latching."""
import numpy as np
import pytest

from kyara.drive.events import EVENTS
from kyara.drive.idle import IdleConfig, IdleMotion
from kyara.drive.mixer import MixerConfig, PoseMixer, SmoothingConfig
from kyara.drive.source import PoseSource, SourceSample
from kyara.pose import HIGH, INDEX, LOW, NUM_PARAMETERS, Pose, PoseError

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
        self.sample = SourceSample.from_dict(values, t)

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
    assert m.mix(0.0) == Pose()
    m.set_preset("happy", 0.5)
    m.set_manual({"head_y": 0.4, "mouth_aaa": 0.0})
    p = m.mix(0.0)
    assert p["eye_happy_wink_left"] == pytest.approx(0.5) and p["head_y"] == pytest.approx(0.4)
    assert p["mouth_aaa"] == 0.0  # slider overrides preset
    with pytest.raises(PoseError):
        m.set_manual({"head_y": 2.0})
    with pytest.raises(PoseError):
        m.set_manual({"head_z": 0.1})
    with pytest.raises(PoseError):
        m.set_preset("ecstatic")
    assert m.mix(0.0)["head_y"] == pytest.approx(0.4)  # failed calls changed nothing
    m.set_manual({"mouth_aaa": 0.5})  # merged into the earlier sliders, not replacing them
    assert m.manual == {"head_y": pytest.approx(0.4), "mouth_aaa": 0.5}
    assert m.mix(0.0)["head_y"] == pytest.approx(0.4)
    m.reset_manual()
    assert m.manual == {} and m.mix(0.0)["mouth_aaa"] == pytest.approx(0.2)  # the preset shows again


def test_idle_over_manual():
    idle = IdleMotion(IdleConfig(blink=False, sway=True, breathing=True), seed=0)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    m.set_manual({"head_y": 0.5})
    t = 0.75  # quarter period of 20 breaths/min
    expected = IdleMotion(IdleConfig(blink=False), seed=0).sample(t)
    p = m.mix(t)
    assert p["head_y"] == pytest.approx(0.5 + expected["head_y"], abs=1e-6)  # sway adds around the slider
    assert p["breathing"] == pytest.approx(expected["breathing"], abs=1e-6)


def test_tracking_overrides_then_fades_to_idle():
    idle = IdleMotion(IdleConfig(blink=False, sway=False, breathing=True), seed=0)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    src = FakeSource()
    m.add_source(src)
    m.set_manual({"head_y": 0.2})
    src.put({"head_y": -0.8, "eye_wink_left": 1.0}, 100.0)
    p = m.mix(100.5)
    assert p["head_y"] == pytest.approx(-0.8) and p["eye_wink_left"] == 1.0
    assert p["breathing"] > 0  # the tracker does not drive breathing: idle keeps it
    assert m.sources() == [("fake", {"packets_ok": 1}, True)]
    assert m.mix(101.0)["head_y"] == pytest.approx(-0.8)            # fade_after_s = 1.0
    assert m.mix(101.25)["head_y"] == pytest.approx(0.5 * -0.8 + 0.5 * 0.2)  # half way through fade_s = 0.5
    p = m.mix(101.6)
    assert p["head_y"] == pytest.approx(0.2) and p["eye_wink_left"] == 0.0  # back to manual + idle
    assert m.sources()[0][2] is False
    src.put({"head_y": 0.1}, 102.0)  # comes back
    assert m.mix(102.0)["head_y"] == pytest.approx(0.1)


def test_source_returning_none_still_fades_smoothly():
    m = PoseMixer(NO_SMOOTH)
    src = FakeSource()
    m.add_source(src)
    src.put({"mouth_aaa": 1.0}, 0.0)
    m.mix(0.0)
    src.sample = None  # the source itself says "nothing recent" early
    assert m.mix(1.25)["mouth_aaa"] == pytest.approx(0.5)


def test_later_source_wins_and_events_on_top():
    m = PoseMixer(NO_SMOOTH)
    face, mic = FakeSource("face"), FakeSource("mic")
    m.add_source(face)
    m.add_source(mic)
    face.put({"mouth_aaa": 0.1, "head_x": 0.9}, 5.0)
    mic.put({"mouth_aaa": 0.7}, 5.0)
    p = m.mix(5.0)
    assert p["mouth_aaa"] == pytest.approx(0.7) and p["head_x"] == pytest.approx(0.9)
    m.trigger("nod", 5.0)
    p = m.mix(5.2)  # nod offset -0.45 at 0.2 s (envelope 1)
    assert p["head_x"] == pytest.approx(0.9 - 0.45)
    m.trigger("laugh", 5.2)
    p = m.mix(5.5)
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
            ys.append(m.mix(t)["head_y"])
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
        peak = max(peak, m.mix(t)["eye_wink_left"])
    assert peak > 0.8


def test_calibrate_and_broken_source():
    m = PoseMixer()
    good, bad = FakeSource("good"), BrokenSource("bad")
    m.add_source(good)
    m.add_source(bad)
    assert m.calibrate() == ["good", "bad"] and good.calibrated == 1  # list[str], as PoseMixerLike says
    good.put({"head_y": 0.5}, 1.0)
    assert m.mix(1.0)["head_y"] == pytest.approx(0.5)  # the broken source does not stop rendering


def test_bad_values_from_a_source_are_ignored_or_clamped():
    m = PoseMixer(NO_SMOOTH)
    src = FakeSource()
    m.add_source(src)
    m.set_manual({"head_y": 0.3})
    src.put({"head_y": float("nan"), "mouth_aaa": 3.0, "head_x": -7.0, "breathing": float("inf")}, 0.0)
    p = m.mix(0.0)
    # non-finite values are not driven (the slider keeps head_y); out-of-range ones are clamped
    assert p["head_y"] == pytest.approx(0.3) and p["mouth_aaa"] == 1.0 and p["head_x"] == -1.0
    assert p["breathing"] == 0.0
    with pytest.raises(PoseError, match="not_a_param"):
        SourceSample.from_dict({"not_a_param": 1.0}, 0.0)
    src.sample = SourceSample(np.zeros(3), np.ones(3, bool), 1.0)  # wrong shape: skipped, never fatal
    assert m.mix(1.0)["mouth_aaa"] == 1.0


def test_sample_is_a_vector_and_mask():
    sample = SourceSample.from_dict({"head_y": -0.5, "mouth_aaa": 0.25}, 3.0)
    assert sample.values.shape == (NUM_PARAMETERS,) and sample.mask.dtype == bool
    assert np.flatnonzero(sample.mask).tolist() == sorted([INDEX["head_y"], INDEX["mouth_aaa"]])
    assert sample.as_dict() == {"mouth_aaa": 0.25, "head_y": -0.5} and sample.timestamp == 3.0


def test_clamped_vector_matches_the_per_name_rule():
    rng = np.random.default_rng(0)
    vec = rng.uniform(-3, 3, NUM_PARAMETERS)
    vec[[0, 5, 44]] = [np.nan, np.inf, -np.inf]
    pose = Pose.clamped(vec)
    expected = np.where(np.isfinite(vec), np.clip(vec, LOW, HIGH), LOW).astype(np.float32)
    assert np.array_equal(pose.vector, expected)
    assert Pose.clamped({"head_y": 3.0, "breathing": float("nan")}) == Pose(head_y=1.0)
    with pytest.raises(PoseError, match="45 values"):
        Pose.clamped(np.zeros(44))


def test_source_inputs_reach_the_mixer_hook():
    m = PoseMixer(NO_SMOOTH)
    src = FakeSource("face")
    m.add_source(src)
    src._input_arrived(1.0)  # nobody listening: nothing happens
    heard = []
    m.on_input = lambda when, name: heard.append((when, name))
    src._input_arrived(2.5)
    assert heard == [(2.5, "face")]
    m.remove_source("face")
    src._input_arrived(3.0)
    assert heard == [(2.5, "face")] and src.on_input is None


def test_idle_blinks_are_latched_at_low_frame_rates():
    # Issue 12.10: a 0.15 s blink falls between frames at 2 frames/s. Each mix shows the most closed
    # state since the previous one (or since `since`), so every blink closes the eyes fully once.
    idle = IdleMotion(IdleConfig(sway=False, breathing=False, double_blink_probability=0.0), seed=4)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    frames, blinks = [], set()
    for t in np.arange(100.0, 140.0, 0.5):
        frames.append((t, m.mix(t)["eye_wink_left"]))
        blinks.update(idle.blink_times(t))  # old blinks are forgotten as time passes: collect them
    blinks = sorted(b for b in blinks if b + 0.075 <= 139.5)
    assert len(blinks) >= 6
    closed = [t for t, v in frames if v == 1.0]
    # exactly the frame after each blink's middle is closed; a partly closed frame is a neighbour of
    # it (a blink straddling a frame time), so a blink never lasts longer than before
    assert closed == [100.0 + 0.5 * np.ceil((b + 0.075 - 100.0) / 0.5) for b in blinks]
    assert all(min(abs(t - c) for c in closed) == 0.5 for t, v in frames if 0.0 < v < 1.0)


def test_event_between_two_slow_frames_shows_at_full_strength():
    m = PoseMixer(NO_SMOOTH)
    m.mix(10.0)
    m.trigger("wink", 10.05)  # 0.8 s clip, entirely between two frames 1 s apart
    p = m.mix(11.0)
    wink = EVENTS["wink"]
    assert p["eye_wink_left"] == 1.0  # held at the end of its full-strength part (before the release)
    assert p["neck_z"] == pytest.approx(wink.sample(wink.duration_s - wink.release_s)["neck_z"])
    assert m.mix(12.0) == Pose()  # shown once: then gone
    # an explicit `since` (the last frame actually shown) latches over the longer window
    m.trigger("wink", 20.0)
    m.mix(20.1)
    assert m.mix(21.0, since=20.1)["eye_wink_left"] == 1.0
    assert m.mix(21.0, since=21.0)["eye_wink_left"] == 0.0


def test_idle_parts_switch_in_the_mixer():
    idle = IdleMotion(IdleConfig(sway=False), seed=0)
    m = PoseMixer(NO_SMOOTH, idle=idle)
    assert m.idle_state() == {"blink": True, "breathing": True, "sway": False}
    assert m.set_idle({"breathing": False, "sway": True}) == {"blink": True, "breathing": False, "sway": True}
    assert m.mix(0.75)["breathing"] == 0.0 and idle.config.sway
    with pytest.raises(KeyError, match="wobble"):
        m.set_idle({"wobble": True})
    with pytest.raises(LookupError):
        PoseMixer().set_idle({"blink": False})
    assert PoseMixer().idle_state() is None
