"""Fast student rendering for `kyara speak` (render_track_fast: the student's CPU evaluator,
kyara.student.compose) against the full per-frame render of the bundled sample student."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kyara import character as character_module
from kyara.image import composite_over, tensor_to_rgba_u8
from kyara.pose import FACE_ALL, INDEX
from kyara.produce.frames import FastConfig, RenderStats, SplitConfig, render_track_fast, render_track_split
from kyara.student.pixels import PixelSet

needs_sample = pytest.mark.skipif(not character_module.SAMPLE_CHARACTER.is_file(), reason="no bundled sample student")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def sample():
    return character_module.load_character(character_module.SAMPLE_CHARACTER)


@needs_sample
def test_fast_networks_equal_the_modules(sample):
    """The CPU evaluator (Student.body_features / face_rgba without autograd) equals the modules: both are float32
    orderings of the same sums, so each is held to what float32 itself costs against a float64 evaluation.

    Why not a fixed tolerance on the networks' outputs: how far float32 strays depends on the student. Its sine
    layers amplify rounding with the size of their arguments, and a better-trained student has pixels where the
    body's middle level amplifies it ~10× a layer. Measured on this CPU (OMP_NUM_THREADS 1 and 2 alike), max |Δ| of
    the body's outputs against float64 over the sample's region, modules / evaluator: session 7's bundled student
    1.3e-4 / 1.5e-4; session 19's 7.6e-4 / 1.1e-3; session 31's (bundled in sessions 32-40) 1.9e-2 / 2.4e-2, the
    20-minute sample of session 24 1.0e-2 / 2.4e-2, twin_tails 3.7e-3 / 8.2e-3, session 40's (bundled since session
    41) 1.6e-2 / 2.3e-2: a few pixels, in the colour channels. What a user sees is the frame: the evaluator's frame
    against the float64 frame, 8-bit RGBA, 81.0 / 68.2 / 67.3 (another seed) / 68.0 / 69.6 / 66.8 dB, and against
    the modules' frame 80.3 / 67.7 / 66.8 / 67.5 / 69.1 / 66.4 dB (the largest pixel difference 1–6 levels). Hence
    60 dB for the body's frames (an rms error of a quarter of a level). The face
    network stays well conditioned (2e-5 in every student), so its outputs keep the old bound: ≤ 3× the modules'
    own float32 error and under half an 8-bit level of the [-1, 1] range (3.9e-3)."""
    import copy

    student = sample.poser
    torch.manual_seed(0)
    poses = (torch.rand(1, 45) * 2 - 1) * 0.3
    pixels = student.body_pixels()
    exact = copy.deepcopy(student).double()
    with torch.inference_mode():
        body = student.body_morpher.features(poses).permute(0, 2, 3, 1).reshape(1, -1, 7)[:, pixels.output.index]
        face = student.face_morpher(poses[:, FACE_ALL])
        body64 = exact.body_morpher.features_at(poses.double(), pixels)
        face64 = exact.face_morpher(poses[:, FACE_ALL].double())
        fast_face = student.face_rgba(poses[:, FACE_ALL])
        modules_error = (face.double() - face64).abs().max().item()
        fast_error = (fast_face.double() - face64).abs().max().item()
        assert fast_error <= 3 * modules_error + 1e-6 and fast_error < 0.5 * 2 / 255, (fast_error, modules_error)

        image = sample.image.unsqueeze(0)
        frame = lambda net, img, f, b: tensor_to_rgba_u8(net.compose(img, f, b, pixels).image[0].float())  # noqa: E731
        fast = frame(student, image, fast_face, student.body_features(poses))
        modules = frame(student, image, face, body)
        reference = frame(exact, image.double(), face64, body64)
        for name, got, want in (("evaluator vs float64", fast, reference), ("evaluator vs modules", fast, modules)):
            assert psnr(got, want) >= 60.0, (name, psnr(got, want))


@needs_sample
def test_a_pixel_subset_gives_the_same_values_as_the_full_canvas(sample):
    pose = torch.zeros(1, 45)
    pose[0, INDEX["head_y"]] = 0.2
    mask = np.zeros((512, 512), bool)
    mask[100:140, 200:260] = True
    mask[400, 7] = mask[0, 511] = True                  # borders use clamped bilinear taps
    subset = PixelSet.from_mask(mask, levels=3)
    assert len(subset.output) == mask.sum() and len(subset.levels[0]) < 128 * 128
    with torch.inference_mode():
        full = sample.poser.body_features(pose, PixelSet.full(512, levels=3))[0]
        part = sample.poser.body_features(pose, subset)[0]
    assert (part - full[subset.output.index]).abs().max() < 1e-5


def frames_for(sample, poses, body_poses, background, **fast):
    stats = RenderStats()
    frames = list(render_track_fast(sample, poses, body_poses, fps=30.0, config=FastConfig(**fast), stats=stats,
                                    background=background))
    return frames, stats


def speech_like_track(T: int = 24) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(T) / 30.0
    poses = np.zeros((T, 45), np.float32)
    poses[:, INDEX["head_y"]] = 0.15 * np.sin(2 * np.pi * 0.3 * t)
    poses[:, INDEX["head_x"]] = -0.2 * np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None)      # a nod
    poses[:, INDEX["breathing"]] = 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t)
    body = poses.copy()
    poses[::3, INDEX["mouth_aaa"]] = 1.0
    blink = np.array([0.5, 1.0, 0.5])[: max(0, T - 1)]
    poses[1:1 + len(blink), INDEX["eye_wink_left"]] = poses[1:1 + len(blink), INDEX["eye_wink_right"]] = blink
    return poses, body


@needs_sample
@pytest.mark.parametrize("background", [(255, 255, 255), None])
def test_every_frame_exact_matches_the_full_render(sample, background):
    """Body network on every frame's full pose: only the region cut and 8-bit tables differ."""
    poses, _ = speech_like_track(4)
    frames, stats = frames_for(sample, poses, poses, background, split=SplitConfig(body_max_gap_s=0.0))
    assert stats.frames == 4 and stats.body_poses == 4
    for frame, pose in zip(frames, poses):
        full = tensor_to_rgba_u8(sample.render(torch.from_numpy(pose[None]))[0].cpu())
        if background is None:
            assert frame.shape == (512, 512, 4)
            # Compare what can be seen: alpha, and colour weighted by alpha (premultiplied). Colour under
            # alpha 0 or 1/255 is invisible; the full render may leave a faint tint there (a short-trained
            # student leaves alpha 1/255 specks beyond the fast path's region, seen: RGB off by 15 there),
            # the fast path writes transparent zeros.
            assert np.abs(frame[..., 3].astype(int) - full[..., 3]).max() <= 1
            seen = lambda f: f[..., :3].astype(float) * f[..., 3:4] / 255.0   # noqa: E731
            assert np.abs(seen(frame) - seen(full)).max() <= 1.0
        else:
            assert frame.shape == (512, 512, 3)
            assert np.abs(frame.astype(int) - composite_over(full, background)).max() <= 1


