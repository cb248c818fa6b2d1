"""Event clips: registry, envelopes, overlap, errors."""
import pytest

from kyara.drive.events import EVENTS, Clip, EventPlayer, UnknownEventError
from kyara.pose import Pose, PoseError


def test_required_events_exist_and_are_valid():
    for name in ("happy_nod", "surprised", "wink", "laugh", "shy", "nod", "shake_head", "sad"):
        assert name in EVENTS
    for name, clip in EVENTS.items():
        for i in range(0, 101):
            Pose.clamped(clip.sample(clip.duration_s * i / 100))  # names valid, values finite


def test_envelope_attack_and_release():
    clip = Clip("test", 1.0, 0.2, 0.4, {"mouth_aaa": ((0.0, 1.0), (1.0, 1.0))})
    assert clip.envelope(-0.1) == 0.0 and clip.envelope(1.1) == 0.0
    assert clip.envelope(0.0) == 0.0 and clip.envelope(0.1) == pytest.approx(0.5)
    assert clip.envelope(0.2) == 1.0 and clip.envelope(0.6) == 1.0
    assert clip.envelope(0.8) == pytest.approx(0.5) and clip.envelope(1.0) == 0.0
    vals = [clip.sample(i / 100).get("mouth_aaa", 0.0) for i in range(101)]
    assert max(abs(a - b) for a, b in zip(vals, vals[1:])) < 0.08  # no pops
    with pytest.raises(ValueError):
        Clip("bad", 1.0, 0.6, 0.6, {})
    with pytest.raises(ValueError):
        Clip("bad", 1.0, 0.1, 0.1, {"mouth_bogus": ((0.0, 1.0),)})


def test_player_trigger_sample_active():
    p = EventPlayer()
    p.trigger("happy_nod", 10.0)
    assert p.active == ["happy_nod"]
    mid = p.sample(10.7)
    assert mid["eye_happy_wink_left"] == pytest.approx(1.0) and mid["head_x"] != 0.0
    assert p.sample(10.0) == {} or max(abs(v) for v in p.sample(10.0).values()) == 0.0
    p.trigger("wink", 10.7)
    both = p.sample(10.9)
    assert both["eye_wink_left"] > 0.9 and both["eye_happy_wink_left"] > 0.9
    assert set(p.active) == {"happy_nod", "wink"}
    assert p.sample(20.0) == {} and p.active == []


def test_retrigger_restarts():
    p = EventPlayer()
    p.trigger("nod", 0.0)
    p.trigger("nod", 0.5)
    assert p.sample(1.0)["head_x"] == pytest.approx(EVENTS["nod"].sample(0.5)["head_x"])


def test_unknown_event_lists_names():
    with pytest.raises(UnknownEventError) as e:
        EventPlayer().trigger("dance", 0.0)
    assert isinstance(e.value, KeyError) and isinstance(e.value, PoseError)
    assert "dance" in str(e.value) and "happy_nod" in str(e.value) and "shy" in str(e.value)


def test_latched_clip_holds_its_last_full_strength_moment():
    clip = Clip("test", 1.0, 0.2, 0.4, {"mouth_aaa": ((0.0, 0.5), (1.0, 1.0))})
    p = EventPlayer({"test": clip})
    p.trigger("test", 10.0)
    full_end = p.sample(11.5, since=10.5)["mouth_aaa"]  # the full part ended at 10.6, in (10.5, 11.5]
    assert full_end == pytest.approx(clip.sample(0.6)["mouth_aaa"]) and clip.envelope(0.6) == 1.0
    assert p.sample(11.6, since=11.5) == {} and p.active == []                     # shown: then removed
    p.trigger("test", 20.0)
    assert p.sample(20.3, since=20.1)["mouth_aaa"] == pytest.approx(clip.sample(0.3)["mouth_aaa"])  # not latched yet
    assert p.sample(21.5) == {}                                                     # no `since`: no latching
