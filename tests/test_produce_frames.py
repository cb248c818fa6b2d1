"""Split rendering for students: the face and body networks on separate schedules must equal the
full student render when the body runs on every frame, and stay close when keyframed."""
from __future__ import annotations

import numpy as np
import torch

from kyara.character import Character
from kyara.pose import INDEX
from kyara.produce.frames import RenderStats, SplitConfig, render_track, render_track_split, supports_split
from kyara.student import BodyMorpher, FaceMorpher, Student


def tiny_student_character() -> Character:
    torch.manual_seed(0)
    student = Student(FaceMorpher(hidden=16, num_layers=2),
                      BodyMorpher(levels=((128, 8, 8), (256, 8, 8), (512, 8, 8)), layers_per_level=2)).eval()
    image = torch.rand(4, 512, 512) * 2 - 1
    return Character("tiny", image, student, "none")


def test_split_equals_full_render_when_body_runs_every_frame():
    ch = tiny_student_character()
    assert supports_split(ch)
    poses = np.zeros((4, 45), np.float32)
    poses[1:, INDEX["mouth_aaa"]] = [0.4, 0.4, 1.0]
    poses[2:, INDEX["head_y"]] = 0.3
    full = list(render_track(ch, poses))
    split = list(render_track_split(ch, poses, poses, fps=30.0, config=SplitConfig(body_max_gap_s=0.0)))
    assert len(split) == 4
    for a, b in zip(full, split):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_keyframed_body_runs_less_and_interpolates():
    ch = tiny_student_character()
    T = 9
    poses = np.zeros((T, 45), np.float32)
    poses[:, INDEX["head_y"]] = np.linspace(0, 0.4, T)
    poses[::2, INDEX["mouth_aaa"]] = 0.5
    body = poses.copy()
    body[:, INDEX["mouth_aaa"]] = 0.0
    stats = RenderStats()
    # A linear head turn needs no keyframes inside; the 0.5 s (4 frame) gap limit adds frame 4.
    frames = list(render_track_split(ch, poses, body, fps=8.0, config=SplitConfig(body_max_gap_s=0.5), stats=stats))
    assert len(frames) == T
    assert stats.face_poses == 2 and stats.body_poses == 3, "keyframes 0, 4, 8"
    exact = list(render_track_split(ch, poses, body, fps=8.0, config=SplitConfig(body_max_gap_s=0.0)))
    err = max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, exact))
    assert err < 8, f"linear interpolation of a linear head turn stays close (mean abs err {err:.2f})"
    assert np.array_equal(frames[4], exact[4]), "keyframes are exact"


def test_body_keyframes_follow_the_motion():
    from kyara.produce.frames import body_keyframes

    T = 100
    body = np.zeros((T, 45), np.float32)
    body[:, INDEX["head_y"]] = np.linspace(0, 0.5, T)                  # linear: no inner keyframes needed
    tol = SplitConfig().tolerances()
    assert list(body_keyframes(body, tol, max_gap=1000)) == [0, T - 1]
    assert len(body_keyframes(body, tol, max_gap=30)) == 5
    body[40:50, INDEX["head_x"]] = -0.3 * np.sin(np.linspace(0, np.pi, 10))   # a nod
    keys = body_keyframes(body, tol, max_gap=1000)
    assert ((keys >= 40) & (keys <= 50)).sum() >= 3, "the nod gets keyframes"
    assert ((keys < 38) | (keys > 52)).sum() == 2, "the still stretches do not"
