"""kyara.student.lite: the CPU-lite student evaluates fewer pixels but keeps the student's maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kyara.character import Character, random_character
from kyara.errors import KyaraError
from kyara.image import tensor_to_rgba_u8
from kyara.pose import FACE_ALL
from kyara.pose_sampler import sample_poses
from kyara.student import Student
from kyara.student.lite import LiteConfig, LiteStudent, bilinear_taps, coarse_body, use_student
from kyara.student.pixels import PixelSet


@pytest.fixture(scope="module")
def character() -> Character:
    """A random student restricted to a small region (keeps the full body evaluation cheap)."""
    ch = random_character(seed=3)
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[72:232, 184:328] = True   # covers the face box (80:208, 192:320), like a real character's region
    ch.poser.set_region(region)
    return ch


@pytest.mark.parametrize("out_size,in_size", [(512, 128), (512, 192), (256, 256), (64, 32)])
def test_bilinear_taps_match_interpolate(out_size, in_size):
    grid = torch.randn(1, 3, in_size, in_size, dtype=torch.float64)
    flat = np.arange(out_size * out_size)
    taps, weights = bilinear_taps(flat, out_size, in_size)
    gathered = (grid.view(3, -1)[:, torch.from_numpy(taps)] * torch.from_numpy(weights).double()).sum(-1)
    expected = F.interpolate(grid, size=out_size, mode="bilinear", align_corners=False).view(3, -1)
    assert torch.allclose(gathered, expected, atol=1e-6)   # float32 weights: ~1e-7 relative


def test_full_grid_lite_body_equals_the_student(character):
    """body_grid = 512 is the native 128/256/512 schedule: the same outputs as the full student."""
    poses = sample_poses(2, torch.Generator().manual_seed(0))
    exact = LiteStudent(character.poser, LiteConfig(body_grid=512))
    with torch.inference_mode():
        a = character.poser.body_features(poses)
        b = exact.body_features(poses)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) < 1e-4   # float32 summation order (measured 2.4e-6 on the sample student)


def test_coarse_body_covers_every_tap(character):
    pixels = character.poser.body_pixels()
    coarse = coarse_body(pixels.output, (32, 64, 128))
    assert [lvl.size for lvl in coarse.pixels.levels] == [32, 64, 128]
    assert coarse.taps.shape == (len(pixels.output), 4)
    assert int(coarse.taps.max()) < len(coarse.pixels.output)
    assert torch.allclose(coarse.weights.sum(1), torch.ones(len(pixels.output)), atol=1e-6)
    # Far fewer network evaluations than the native schedule.
    assert sum(len(lvl) for lvl in coarse.pixels.levels) < sum(len(lvl) for lvl in pixels.levels) / 6


def test_lite_face_is_exact_on_movable_pixels_and_constant_elsewhere(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=8))
    poses = sample_poses(3, torch.Generator().manual_seed(1))[:, FACE_ALL]
    with torch.inference_mode():
        full = Student.face_rgba(character.poser, poses)
        faces = lite.face_rgba(poses)
    plan = lite.face_plan()
    mask = torch.zeros(128 * 128, dtype=torch.bool)
    mask[plan.pixels.output.index] = True
    mask = mask.view(128, 128)
    assert float((faces - full).abs().amax(1)[:, mask].max()) < 1e-4   # same evaluator on those pixels
    assert torch.equal(faces[:, :, ~mask], plan.constant[:, ~mask].expand(3, -1, -1))


def test_everything_movable_reproduces_the_face(character):
    """A threshold below any deviation marks every pixel movable: the full face morpher."""
    lite = LiteStudent(character.poser, LiteConfig(face_threshold=-1.0, face_poses=4))
    poses = sample_poses(2, torch.Generator().manual_seed(2))[:, FACE_ALL]
    with torch.inference_mode():
        assert float((lite.face_rgba(poses) - character.poser.face_rgba(poses)).abs().max()) < 1e-4
    assert lite.face_plan().share == 1.0


def test_pose_rgba_u8_matches_the_float_path(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    poses = sample_poses(2, torch.Generator().manual_seed(4))
    u8 = lite.pose_rgba_u8(character.image, poses)
    with torch.inference_mode():
        reference = np.stack([tensor_to_rgba_u8(x) for x in lite.pose(character.image, poses)])
    assert u8.shape == (2, 512, 512, 4) and u8.dtype == np.uint8
    # Lookup-table sRGB: one level off only where a value sits within 1/65536 of a rounding edge.
    # Fully transparent pixels come out as (0, 0, 0, 0) there (their straight colour is invisible).
    diff = np.abs(u8.astype(int) - reference)
    assert diff[..., 3].max() <= 1
    assert diff[..., :3][reference[..., 3] > 0].max() <= 1
    assert (u8[..., :3][u8[..., 3] == 0] == 0).all()


def test_pose_rgba_u8_with_the_face_box_outside_the_region(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[100:200, 220:300] = True
    lite.set_region(region)
    poses = sample_poses(1, torch.Generator().manual_seed(6))
    with torch.inference_mode():
        reference = tensor_to_rgba_u8(lite.pose(character.image, poses)[0])
    assert np.array_equal(lite.pose_rgba_u8(character.image, poses)[0], reference)


def test_lite_falls_back_to_the_modules_under_autograd(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    poses = sample_poses(1, torch.Generator().manual_seed(5))[:, FACE_ALL]
    out = lite.face_rgba(poses)   # grad enabled: the differentiable module path, no face plan needed
    assert lite._face_plan is None
    assert torch.allclose(out, character.poser.face_morpher(poses))


def test_use_student_modes(character):
    ch = Character(character.name, character.image, character.poser, "none")
    assert use_student(ch, "full").poser is character.poser
    assert use_student(ch, "auto", frames=1).poser is character.poser        # too short to repay the analysis
    assert isinstance(use_student(ch, "auto").poser, LiteStudent)
    assert use_student(ch, "lite").poser is ch.poser                         # already lite: unchanged
    with pytest.raises(KyaraError, match="--student"):
        use_student(ch, "fast")


def test_use_student_lite_refuses_a_teacher():
    class Teacherish:
        device = torch.device("cpu")

    ch = Character("t", torch.zeros(4, 512, 512), Teacherish(), "tha3")
    assert use_student(ch, "auto").poser is ch.poser
    with pytest.raises(KyaraError, match="distilled"):
        use_student(ch, "lite")


def test_cli_commands_take_the_student_flag():
    import argparse

    from kyara.cli import demo, live, pose, scene, speak, stickers

    for module in (pose, speak, stickers, scene, demo, live):
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        actions = [a for sub in parser._subparsers._group_actions for p in sub.choices.values() for a in p._actions]
        student = [a for a in actions if "--student" in a.option_strings]
        assert student and list(student[0].choices) == ["auto", "lite", "full"], module.__name__
