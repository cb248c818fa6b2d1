"""ARKit → THA3 mapping: sides, angle scales/signs (facts §1), smile gating, mouth, calibration."""
import math
import random

import pytest

from kyara.drive.arkit import (ARKIT_BLENDSHAPES, ArkitFrame, ArkitMapping, Calibration, arkit_to_pose_values,
                               calibrate)
from kyara.pose import INDEX, PARAMETERS, Pose


def values(shapes=None, pitch=0.0, yaw=0.0, roll=0.0, mapping=ArkitMapping(), calibration=None, direct=None):
    frame = ArkitFrame(shapes or {}, pitch, yaw, roll, direct=direct or {})
    return arkit_to_pose_values(frame, mapping, calibration)


def test_52_unique_names():
    assert len(ARKIT_BLENDSHAPES) == 52 == len(set(ARKIT_BLENDSHAPES))
    assert "eyeBlinkLeft" in ARKIT_BLENDSHAPES and "tongueOut" in ARKIT_BLENDSHAPES


def test_blink_side_follows_official_converter():
    # ARKit Left = the tracked person's own left → THA3 *_left, unchanged (official THA3 converter).
    v = values({"eyeBlinkLeft": 1.0})
    assert v["eye_wink_left"] == 1.0 and v["eye_wink_right"] == 0.0
    v = values({"eyeBlinkRight": 0.4})  # 0.4 / 0.8 = half closed
    assert v["eye_wink_right"] == pytest.approx(0.5) and v["eye_wink_left"] == 0.0


def test_mirror_option_swaps_sides_and_negates_yaw():
    v = values({"eyeBlinkLeft": 1.0}, yaw=5.0, roll=7.5, mapping=ArkitMapping(mirror=True))
    assert v["eye_wink_right"] == 1.0 and v["eye_wink_left"] == 0.0
    assert v["head_y"] == pytest.approx(0.5) and v["neck_z"] == pytest.approx(-0.5)


@pytest.mark.parametrize("yaw,expected", [(10.0, -1.0), (-10.0, 1.0), (5.0, -0.5), (30.0, -1.0), (-45.0, 1.0)])
def test_head_yaw_scale_and_sign(yaw, expected):
    v = values(yaw=yaw)
    assert v["head_y"] == pytest.approx(expected)
    assert v["body_y"] == pytest.approx(expected)  # body follows head, like the official converter


def test_pitch_and_roll_scales():
    v = values(pitch=15.0, roll=15.0)
    assert v["head_x"] == pytest.approx(-1.0) and v["neck_z"] == pytest.approx(1.0) and v["body_z"] == pytest.approx(1.0)
    v = values(pitch=-7.5, roll=-30.0)
    assert v["head_x"] == pytest.approx(0.5) and v["neck_z"] == pytest.approx(-1.0)
    v = values(yaw=10.0, mapping=ArkitMapping(yaw_full_scale_deg=20.0, body_follow=0.5))
    assert v["head_y"] == pytest.approx(-0.5) and v["body_y"] == pytest.approx(-0.25)


def test_smile_turns_blink_into_happy_wink():
    v = values({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8})
    assert v["eye_happy_wink_left"] == 1.0 and v["eye_wink_left"] == 0.0
    assert v["eyebrow_happy_left"] > 0.7 and v["mouth_raised_corner_right"] == pytest.approx(0.8)
    half = values({"eyeBlinkLeft": 1.0, "mouthSmileLeft": 0.5, "mouthSmileRight": 0.5})  # halfway 0.4..0.6
    assert half["eye_happy_wink_left"] == pytest.approx(0.5) and half["eye_wink_left"] == pytest.approx(0.5)


def test_brow_modes_and_wink_mode():
    v = values({"browDownLeft": 0.4})
    assert v["eyebrow_angry_left"] == 1.0 and "eyebrow_troubled_left" not in v
    v = values({"browDownRight": 0.2}, mapping=ArkitMapping(eyebrow_down_mode="troubled"))
    assert v["eyebrow_troubled_right"] == pytest.approx(0.5) and "eyebrow_angry_right" not in v
    v = values({"browInnerUp": 0.5, "browOuterUpLeft": 0.3})
    assert v["eyebrow_raised_left"] == pytest.approx(0.8) and v["eyebrow_raised_right"] == pytest.approx(0.5)
    v = values({"eyeBlinkLeft": 0.8}, mapping=ArkitMapping(wink_mode="relaxed"))
    assert v["eye_relaxed_left"] == 1.0 and "eye_wink_left" not in v
    with pytest.raises(ValueError, match="eyebrow_down_mode"):
        ArkitMapping(eyebrow_down_mode="sleepy")


