"""Video writers: write frames, read them back with ffmpeg, check counts, sizes, alpha and audio."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kyara.render.video import VideoError, open_writer, probe, read_audio, read_frames
from test_produce_fakes import write_wav

FPS = 30


def moving_square(n: int = 30, h: int = 48, w: int = 64):
    """n frames, (h, w, 4) uint8: transparent background, an opaque red square moving right."""
    for i in range(n):
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[12:36, 8 + i % 20:32 + i % 20] = (255, 0, 0, 255)
        yield rgba


def tone(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return 0.3 * np.sin(2 * np.pi * 440 * t)


def test_mp4_with_audio_round_trip(tmp_path):
    wav = write_wav(tmp_path / "a.wav", tone(1.1), 16000)
    out = open_writer(tmp_path / "v.mp4", fps=FPS, background=(0, 255, 0), audio=wav).write_all(moving_square(30))
    info = probe(out)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 64, 48)
    frames = read_frames(out)
    assert frames.shape == (30, 48, 64, 3)
    # Background colour really is green where the square is not; the square is red.
    assert np.abs(frames[0, 2, 2].astype(int) - (0, 255, 0)).max() < 12
    assert frames[0, 24, 20, 0] > 200 and frames[0, 24, 20, 1] < 60
    # The 1.1 s audio is cut to the 1.0 s video; A/V agree within one frame.
    audio_s = len(read_audio(out)) / 16000
    assert abs(audio_s - len(frames) / FPS) <= 1 / FPS
    assert b"moov" in out.read_bytes()[:4096], "+faststart puts the index at the front"


def test_mp4_audio_shorter_than_video_is_padded(tmp_path):
    wav = write_wav(tmp_path / "a.wav", tone(0.5, 22050), 22050)
    out = open_writer(tmp_path / "v.mp4", fps=FPS, audio=wav).write_all(moving_square(45))
    assert abs(len(read_audio(out)) / 16000 - 45 / FPS) <= 1 / FPS


def test_webm_keeps_alpha(tmp_path):
    out = open_writer(tmp_path / "v.webm", fps=FPS).write_all(moving_square(20))
    info = probe(out)
    assert info.video_codec == "vp9" and info.has_alpha_tag
    frames = read_frames(out, alpha=True)
    assert frames.shape == (20, 48, 64, 4)
    assert frames[:, 2, 2, 3].max() < 10, "corners must stay transparent"
    assert frames[0, 24, 20, 3] > 245, "the square must stay opaque"


def test_webm_with_audio_and_background_has_no_alpha(tmp_path):
    wav = write_wav(tmp_path / "a.wav", tone(1.0, 48000), 48000)
    out = open_writer(tmp_path / "v.webm", fps=FPS, background=(0, 0, 255), audio=wav).write_all(moving_square(30))
    info = probe(out)
    assert info.audio_codec == "opus" and not info.has_alpha_tag
    assert abs(len(read_audio(out)) / 16000 - 1.0) <= 1 / FPS


def test_gif_is_transparent_and_loops(tmp_path):
    out = open_writer(tmp_path / "v.gif", fps=FPS).write_all(moving_square(10))
    with Image.open(out) as gif:
        assert gif.n_frames == 10 and gif.size == (64, 48)
        assert "transparency" in gif.info and gif.info.get("loop") == 0
        rgba = np.asarray(gif.convert("RGBA"))
        assert rgba[2, 2, 3] == 0 and rgba[24, 20, 3] == 255


def test_animated_webp(tmp_path):
    out = open_writer(tmp_path / "v.webp", fps=15).write_all(moving_square(6))
    with Image.open(out) as img:
        assert img.n_frames == 6 and img.mode == "RGBA"
        assert np.asarray(img)[2, 2, 3] == 0


@pytest.mark.parametrize("target,first", [("frames", "frames/frame_000000.png"), ("seq/f_%04d.png", "seq/f_0000.png")])
def test_png_sequence(tmp_path, target, first):
    open_writer(tmp_path / target, fps=FPS).write_all(moving_square(5))
    pngs = sorted(p for p in (tmp_path / first).parent.iterdir())
    assert len(pngs) == 5 and pngs[0] == tmp_path / first, "atomic writes leave no temp files"
    assert np.asarray(Image.open(pngs[0])).shape == (48, 64, 4)


def test_errors_are_clear_and_leave_nothing_behind(tmp_path):
    with pytest.raises(VideoError, match="frame size changed"):
        with open_writer(tmp_path / "v.mp4") as w:
            w.write(np.zeros((16, 16, 4), np.uint8))
            w.write(np.zeros((16, 18, 4), np.uint8))
    with pytest.raises(VideoError, match="no frames"):
        open_writer(tmp_path / "e.mp4").close()
    with pytest.raises(VideoError, match="audio file not found"):
        open_writer(tmp_path / "a.mp4", audio=tmp_path / "missing.wav")
    with pytest.raises(VideoError, match="no audio track"):
        open_writer(tmp_path / "a.gif", audio=write_wav(tmp_path / "x.wav", tone(0.1), 16000))
    with pytest.raises(VideoError, match="unsupported output"):
        open_writer(tmp_path / "v.avi")
    with pytest.raises(VideoError, match=r"\(H, W, 4\) uint8"):
        open_writer(tmp_path / "f.mp4").write(np.zeros((16, 16, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


def test_ffmpeg_failure_quotes_stderr(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav file at all")
    with pytest.raises(VideoError) as err:
        open_writer(tmp_path / "v.mp4", audio=bad).write_all(moving_square(3))
    assert "ffmpeg failed" in str(err.value) and "bad.wav" in str(err.value)
    assert not (tmp_path / "v.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]
