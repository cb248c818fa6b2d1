"""kyara speak: pose track from audio (silence, resampling, phoneme timings), the frame cache, and
end-to-end videos with a tiny fake character (pose-dependent pixels) instead of a real model."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kyara.cli import main
from kyara.drive.audio import AudioError
from kyara.pose import INDEX
from kyara.produce.frames import EXACT, QuantizeConfig, RenderStats, quantize_track, render_track
from kyara.produce.motion import EmotionKey, EmotionTimeline, load_emotion_timeline, stress_times, voice_head_layer
from kyara.produce.speak import SpeakConfig, phoneme_vowel_probs, speak, speech_tracks
from kyara.render.video import read_audio, read_frames
from test_produce_fakes import FakeCharacter, vowel_like, write_wav

MOUTH = [INDEX[n] for n in ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")]
BLINK = INDEX["eye_wink_left"]


def analyze_file(path, fps=30.0):
    from kyara.drive.audio import analyze, load_audio

    samples, sr = load_audio(path)
    return analyze(samples, sr, fps=fps)


def test_silence_keeps_mouth_closed_but_blinks(tmp_path):
    wav = write_wav(tmp_path / "silence.wav", np.zeros(16000 * 12), 16000)
    track = speech_tracks(analyze_file(wav)).poses
    assert track.shape == (360, 45)
    assert np.abs(track[:, MOUTH]).max() == 0.0
    assert track[:, BLINK].max() > 0.8, "idle blinks continue in silence"
    assert np.abs(track[:, INDEX["head_y"]]).max() > 0.0, "the head still sways a little"


def test_speech_opens_the_mouth_and_nods(tmp_path):
    wav = write_wav(tmp_path / "v.wav", vowel_like(4.0, 16000), 16000)
    track = speech_tracks(analyze_file(wav)).poses
    assert track[:, MOUTH].max() > 0.3
    assert track[:, INDEX["head_x"]].min() < -0.05, "stressed syllables nod the head"


def test_phoneme_probs_follow_spans():
    from kyara.drive.tts import PhonemeSpan

    spans = [PhonemeSpan("h", 0.0, 0.1, "closed"), PhonemeSpan("a", 0.1, 0.3, "A"), PhonemeSpan("i:", 0.3, 0.4, "I")]
    probs = phoneme_vowel_probs(spans, 15, 30.0)
    assert probs.shape == (15, 6) and np.allclose(probs.sum(1), 1)
    assert probs[:3, 5].min() > 0.99 and probs[4:8, 0].min() > 0.99 and probs[10, 1] > 0.99
    assert probs[13, 5] > 0.99, "after the last span the mouth is closed"


def test_emotion_timeline_crossfades(tmp_path):
    tl = EmotionTimeline((EmotionKey(0.0, "happy", 1.0), EmotionKey(1.0, "sad", 0.5)), fade_s=0.4)
    layer = tl.layer(np.array([0.0, 0.99, 1.2, 2.0]))
    happy, sad = INDEX["eyebrow_happy_left"], INDEX["eyebrow_troubled_left"]
    assert layer[0, happy] == 1.0 and layer[1, happy] == 1.0
    assert 0 < layer[2, happy] < 1 and 0 < layer[2, sad] < 0.5
    assert layer[3, happy] == 0 and layer[3, sad] == pytest.approx(0.5)
    f = tmp_path / "em.yaml"
    f.write_text("- {t: 0, emotion: happy}\n- {t: 2, emotion: angry, intensity: 0.5}\n")
    assert [k.preset for k in load_emotion_timeline(f).keys] == ["happy", "angry"]
    f.write_text("- {t: 0, emotion: hapy}\n")
    with pytest.raises(ValueError, match="unknown emotion 'hapy'"):
        load_emotion_timeline(f)


def test_head_motion_nods_on_stress():
    fps = 30.0
    loud = np.zeros(90, np.float32)
    loud[30:40] = 0.8            # one stressed syllable at 1 s
    assert [t for t, _ in stress_times(loud, fps)] == [30]
    layer = voice_head_layer(loud, np.zeros(90, np.float32), fps)
    assert layer[25:45, INDEX["head_x"]].min() < -0.1 and abs(layer[:20, INDEX["head_x"]]).max() < 0.02


def test_quantize_merges_poses_without_flicker():
    rng = np.random.default_rng(0)
    poses = np.zeros((300, 45), np.float32)
    poses[:, INDEX["head_y"]] = 0.3 * np.sin(np.linspace(0, 3, 300)) + 0.004 * rng.standard_normal(300)
    poses[:, INDEX["mouth_aaa"]] = np.clip(np.sin(np.linspace(0, 20, 300)), 0, 1)
    q = quantize_track(poses, QuantizeConfig())
    assert len(np.unique(q, axis=0)) < len(np.unique(poses, axis=0)) / 3
    assert np.abs(q - poses).max() <= 0.1
    # Hysteresis: noise around a level never makes the quantized value go back and forth in 2 frames.
    head = q[:, INDEX["head_y"]]
    flips = np.sum((head[2:] == head[:-2]) & (head[1:-1] != head[:-2]))
    assert flips == 0
    assert (q[poses[:, INDEX["mouth_aaa"]] == 0, INDEX["mouth_aaa"]] == 0).all(), "rest stays exact"
    assert np.array_equal(quantize_track(poses, EXACT), poses)


def test_render_track_renders_each_distinct_pose_once():
    poses = np.zeros((50, 45), np.float32)
    poses[10:20, INDEX["mouth_aaa"]] = 1.0
    poses[30:35, INDEX["mouth_aaa"]] = 1.0      # repeats an earlier pose
    poses[40:45, INDEX["eye_wink_left"]] = 0.5
    ch, stats = FakeCharacter(size=16), RenderStats()
    frames = list(render_track(ch, poses, batch_size=2, stats=stats))
    assert len(frames) == 50 and ch.rendered_poses == 3 and stats.unique_poses == 3
    assert frames[0][8, 8, 0] == 0 and frames[15][8, 8, 0] == 255 and frames[31][8, 8, 0] == 255
    assert frames[41][8, 8, 1] > 100


def test_speak_video_is_in_sync_and_lip_synced(tmp_path):
    wav = write_wav(tmp_path / "voice.wav", vowel_like(2.0, 44100), 44100)   # resampled inside
    stats = RenderStats()
    ch = FakeCharacter(size=32)
    out = speak(ch, wav, output=tmp_path / "talk.mp4", config=SpeakConfig(background="black"), progress=False,
                stats=stats)
    frames = read_frames(out)
    assert frames.shape == (60, 32, 32, 3)
    audio_s = len(read_audio(out)) / 16000
    assert abs(audio_s - 60 / 30) <= 1 / 30
    red = frames[:, 16, 16, 0].astype(int)          # mouth openness of the fake
    assert red.max() - red.min() > 60, "the mouth moves with the voice"
    assert stats.unique_poses < 60 and ch.rendered_poses == stats.unique_poses


def test_speak_default_output_name_and_webm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wav = write_wav(tmp_path / "hello.wav", vowel_like(0.5, 16000), 16000)
    assert speak(FakeCharacter(size=16), wav, progress=False).name == "hello.mp4"
    out = speak(FakeCharacter(size=16), wav, output="t.webm", progress=False)
    assert read_frames(out, alpha=True)[0, 0, 0, 3] < 10, "transparent outside the character"


def test_speak_text_uses_espeak(tmp_path):
    pytest.importorskip("soundfile")
    from kyara.drive.tts import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng not installed")
    out = speak(FakeCharacter(size=16), text="Hello, how are you today?", output=tmp_path / "t.mp4", progress=False)
    frames = read_frames(out)
    assert len(frames) > 20 and frames[:, 8, 8, 0].max() > 100
    assert abs(len(read_audio(out)) / 16000 - len(frames) / 30) <= 1 / 30


def test_bad_audio_inputs(tmp_path):
    with pytest.raises(AudioError, match="missing.wav"):
        speak(FakeCharacter(), tmp_path / "missing.wav", output=tmp_path / "x.mp4", progress=False)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError, match="corrupt.wav"):
        speak(FakeCharacter(), corrupt, output=tmp_path / "x.mp4", progress=False)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(ValueError, match="exactly one"):
        speak(FakeCharacter(), None, None)


def test_cli_reports_missing_files_in_one_line(tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", np.zeros(1600), 16000)
    assert main(["speak", str(tmp_path / "nobody.kyara"), "--audio", str(wav), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nobody.kyara" in err and err.count("\n") == 1
    assert math.isfinite(SpeakConfig().fps)


def test_dominant_mouth_bounds_the_mouth_states():
    from kyara.produce.motion import dominant_mouth

    rng = np.random.default_rng(1)
    layer = np.zeros((200, 45), np.float32)
    layer[:, MOUTH] = rng.uniform(0, 0.25, (200, 5))
    out = dominant_mouth(layer, levels=4)
    assert ((out[:, MOUTH] > 0).sum(axis=1) <= 1).all(), "one shape at a time"
    levels = np.round(out[:, MOUTH].sum(axis=1).astype(np.float64) * 3, 4)
    assert set(levels.tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(np.unique(out[:, MOUTH], axis=0)) <= 5 * 3 + 1
    # Near-ties do not flicker: two shapes within noise of each other → the first one is kept.
    tie = np.zeros((100, 45), np.float32)
    tie[:, INDEX["mouth_aaa"]] = 0.3 + 0.01 * rng.standard_normal(100)
    tie[:, INDEX["mouth_eee"]] = 0.3 + 0.01 * rng.standard_normal(100)
    assert np.sum(np.diff(tie[:, MOUTH].argmax(1)) != 0) > 20
    assert np.sum(np.diff(dominant_mouth(tie)[:, MOUTH].argmax(1)) != 0) == 0
    assert np.array_equal(dominant_mouth(layer, levels=0), layer)