def test_mouth_open_and_closed():
    v = values({"jawOpen": 0.6, "mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5})
    assert v["mouth_aaa"] > 0.9
    v = values({"jawOpen": 0.3, "mouthFunnel": 0.6, "mouthPucker": 0.5, "mouthLowerDownLeft": 0.2})
    assert v["mouth_ooo"] > 0.5 and v["mouth_uuu"] == 0.0  # funnel above 0.5 → all "o"
    v = values({"jawOpen": 0.05, "mouthFrownLeft": 0.3, "mouthFrownRight": 0.3})
    assert v["mouth_aaa"] == 0.0 and v["mouth_lowered_corner_left"] == pytest.approx(1.0)


def test_iris_rotation_signs():
    v = values({"eyeLookUpLeft": 0.75, "eyeLookUpRight": 0.75})
    assert v["iris_rotation_x"] == pytest.approx(1.0)
    v = values({"eyeLookInLeft": 0.375, "eyeLookOutRight": 0.375})  # both eyes look to the person's right
    assert v["iris_rotation_y"] == pytest.approx(0.5)


def test_random_frames_stay_in_range_and_make_valid_poses():
    rng = random.Random(1)
    nasty = [math.nan, math.inf, -math.inf, 1e300, -5.0, 2.0]
    for _ in range(500):
        shapes = {n: (rng.random() if rng.random() < 0.9 else rng.choice(nasty)) for n in ARKIT_BLENDSHAPES
                  if rng.random() < 0.7}
        shapes["notAShape"] = 3.0
        angles = [rng.uniform(-400, 400) if rng.random() < 0.9 else rng.choice(nasty) for _ in range(3)]
        v = values(shapes, *angles, mapping=ArkitMapping(mirror=rng.random() < 0.5, iris_small=0.3))
        for name, x in v.items():
            p = PARAMETERS[INDEX[name]]
            assert math.isfinite(x) and p.low <= x <= p.high, (name, x)
        Pose.from_dict(v)
    assert "breathing" not in v and "mouth_eee" not in v and "eye_unimpressed_left" not in v


def test_direct_values_combine_by_max():
    v = values({"jawOpen": 0.2}, direct={"mouth_aaa": 1.0, "eye_happy_wink_left": 0.7, "bogus": 1.0})
    assert v["mouth_aaa"] == 1.0 and v["eye_happy_wink_left"] == pytest.approx(0.7) and "bogus" not in v


def test_calibration_subtracts_neutral_pose():
    neutral = ArkitFrame({"browInnerUp": 0.2, "mouthShrugUpper": 0.26, "eyeBlinkLeft": 0.9},
                         head_pitch_deg=-21.5, head_yaw_deg=4.0, head_roll_deg=-6.6)
    cal = calibrate(neutral)
    assert isinstance(cal, Calibration)
    assert cal.blendshape_offsets["eyeBlinkLeft"] == pytest.approx(0.3)  # capped: mid-blink calibration
    v = arkit_to_pose_values(neutral, calibration=cal)
    assert v["head_x"] == pytest.approx(0.0, abs=1e-9) and v["head_y"] == pytest.approx(0.0, abs=1e-9)
    assert v["eyebrow_raised_left"] == pytest.approx(0.0)
    uncalibrated = arkit_to_pose_values(neutral)
    assert uncalibrated["head_x"] == pytest.approx(1.0)  # -21.5° pitch saturates without calibration
    turned = ArkitFrame({"eyeBlinkLeft": 1.0}, head_pitch_deg=-21.5, head_yaw_deg=14.0, head_roll_deg=-6.6)
    v = arkit_to_pose_values(turned, calibration=cal)
    assert v["head_y"] == pytest.approx(-1.0) and v["eye_wink_left"] == pytest.approx(1.0)  # still reachable
    # Angles wrap: 179° neutral, -179° now = 2° turn.
    cal2 = calibrate(ArkitFrame({}, head_yaw_deg=179.0))
    assert arkit_to_pose_values(ArkitFrame({}, head_yaw_deg=-179.0), calibration=cal2)["head_y"] == pytest.approx(-0.2)


def test_importing_kyara_drive_is_light_and_passive():
    import subprocess
    import sys

    code = ("import sys, threading, kyara.drive; "
            "assert 'torch' not in sys.modules and 'pythonosc' not in sys.modules, 'heavy import'; "
            "assert threading.active_count() == 1, 'thread started at import'")
    subprocess.run([sys.executable, "-c", code], check=True)