@needs_sample
def test_default_fast_path_is_close_to_the_full_render(sample):
    """Keyframed body network (mouth and blinks not seen by it) vs every frame in full: the
    stated tolerance is 38 dB PSNR on every frame, 40 dB over the clip, on white."""
    poses, body = speech_like_track(24)
    frames, stats = frames_for(sample, poses, body, (255, 255, 255))
    assert stats.body_poses < 24 and stats.face_poses < 24
    mses = []
    for t in range(0, 24, 3):
        full = composite_over(tensor_to_rgba_u8(sample.render(torch.from_numpy(poses[t:t + 1]))[0].cpu()),
                              (255, 255, 255))
        assert psnr(frames[t], full) > 38.0, f"frame {t}"
        mses.append(np.mean((frames[t].astype(np.float64) - full) ** 2))
    assert 10 * np.log10(255.0 ** 2 / np.mean(mses)) > 40.0


def test_speak_fast_path_keeps_audio_and_video_within_one_frame(tmp_path):
    """The default speak path with a (tiny, random) student: frame count and muxed audio agree."""
    from test_produce_fakes import vowel_like, write_wav
    from test_produce_frames import tiny_student_character

    from kyara.produce.speak import SpeakConfig, speak
    from kyara.render.video import read_audio, read_frames

    wav = write_wav(tmp_path / "voice.wav", vowel_like(1.3, 16000), 16000)
    stats = RenderStats()
    out = speak(tiny_student_character(), wav, output=tmp_path / "talk.mp4", config=SpeakConfig(), progress=False,
                stats=stats)
    frames = read_frames(out)
    assert len(frames) == stats.frames == 39 and stats.body_poses < 39       # the fast path ran
    assert abs(len(read_audio(out)) / 16000 - len(frames) / 30.0) <= 1 / 30.0


@pytest.mark.parametrize("render", [render_track_fast, render_track_split])
def test_student_tracks_restore_the_torch_thread_count(render, monkeypatch):
    """The compositing lanes run single-threaded torch. Whether torch.set_num_threads on a worker
    reaches the caller's thread depends on the OpenMP runtime's state, so the count is modelled as
    one process-wide value (the worst case): the track must leave it as it found it."""
    from test_produce_frames import tiny_student_character

    count = {"threads": 2}   # two lanes
    monkeypatch.setattr(torch, "get_num_threads", lambda: count["threads"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: count.update(threads=n))
    poses = np.zeros((3, 45), np.float32)
    poses[:, INDEX["head_y"]] = [0.0, 0.2, 0.4]
    assert len(list(render(tiny_student_character(), poses, poses, 30.0))) == 3
    assert count["threads"] == 2
