"""kyara.eval.evaluate: a character against its teacher on held-out poses, with small fake posers.

The fake teacher is tests/fakes.FakeTeacher (analytic, 512×512); fake characters render its output
exactly, or with a known change, so every expected number is computed independently here.
"""
from __future__ import annotations

import math

import pytest
import torch

from kyara.eval import evaluate as ev
from kyara.eval.metrics import psnr, ssim
from kyara.pose_sampler import sample_poses
from tests.fakes import FakeTeacher


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 512, 512, generator=g) * 2 - 1
    image[3, :, :200] = -1  # transparent left part
    return image


class FakeCharacter:
    """Renders the fake teacher's output for each pose, darkened by `dim` (0: exactly the teacher)."""

    def __init__(self, teacher: FakeTeacher, dim: float = 0.0) -> None:
        self.image, self.teacher, self.dim = _image(), teacher, dim
        self.rendered = 0

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        self.rendered += poses.shape[0]
        out = self.teacher.pose(self.teacher.prepare(self.image), poses).clone()
        out[:, :3] = out[:, :3] - self.dim * (out[:, :3] + 1)   # toward black, staying in [-1, 1]
        return out


def test_a_perfect_student_scores_infinite_psnr_and_ssim_one():
    teacher = FakeTeacher()
    character = FakeCharacter(teacher)
    result = ev.evaluate(character, teacher, num_poses=5, batch_size=2, lpips=False, progress=False)
    assert result.psnr == math.inf and result.ssim == pytest.approx(1.0, abs=1e-6)
    assert result.lpips is None and result.poses == 5 and result.teacher == "fake"
    assert character.rendered == 5                                # every pose once, in batches of 2, 2, 1
    assert result.as_dict() == {"psnr": math.inf, "ssim": result.ssim, "lpips": None, "poses": 5, "teacher": "fake",
                                "rotation_scale": 1.0}


def test_metrics_are_per_pose_means_over_the_held_out_stream():
    teacher = FakeTeacher()
    character = FakeCharacter(teacher, dim=0.1)
    result = ev.evaluate(character, teacher, num_poses=3, batch_size=2, lpips=False, progress=False)
    # independently: the same held-out poses, all at once
    poses = sample_poses(3, torch.Generator().manual_seed(ev.HELDOUT_SEED))
    target = teacher.pose(teacher.prepare(character.image), poses)
    pred = character.render(poses)
    assert result.psnr == pytest.approx(float(psnr(pred, target).mean()), rel=1e-9)
    assert result.ssim == pytest.approx(float(ssim(pred, target).mean()), rel=1e-9)
    assert 10 < result.psnr < 60 and result.ssim < 1.0
    # another seed draws another pose set (the default is the held-out stream, never a training one)
    other = ev.evaluate(character, teacher, num_poses=1, lpips=False, progress=False, seed=1)
    first = sample_poses(1, torch.Generator().manual_seed(1))
    assert other.psnr == pytest.approx(float(psnr(character.render(first),
                                                  teacher.pose(teacher.prepare(character.image), first))), rel=1e-9)


def test_rotation_scale_scales_only_the_rotations_of_the_same_held_out_poses():
    teacher = FakeTeacher()
    character = FakeCharacter(teacher, dim=0.1)
    result = ev.evaluate(character, teacher, num_poses=3, batch_size=2, lpips=False, progress=False,
                         rotation_scale=0.25)
    poses = sample_poses(3, torch.Generator().manual_seed(ev.HELDOUT_SEED))
    turned = poses.clone()
    turned[:, 39:45] *= 0.25                                    # head x/y, neck z, body y/z, breathing
    assert not torch.equal(turned, poses)                       # the stream's poses do turn
    target = teacher.pose(teacher.prepare(character.image), turned)
    assert result.psnr == pytest.approx(float(psnr(character.render(turned), target).mean()), rel=1e-9)
    assert result.rotation_scale == 0.25
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rotation_scale"):
            ev.evaluate(character, teacher, num_poses=1, lpips=False, progress=False, rotation_scale=bad)


def test_lpips_is_averaged_with_the_loaded_network(monkeypatch):
    """lpips=True loads the network for the teacher's device and averages its per-pair distances."""
    import kyara.eval.lpips as lp

    devices = []

    def fake_load_lpips(device):
        devices.append(device)
        return lambda a, b: (a - b).abs().mean(dim=(1, 2, 3))   # (N,) like LPIPS.forward

    monkeypatch.setattr(lp, "load_lpips", fake_load_lpips)
    teacher = FakeTeacher()
    character = FakeCharacter(teacher, dim=0.2)
    result = ev.evaluate(character, teacher, num_poses=3, batch_size=2, lpips=True, progress=False)
    poses = sample_poses(3, torch.Generator().manual_seed(ev.HELDOUT_SEED))
    target = teacher.pose(teacher.prepare(character.image), poses)
    expected = float((character.render(poses) - target).abs().mean())
    assert devices == [teacher.device] and result.lpips == pytest.approx(expected, rel=1e-6)
