"""kyara.pose: the parameter table against tha3-tha4-facts.md §1, validation, files, presets, sequences."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kyara import pose as P
from kyara.pose import Pose, PoseError

# tha3-tha4-facts.md §1, typed out independently of kyara.pose: (name, group, category, low, high).
U, S = (0.0, 1.0), (-1.0, 1.0)
FACTS_TABLE = [
    ("eyebrow_troubled_left", "eyebrow_troubled", "EYEBROW", U), ("eyebrow_troubled_right", "eyebrow_troubled", "EYEBROW", U),
    ("eyebrow_angry_left", "eyebrow_angry", "EYEBROW", U), ("eyebrow_angry_right", "eyebrow_angry", "EYEBROW", U),
    ("eyebrow_lowered_left", "eyebrow_lowered", "EYEBROW", U), ("eyebrow_lowered_right", "eyebrow_lowered", "EYEBROW", U),
    ("eyebrow_raised_left", "eyebrow_raised", "EYEBROW", U), ("eyebrow_raised_right", "eyebrow_raised", "EYEBROW", U),
    ("eyebrow_happy_left", "eyebrow_happy", "EYEBROW", U), ("eyebrow_happy_right", "eyebrow_happy", "EYEBROW", U),
    ("eyebrow_serious_left", "eyebrow_serious", "EYEBROW", U), ("eyebrow_serious_right", "eyebrow_serious", "EYEBROW", U),
    ("eye_wink_left", "eye_wink", "EYE", U), ("eye_wink_right", "eye_wink", "EYE", U),
    ("eye_happy_wink_left", "eye_happy_wink", "EYE", U), ("eye_happy_wink_right", "eye_happy_wink", "EYE", U),
    ("eye_surprised_left", "eye_surprised", "EYE", U), ("eye_surprised_right", "eye_surprised", "EYE", U),
    ("eye_relaxed_left", "eye_relaxed", "EYE", U), ("eye_relaxed_right", "eye_relaxed", "EYE", U),
    ("eye_unimpressed_left", "eye_unimpressed", "EYE", U), ("eye_unimpressed_right", "eye_unimpressed", "EYE", U),
    ("eye_raised_lower_eyelid_left", "eye_raised_lower_eyelid", "EYE", U),
    ("eye_raised_lower_eyelid_right", "eye_raised_lower_eyelid", "EYE", U),
    ("iris_small_left", "iris_small", "IRIS_MORPH", U), ("iris_small_right", "iris_small", "IRIS_MORPH", U),
    ("mouth_aaa", "mouth_aaa", "MOUTH", U), ("mouth_iii", "mouth_iii", "MOUTH", U), ("mouth_uuu", "mouth_uuu", "MOUTH", U),
    ("mouth_eee", "mouth_eee", "MOUTH", U), ("mouth_ooo", "mouth_ooo", "MOUTH", U), ("mouth_delta", "mouth_delta", "MOUTH", U),
    ("mouth_lowered_corner_left", "mouth_lowered_corner", "MOUTH", U),
    ("mouth_lowered_corner_right", "mouth_lowered_corner", "MOUTH", U),
    ("mouth_raised_corner_left", "mouth_raised_corner", "MOUTH", U),
    ("mouth_raised_corner_right", "mouth_raised_corner", "MOUTH", U),
    ("mouth_smirk", "mouth_smirk", "MOUTH", U),
    ("iris_rotation_x", "iris_rotation_x", "IRIS_ROTATION", S), ("iris_rotation_y", "iris_rotation_y", "IRIS_ROTATION", S),
    ("head_x", "head_x", "FACE_ROTATION", S), ("head_y", "head_y", "FACE_ROTATION", S), ("neck_z", "neck_z", "FACE_ROTATION", S),
    ("body_y", "body_y", "BODY_ROTATION", S), ("body_z", "body_z", "BODY_ROTATION", S),
    ("breathing", "breathing", "BREATHING", U),
]


# -- the table ------------------------------------------------------------------------------------
def test_table_matches_facts_exactly():
    assert len(FACTS_TABLE) == 45 == P.NUM_PARAMETERS
    got = [(p.name, p.group, p.category, (p.low, p.high)) for p in P.PARAMETERS]
    assert got == FACTS_TABLE
    assert [p.index for p in P.PARAMETERS] == list(range(45))
    assert P.NAMES == tuple(row[0] for row in FACTS_TABLE)
    assert P.CATEGORIES == ("EYEBROW", "EYE", "IRIS_MORPH", "MOUTH", "IRIS_ROTATION", "FACE_ROTATION",
                            "BODY_ROTATION", "BREATHING")
    np.testing.assert_array_equal(P.LOW, [row[3][0] for row in FACTS_TABLE])
    np.testing.assert_array_equal(P.HIGH, [row[3][1] for row in FACTS_TABLE])


def test_left_right_pairs():
    paired = {p.name: p.mirror for p in P.PARAMETERS if p.mirror}
    assert len(paired) == 2 * 15  # 15 arity-2 groups in facts §1
    for name, twin in paired.items():
        assert paired[twin] == name
        assert P.INDEX[name] + (1 if name.endswith("_left") else -1) == P.INDEX[twin]  # _left comes first
    unpaired = [p.name for p in P.PARAMETERS if p.side is None]
    assert unpaired == ["mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo", "mouth_delta", "mouth_smirk",
                        "iris_rotation_x", "iris_rotation_y", "head_x", "head_y", "neck_z", "body_y", "body_z",
                        "breathing"]


def test_network_slices():
    assert P.NAMES[P.EYEBROW] == P.NAMES[:12] and all(n.startswith("eyebrow_") for n in P.NAMES[P.EYEBROW])
    assert len(P.NAMES[P.FACE]) == 27 and P.NAMES[P.FACE][0] == "eye_wink_left" and P.NAMES[P.FACE][-1] == "iris_rotation_y"
    assert len(P.NAMES[P.FACE_ALL]) == 39
    assert P.NAMES[P.ROTATION] == ("head_x", "head_y", "neck_z", "body_y", "body_z", "breathing")


# -- construction and validation --------------------------------------------------------------------
def test_pose_defaults_and_vector():
    pose = Pose(head_y=0.5, mouth_aaa=1.0)
    assert pose.vector.shape == (45,) and pose.vector.dtype == np.float32
    assert pose.vector[P.INDEX["head_y"]] == 0.5 and pose.vector[P.INDEX["mouth_aaa"]] == 1.0
    assert np.count_nonzero(pose.vector) == 2
    assert pose["head_y"] == 0.5 and pose.as_dict(nonzero=True) == {"mouth_aaa": 1.0, "head_y": 0.5}
    with pytest.raises(ValueError):
        pose.vector[0] = 1.0  # immutable
    t = pose.tensor()
    assert t.shape == (45,) and t.dtype == torch.float32
    assert P.stack([pose, Pose()]).shape == (2, 45)


def test_unknown_parameter_suggests():
    with pytest.raises(PoseError, match=r"unknown pose parameter 'head_yy'.*head_y"):
        Pose(head_yy=0.1)
    with pytest.raises(PoseError, match=r"--list-parameters"):
        Pose(zzzzzz=0.1)


@pytest.mark.parametrize("name,value,rng", [("head_y", 1.5, r"\[-1, 1\]"), ("mouth_aaa", -0.2, r"\[0, 1\]"),
                                            ("breathing", float("nan"), r"\[0, 1\]"), ("neck_z", -1.01, r"\[-1, 1\]")])
def test_out_of_range_names_parameter_and_range(name, value, rng):
    with pytest.raises(PoseError, match=rf"'{name}'.*outside its range {rng}"):
        Pose(**{name: value})


def test_non_number_names_parameter():
    with pytest.raises(PoseError, match=r"'head_x': expected a number in \[-1, 1\], got 'abc'"):
        Pose.from_dict({"head_x": "abc"})


def test_boundaries_accepted():
    pose = Pose(head_x=-1.0, head_y=1.0, mouth_aaa=0.0, breathing=1.0)
    assert pose["head_x"] == -1.0 and pose["breathing"] == 1.0


def test_from_dict_rejects_non_mapping():
    with pytest.raises(PoseError, match="mapping"):
        Pose.from_dict([("head_y", 0.1)])


def test_from_vector_round_trip_and_errors():
    v = np.linspace(0, 1, 45, dtype=np.float32)
    assert np.array_equal(Pose.from_vector(v).vector, v)
    with pytest.raises(PoseError, match="45 values"):
        Pose.from_vector(np.zeros(44))
    bad = np.zeros(45, np.float32)
    bad[P.INDEX["breathing"]] = 2.0
    with pytest.raises(PoseError, match="breathing"):
        Pose.from_vector(bad)


def test_clamped_and_add():
    pose = Pose.clamped({"head_y": 3.0, "mouth_aaa": -1.0, "breathing": float("nan")})
    assert pose["head_y"] == 1.0 and pose["mouth_aaa"] == 0.0 and pose["breathing"] == 0.0
    summed = Pose(head_y=0.8, mouth_aaa=0.5) + Pose(head_y=0.5, mouth_aaa=0.2)
    assert summed["head_y"] == 1.0 and summed["mouth_aaa"] == pytest.approx(0.7)


def test_equality_hash_replace_repr():
    a = Pose(head_y=0.25)
    assert a == Pose.from_dict({"head_y": 0.25}) and hash(a) == hash(Pose(head_y=0.25))
    b = a.replace(mouth_aaa=1.0)
    assert b["head_y"] == 0.25 and b["mouth_aaa"] == 1.0 and a["mouth_aaa"] == 0.0
    assert repr(b) == "Pose(mouth_aaa=1, head_y=0.25)"
    assert dict(b)["mouth_aaa"] == 1.0


# -- presets ------------------------------------------------------------------------------------------
def test_presets_valid_and_documented():
    assert "neutral" in P.PRESETS and Pose.preset("neutral") == Pose()
    for name, preset in P.PRESETS.items():
        assert preset.description.strip(), name
        pose = Pose.preset(name)
        for k, v in preset.values.items():
            assert pose[k] == pytest.approx(v)
        if name != "neutral":
            assert preset.values, name


def test_preset_intensity_scales():
    full, half = Pose.preset("happy", 1.0), Pose.preset("happy", 0.5)
    np.testing.assert_allclose(half.vector, full.vector * 0.5, rtol=1e-6)
    assert Pose.preset("happy", 0.0) == Pose()


def test_preset_errors():
    with pytest.raises(PoseError, match=r"unknown preset 'hapy'.*happy"):
        Pose.preset("hapy")
    with pytest.raises(PoseError, match=r"intensity must be in \[0, 1\]"):
        Pose.preset("happy", 1.5)


# -- files ----------------------------------------------------------------------------------------------
def test_from_file_json_and_yaml(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"head_y": 0.5, "eye_wink_left": 1}))
    (tmp_path / "p.yaml").write_text("head_y: 0.5\neye_wink_left: 1\n")
    a, b = Pose.from_file(tmp_path / "p.json"), Pose.from_file(tmp_path / "p.yaml")
    assert a == b == Pose(head_y=0.5, eye_wink_left=1.0)


def test_from_file_errors_name_the_file(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"head_y": 0.5,')
    with pytest.raises(PoseError, match=r"bad\.json: not valid JSON"):
        Pose.from_file(bad_json)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("head_y: [0.5\n")
    with pytest.raises(PoseError, match=r"bad\.yaml: not valid YAML"):
        Pose.from_file(bad_yaml)
    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps([{"head_y": 0.1}, {"head_y": 0.2}]))
    with pytest.raises(PoseError, match=r"seq\.json: holds a list of 2 poses"):
        Pose.from_file(seq)
    rng = tmp_path / "range.json"
    rng.write_text(json.dumps({"head_y": 2}))
    with pytest.raises(PoseError, match=r"range\.json: .*'head_y' = 2 is outside its range \[-1, 1\]"):
        Pose.from_file(rng)
    with pytest.raises(PoseError, match="pose file not found"):
        Pose.from_file(tmp_path / "missing.json")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(PoseError, match=r"scalar\.yaml: expected a mapping"):
        Pose.from_file(scalar)


def test_binary_pose_file_is_a_pose_error(tmp_path):
    f = tmp_path / "binary.json"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PoseError, match=r"binary\.json"):
        P.load_pose_sequence(f)


def test_save_pose_round_trip(tmp_path):
    pose = Pose(head_y=-0.25, mouth_ooo=0.5)
    P.save_pose(pose, tmp_path / "out.json")
    assert Pose.from_file(tmp_path / "out.json") == pose


# -- sequences -----------------------------------------------------------------------------------------
def test_sequence_list_presets_and_wrapped(tmp_path):
    f = tmp_path / "seq.yaml"
    f.write_text("- {head_y: 0.1}\n- {preset: happy, intensity: 0.5, head_y: -0.2}\n- {}\n")
    poses = P.load_pose_sequence(f)
    assert len(poses) == 3
    assert poses[0] == Pose(head_y=0.1)
    assert poses[1] == Pose.preset("happy", 0.5).replace(head_y=-0.2)
    assert poses[2] == Pose()
    g = tmp_path / "wrapped.json"
    g.write_text(json.dumps({"poses": [{"mouth_aaa": 1}]}))
    assert P.load_pose_sequence(g) == [Pose(mouth_aaa=1.0)]
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"mouth_aaa": 1}))
    assert P.load_pose_sequence(single) == [Pose(mouth_aaa=1.0)]


def test_sequence_errors_name_item(tmp_path):
    f = tmp_path / "seq.json"
    f.write_text(json.dumps([{"head_y": 0.1}, {"head_y": 5}]))
    with pytest.raises(PoseError, match=r"seq\.json: pose #1: .*'head_y'.*\[-1, 1\]"):
        P.load_pose_sequence(f)
    g = tmp_path / "notmap.json"
    g.write_text(json.dumps([{"head_y": 0.1}, 3]))
    with pytest.raises(PoseError, match=r"notmap\.json: pose #1: expected a mapping"):
        P.load_pose_sequence(g)
    h = tmp_path / "empty.json"
    h.write_text("[]")
    with pytest.raises(PoseError, match="empty"):
        P.load_pose_sequence(h)
    i = tmp_path / "intensity.json"
    i.write_text(json.dumps([{"preset": "happy", "intensity": "lots"}]))
    with pytest.raises(PoseError, match=r"intensity\.json: pose #0: .*intensity"):
        P.load_pose_sequence(i)
    j = tmp_path / "badpreset.json"
    j.write_text(json.dumps([{"preset": "nope"}]))
    with pytest.raises(PoseError, match=r"pose #0: unknown preset 'nope'"):
        P.load_pose_sequence(j)


# -- interpolation and mirroring --------------------------------------------------------------------------
def test_lerp():
    a, b = Pose(head_y=-1.0, mouth_aaa=0.0), Pose(head_y=1.0, mouth_aaa=1.0)
    assert P.lerp(a, b, 0.0) == a and P.lerp(a, b, 1.0) == b
    mid = P.lerp(a, b, 0.25)
    assert mid["head_y"] == pytest.approx(-0.5) and mid["mouth_aaa"] == pytest.approx(0.25)
    with pytest.raises(PoseError, match=r"t must be in \[0, 1\]"):
        P.lerp(a, b, 1.5)


def test_interpolate():
    keys = [Pose(head_y=0.0), Pose(head_y=1.0), Pose(head_y=0.0)]
    path = P.interpolate(keys, 5)
    assert [p["head_y"] for p in path] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert P.interpolate([Pose(head_y=0.3)], 3) == [Pose(head_y=0.3)] * 3
    assert P.interpolate(keys, 1) == [keys[0]]
    with pytest.raises(PoseError):
        P.interpolate([], 3)
    with pytest.raises(PoseError):
        P.interpolate(keys, 0)


def test_mirrored():
    pose = Pose(eye_wink_left=1.0, mouth_raised_corner_right=0.3, head_x=0.4, head_y=0.5, neck_z=-0.2,
                body_y=0.1, body_z=0.2, iris_rotation_x=0.3, iris_rotation_y=-0.6, mouth_aaa=0.7)
    m = pose.mirrored()
    assert m["eye_wink_right"] == 1.0 and m["eye_wink_left"] == 0.0
    assert m["mouth_raised_corner_left"] == pytest.approx(0.3) and m["mouth_raised_corner_right"] == 0.0
    assert m["head_x"] == pytest.approx(0.4) and m["iris_rotation_x"] == pytest.approx(0.3)  # pitch kept
    for n in ("head_y", "neck_z", "body_y", "body_z", "iris_rotation_y"):  # yaw/roll negated
        assert m[n] == pytest.approx(-pose[n]), n
    assert m["mouth_aaa"] == pytest.approx(0.7)
    assert m.mirrored() == pose
    assert Pose.preset("wink").mirrored()["eye_wink_right"] == 1.0
