"""Browser weights (.kyw): layout, round trip and the loader's refusals (kyara.web.weights)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.web.weights import (FORMAT_VERSION, MAGIC, MAX_FILE_BYTES, WebWeightsError, parse_web_bytes,
                               student_tensors, student_to_web_bytes)


@pytest.fixture(scope="module")
def character():
    return load_character(SAMPLE_CHARACTER)


@pytest.fixture(scope="module")
def blob(character):
    return student_to_web_bytes(character)


def test_layout_header_and_alignment(blob):
    magic, version, header_len, data_len = struct.unpack_from("<4sIII", blob)
    assert magic == MAGIC == b"KYW\0" and version == FORMAT_VERSION == 1
    assert len(blob) == 16 + header_len + data_len
    assert (16 + header_len) % 16 == 0
    header = json.loads(blob[16:16 + header_len])
    assert header["format"] == "kyara-web-student" and header["omega_0"] == 30
    assert header["face_box"] == {"top": 80, "left": 192, "height": 128, "width": 128}
    for name, spec in header["tensors"].items():
        assert spec["offset"] % 16 == 0, name
    assert header["tensors"]["character_image"] == {**header["tensors"]["character_image"], "dtype": "uint8",
                                                    "shape": [512, 512, 4]}
    assert header["tensors"]["body_region"]["shape"] == [32768]


def test_round_trip_float32_exact_float16_rounded(character, blob):
    ref = student_tensors(character)
    w32 = parse_web_bytes(student_to_web_bytes(character, "float32"))
    w16 = parse_web_bytes(blob)
    assert set(ref) <= set(w16.tensors)
    for name, value in ref.items():
        np.testing.assert_array_equal(w32.tensors[name], value)
        np.testing.assert_array_equal(w16.tensors[name], value.astype(np.float16).astype(np.float32))
    assert w16.tensors["body_morpher.siren_layers.0.1.linear.weight"].shape == (360, 360)
    region = np.unpackbits(w16.tensors["body_region"]).reshape(512, 512).astype(bool)
    np.testing.assert_array_equal(region, character.poser.region.numpy())
    assert len(blob) < 0.75 * len(student_to_web_bytes(character, "float32"))


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"PNG\0" + b[4:], "bad magic|magic"),
    (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "version 2 is not supported"),
    (lambda b: b[:-100], "sizes disagree"),
    (lambda b: b + b"\0" * 16, "sizes disagree"),
    (lambda b: b[:10], "too short|sizes"),
    (lambda b: b[:16] + b"#" + b[17:], "not JSON"),
])
def test_refuses_corrupted_files(blob, corrupt, message):
    with pytest.raises(WebWeightsError, match=message):
        parse_web_bytes(corrupt(blob))


def test_refuses_oversized_file_and_bad_tensor_offsets(blob):
    with pytest.raises(WebWeightsError, match="more than"):
        parse_web_bytes(blob + b"\0" * (MAX_FILE_BYTES + 1 - len(blob)))
    _, _, header_len, data_len = struct.unpack_from("<4sIII", blob)
    header = json.loads(blob[16:16 + header_len])
    header["tensors"]["body_morpher.last_linear.bias"]["offset"] = data_len   # past the end
    text = json.dumps(header).encode()
    text += b" " * (-(16 + len(text)) % 16)
    bad = struct.pack("<4sIII", MAGIC, 1, len(text), data_len) + text + blob[16 + header_len:]
    with pytest.raises(WebWeightsError, match="last_linear.bias"):
        parse_web_bytes(bad)


def test_teacher_character_is_refused():
    class NotStudent:
        is_student = False
        name = "x"
    with pytest.raises(WebWeightsError, match="student"):
        student_to_web_bytes(NotStudent())


def test_lite_plan_is_stored_and_optional(character, blob):
    """The lite student's face plan travels in the weights (kyara.student.lite): its movable-pixel mask
    and constant face, exactly (float32) or rounded like the weights (float16); lite=False leaves it out."""
    from kyara.web.weights import lite_student

    lite = lite_student(character.poser)
    plan = lite.face_plan()
    parsed = parse_web_bytes(blob)
    sizes = [level.size for level in lite.coarse(lite.body_pixels()).pixels.levels]
    assert parsed.header["lite"] == {"body_grid": lite.body_grid, "body_sizes": sizes}
    mask = np.unpackbits(parsed.tensors["lite_face_mask"]).astype(bool)
    np.testing.assert_array_equal(np.flatnonzero(mask), plan.pixels.output.index.numpy())
    assert 0.05 < mask.mean() < 0.9                      # some of the face moves, not all of it
    constant = plan.constant.numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(parsed.tensors["lite_face_constant"], constant.astype(np.float16).astype(np.float32))
    w32 = parse_web_bytes(student_to_web_bytes(character, "float32"))
    np.testing.assert_array_equal(w32.tensors["lite_face_constant"], constant)
    bare = parse_web_bytes(student_to_web_bytes(character, lite=False))
    assert "lite" not in bare.header and not any(k.startswith("lite_") for k in bare.tensors)
