"""A character's colour convention (issue 17): official THA4 students were trained on premultiplied
colour, kyara's THA3-distilled ones on straight colour. Synthetic character with soft alpha edges; no
official files needed (benchmarks/tha4_official.py checks against the official code)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kyara.character import (COLOUR_KEY, Character, export_tha4_directory, load_character, save_kyara)
from kyara.errors import CharacterFileError
from kyara.image import rgba_u8_to_tensor, to_premultiplied, to_straight
from kyara.student import Student
from tests.fakes import FakeTeacher


def soft_edged_rgba() -> np.ndarray:
    """(512, 512, 4) uint8: a coloured disc whose alpha falls off over ~40 px, on transparent."""
    yy, xx = np.mgrid[:512, :512]
    r = np.hypot(xx - 256, yy - 200)
    alpha = np.clip((180 - r) / 40, 0, 1)
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[..., 0] = (200 + 50 * np.sin(xx / 30)).astype(np.uint8)
    rgba[..., 1] = (yy / 2).astype(np.uint8)
    rgba[..., 2] = 90
    rgba[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return rgba


def official_premultiplied_input(rgba: np.ndarray) -> torch.Tensor:
    """The official THA4 loader's recipe, written out independently: float32 /255, sRGB → linear on RGB,
    RGB × alpha, then ×2 − 1 (tha3-tha4-facts.md §2)."""
    x = rgba.astype(np.float32) / 255.0
    rgb = x[..., :3]
    x[..., :3] = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4) * x[..., 3:4]
    return torch.from_numpy((x * 2 - 1).transpose(2, 0, 1).copy())


@pytest.fixture(scope="module")
def premultiplied_character():
    torch.manual_seed(3)
    student = Student().eval()
    rgba = soft_edged_rgba()
    return Character("soft", rgba_u8_to_tensor(rgba), student, "tha4-directory", {COLOUR_KEY: "premultiplied"}), rgba


POSES = torch.zeros(2, 45)
POSES[1, 26], POSES[1, 40] = 0.8, 0.5   # mouth open, head turned


def test_to_straight_inverts_to_premultiplied_where_alpha_is_positive():
    x = torch.rand(3, 4, 16, 16) * 2 - 1
    x[0, 3, :4] = -1                     # fully transparent pixels
    back = to_premultiplied(to_straight(to_premultiplied(x)))
    assert torch.allclose(back, to_premultiplied(x), atol=1e-6)
    visible = (x[:, 3:4] > -1 + 1e-3).expand_as(x)
    # straight colour comes back where alpha > 0 (float32 division: relative error ~1e-7, ×1/alpha)
    assert torch.allclose(to_straight(to_premultiplied(x))[visible], x[visible], atol=1e-4)


def test_premultiplied_character_feeds_the_official_input_and_returns_straight(premultiplied_character):
    character, rgba = premultiplied_character
    assert character.premultiplied
    with torch.no_grad():
        expected = character.poser.pose(official_premultiplied_input(rgba), POSES)   # official input, raw output
    got = character.render(POSES)
    # kyara's float64 sRGB curve vs the float32 one above: ≤ 1 float32 ulp on the input, amplified to ~1e-6
    assert (to_premultiplied(got) - expected).abs().max() < 1e-4
    assert torch.allclose(got, to_straight(expected), atol=1e-3)


def test_convention_survives_kyara_files_and_tha4_directories(tmp_path, premultiplied_character):
    character, _ = premultiplied_character
    path = save_kyara(tmp_path / "soft.kyara", "soft", character.image, character.poser, "tha4", character.metadata)
    loaded = load_character(path)
    assert loaded.premultiplied and torch.equal(loaded.render(POSES[:1]), character.render(POSES[:1]))
    out = export_tha4_directory(character, tmp_path / "character_model")   # exact: same weights, same pixels
    back = load_character(out)
    assert back.premultiplied
    assert np.array_equal(np.asarray(Image.open(out / "character.png")), soft_edged_rgba()[..., :4] * (soft_edged_rgba()[..., 3:4] > 0))
    assert torch.equal(back.render(POSES[:1]), character.render(POSES[:1]))


def test_unknown_colour_value_is_refused(tmp_path, premultiplied_character):
    character, _ = premultiplied_character
    path = save_kyara(tmp_path / "bad.kyara", "bad", character.image, character.poser, "tha4", {COLOUR_KEY: "linear"})
    with pytest.raises(CharacterFileError, match="colour='linear' is not one of straight, premultiplied"):
        load_character(path)


def test_straight_student_export_is_refused_with_the_reason(tmp_path, premultiplied_character):
    character, _ = premultiplied_character
    straight = Character("plain", character.image, character.poser, "tha3/separable_float", {})
    with pytest.raises(CharacterFileError, match="plain: not exported: this student was trained on straight colour"
                                                 ".*premultiplied.*--allow-straight"):
        export_tha4_directory(straight, tmp_path / "refused")            # the default refuses
    assert not (tmp_path / "refused").exists()
    assert (export_tha4_directory(straight, tmp_path / "out", allow_straight=True) / "body_morpher.pt").is_file()
    assert (export_tha4_directory(character, tmp_path / "exact") / "body_morpher.pt").is_file()   # premultiplied: exact


class PremultipliedFakeTeacher(FakeTeacher):
    colour = "premultiplied"

    def __init__(self):
        self.seen = []

    def prepare(self, image):
        self.seen.append(image.clone())
        return super().prepare(image)


def test_distilling_from_a_premultiplied_teacher_records_the_convention(tmp_path):
    from kyara.distill import DistillConfig, distill

    image = rgba_u8_to_tensor(soft_edged_rgba())
    teacher = PremultipliedFakeTeacher()
    config = DistillConfig(teacher="fake", examples=1, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                           pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=1e9, checkpoint_every_examples=1,
                           mask_poses=1, compile=False)
    result = distill(image, teacher, config, out_dir=tmp_path, name="soft", progress=False)
    assert torch.equal(teacher.seen[0], to_premultiplied(image))       # the teacher saw premultiplied colour
    assert result.character.premultiplied and torch.equal(result.character.image, image)   # stored straight
    assert load_character(tmp_path / "soft.kyara").premultiplied


def test_track_renderers_send_premultiplied_characters_through_character_render(premultiplied_character):
    """The split/fast track schedules feed character.image to the student directly; for a premultiplied
    character they must step aside so Character.render converts input and output (else soft edges break)."""
    from kyara.produce.frames import render_track, supports_split

    character, _ = premultiplied_character
    assert not supports_split(character)
    straight = Character("soft", character.image, character.poser, "tha4-directory", {})
    assert supports_split(straight)
    frames = list(render_track(character, POSES.numpy()))
    from kyara.image import tensor_to_rgba_u8
    assert np.array_equal(frames[1], tensor_to_rgba_u8(character.render(POSES[1:2])[0]))


def test_browser_weights_refuse_premultiplied_characters(premultiplied_character):
    from kyara.web.weights import WebWeightsError, student_to_web_bytes

    character, _ = premultiplied_character
    with pytest.raises(WebWeightsError, match="premultiplied"):
        student_to_web_bytes(character)
