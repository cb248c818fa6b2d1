"""kyara.character.load: the one loader every command uses — a .kyara file or THA4 directory gives its
student, an image gives a teacher-backed character (a recording fake teacher here), bad inputs fail fast."""
from __future__ import annotations

import pytest
import torch

import kyara.teacher
from kyara import store
from kyara.character import (SAMPLE_CHARACTER, SAMPLE_IMAGE, export_tha4_directory, is_student_path, load,
                             random_character)
from kyara.errors import CharacterFileError, KyaraError, WeightsError
from kyara.image import ImageError
from kyara.student import Student


@pytest.fixture
def fake_teacher(monkeypatch, tmp_path):
    """tha3/separable_float replaced by a loader that records its arguments; a weights dir with the five names."""
    calls = []

    def loader(weights_dir=None, device="cpu", dtype=None):
        calls.append({"weights_dir": weights_dir, "device": device, "dtype": dtype})
        return object()

    monkeypatch.setitem(kyara.teacher.TEACHERS, "tha3/separable_float", loader)
    weights = tmp_path / "w"
    weights.mkdir()
    for name in store.FILE_NAMES:
        (weights / name).write_bytes(b"x")
    return calls, weights


def test_student_paths_are_kyara_files_and_tha4_directories(tmp_path):
    assert is_student_path("a.kyara") and is_student_path("A.SAFETENSORS") and is_student_path("m/character_model.yaml")
    assert is_student_path(tmp_path) and not is_student_path("me.png") and not is_student_path("me.webp")


def test_kyara_file_and_tha4_directory_load_their_student(tmp_path):
    character = load(SAMPLE_CHARACTER)
    assert isinstance(character.poser, Student) and character.image.shape == (4, 512, 512)
    out = export_tha4_directory(random_character(seed=1), tmp_path / "tha4", allow_straight=True)
    for path in (out, out / "character_model.yaml"):
        loaded = load(path, device="cpu")
        assert isinstance(loaded.poser, Student) and loaded.teacher_name == "tha4-directory"


def test_image_loads_with_the_named_teacher_and_checked_weights(fake_teacher):
    calls, weights = fake_teacher
    character = load(SAMPLE_IMAGE, weights_dir=weights)
    assert character.name == SAMPLE_IMAGE.stem and character.teacher_name == "tha3/separable_float"
    assert character.image.shape == (4, 512, 512)
    assert calls == [{"weights_dir": weights, "device": "cpu", "dtype": None}]


def test_bad_inputs_fail_before_any_network_is_built(fake_teacher, tmp_path):
    calls, weights = fake_teacher
    with pytest.raises(CharacterFileError, match="gone.kyara: character file not found"):
        load(tmp_path / "gone.kyara")
    with pytest.raises(ImageError, match="nope.png: file not found"):
        load(tmp_path / "nope.png", weights_dir=weights)
    with pytest.raises(KyaraError, match="unknown teacher 'tha3/separable_flaot'.*Did you mean tha3/separable_float"):
        load(SAMPLE_IMAGE, teacher="tha3/separable_flaot")
    (weights / "editor.pt").unlink()
    with pytest.raises(WeightsError, match="missing THA3 separable_float weight file"):
        load(SAMPLE_IMAGE, weights_dir=weights)
    with pytest.raises(KyaraError, match="float16 needs a CUDA GPU"):
        load(SAMPLE_CHARACTER, dtype="float16")
    assert calls == []


def test_a_half_teacher_computes_in_float32_on_the_cpu(monkeypatch, fake_teacher):
    calls, weights = fake_teacher
    monkeypatch.setitem(kyara.teacher.TEACHERS, "tha3/separable_half", kyara.teacher.TEACHERS["tha3/separable_float"])
    load(SAMPLE_IMAGE, teacher="tha3/separable_half", weights_dir=weights)
    assert calls[0]["dtype"] == torch.float32
