"""The official THA4 pose dataset file as a distillation pose sampler (kyara.pose_dataset), with synthetic files."""
from __future__ import annotations

import pytest
import torch

from kyara.pose import HIGH, INDEX, LOW
from kyara.pose_dataset import PoseDatasetError, load_pose_dataset, pose_sampler
from kyara.pose_sampler import sample_poses


def synthetic_poses(n: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low, high = torch.from_numpy(LOW), torch.from_numpy(HIGH)
    return low + (high - low) * torch.rand(n, 45, generator=g)


@pytest.mark.parametrize("wrap", [lambda t: t, lambda t: (t,), lambda t: [t, torch.zeros(len(t))]])
def test_loads_the_official_layouts_and_samples_from_them(tmp_path, wrap):
    poses = synthetic_poses()
    torch.save(wrap(poses), tmp_path / "pose_dataset.pt")
    dataset = load_pose_dataset(tmp_path / "pose_dataset.pt")
    assert torch.equal(dataset.poses, poses)
    a = dataset.sample(200, torch.Generator().manual_seed(1))
    b = dataset.sample(200, torch.Generator().manual_seed(1))
    assert a.shape == (200, 45) and torch.equal(a, b)
    # every sample is a row of the file, and uniform draws with replacement reach most rows
    rows = {tuple(r.tolist()) for r in poses}
    assert all(tuple(r.tolist()) in rows for r in a)
    assert len({tuple(r.tolist()) for r in a}) > 40


def test_sampler_choice(tmp_path):
    assert pose_sampler("") is sample_poses
    torch.save(synthetic_poses(), tmp_path / "p.pt")
    draw = pose_sampler(str(tmp_path / "p.pt"))
    assert draw(3, torch.Generator().manual_seed(0)).shape == (3, 45)


def bad(tmp_path, data) -> str:
    path = tmp_path / "pose_dataset.pt"
    torch.save(data, path)
    with pytest.raises(PoseDatasetError) as info:
        load_pose_dataset(path)
    text = str(info.value)
    assert "\n" not in text and "weights_only=False" not in text and str(path) in text
    return text


def test_refuses_wrong_shape_dtype_and_values(tmp_path):
    assert "shape (N, 45)" in bad(tmp_path, torch.zeros(10, 44))
    assert "shape (N, 45)" in bad(tmp_path, torch.zeros(0, 45))
    assert "floating point" in bad(tmp_path, torch.zeros(3, 45, dtype=torch.int64))
    poses = synthetic_poses()
    poses[7, INDEX["head_y"]] = float("nan")
    assert "pose 7 has a non-finite head_y" in bad(tmp_path, poses)
    poses = synthetic_poses()
    poses[3, INDEX["mouth_aaa"]] = 1.5
    poses[9, INDEX["mouth_aaa"]] = -0.2
    assert "pose 3 has mouth_aaa = 1.5, outside its range [0, 1]; 2 poses affected" in bad(tmp_path, poses)
    assert "found dict" in bad(tmp_path, {"poses": synthetic_poses()})


def test_refuses_missing_and_foreign_files_in_one_line(tmp_path):
    with pytest.raises(PoseDatasetError, match="pose dataset file not found"):
        load_pose_dataset(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00junk" * 10)
    with pytest.raises(PoseDatasetError, match="not a readable PyTorch tensor file") as info:
        load_pose_dataset(tmp_path / "junk.pt")
    assert "weights_only=False" not in str(info.value)
    torch.save({"x": PoseDatasetError("pickled")}, tmp_path / "obj.pt")
    with pytest.raises(PoseDatasetError, match="never unpickles"):
        load_pose_dataset(tmp_path / "obj.pt")


def test_rounding_outside_a_range_is_clamped(tmp_path):
    poses = synthetic_poses()
    poses[0, INDEX["breathing"]] = 1 + 1e-7
    torch.save(poses, tmp_path / "p.pt")
    assert float(load_pose_dataset(tmp_path / "p.pt").poses[0, INDEX["breathing"]]) == 1.0


def test_cli_distill_checks_the_dataset_before_loading_the_teacher(tmp_path, monkeypatch, capsys):
    from kyara.cli import main

    torch.save(torch.zeros(4, 3), tmp_path / "p.pt")

    def no_teacher(*a, **k):
        raise AssertionError("the teacher must not load before the pose dataset is checked")

    monkeypatch.setattr("kyara.teacher.load_teacher", no_teacher)
    from kyara.character import SAMPLE_IMAGE

    rc = main(["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "x.kyara"), "--device", "cpu",
               "--pose-dataset", str(tmp_path / "p.pt")])
    assert rc == 2
    assert "p.pt: poses must have shape (N, 45) with N ≥ 1, got (4, 3)" in capsys.readouterr().err
