"""Audio or text → a lip-synced talking video of a character.

Data flow (one pose row per video frame, T = ceil(audio seconds × fps)):

  audio file ──load_audio/analyze──► AudioTrack (vowel probabilities, loudness, pitch)
  text ──espeak-ng──► WAV + phoneme spans ──► vowel probabilities replaced by the phoneme truth
  AudioTrack ──mouth_track──► mouth layer      IdleMotion ──► blinks, breathing, idle sway
  emotion timeline ──► expression layer        loudness + pitch ──► nods and speaking sway
  layers ──assemble_track──► (T, 45) ──► render_track_fast (students on CPU) / quantize_track + render_track(_split)
  frames ──► open_writer (+ audio mux)
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from kyara.errors import KyaraError
from kyara.image import parse_color
from kyara.pose import FACE_ALL
from kyara.produce.frames import (FastConfig, QuantizeConfig, RenderStats, SplitConfig, quantize_track, render_track,
                                  render_track_fast, render_track_split, supports_split)
from kyara.produce.motion import (EmotionTimeline, HeadMotionConfig, assemble_track, dicts_to_layer, dominant_mouth,
                                  check_speech_length, frame_times, load_emotion_timeline, moving_average,
                                  voice_head_layer)

AUDIO_FORMATS = (".mp4", ".webm")   # outputs that carry the audio track


@dataclass(frozen=True)
class SpeakConfig:
    """Everything `kyara speak` can change; CLI flags are the kebab-case field names."""
    fps: float = 30.0
    voice: str = "en-us"                 # espeak-ng voice for text input
    rate_wpm: int = 160                  # espeak-ng speaking rate for text input
    emotion: str | None = None           # a preset held over the whole clip
    emotion_intensity: float = 0.7
    emotion_timeline: str | None = None  # YAML file of {t, emotion, intensity} keys (overrides emotion)
    background: str | None = None        # colour name, #rrggbb, 'transparent'; None: format default
    batch_size: int = 4
    seed: int = 0
    split: bool = True                   # students: face and body networks on separate schedules (fast)
    exact: bool = False                  # render every frame's exact pose with the full network (slow reference)
    body_max_gap_s: float = 2.0          # with split: longest gap between body-network keyframes (0: every frame)
    mouth_smoothing_s: float = 0.06
    mouth_levels: int = 4                # one vowel shape at a time on 4 openness steps; 0: continuous blend
    head_motion: HeadMotionConfig = field(default_factory=HeadMotionConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)


def phoneme_vowel_probs(spans: Sequence, n_frames: int, fps: float) -> np.ndarray:
    """Phoneme spans (start_s, end_s, vowel ∈ VOWELS) → (T, 6) float32: the share of each frame's
    time covered by each vowel class (frames outside every span are 'closed')."""
    from kyara.drive.audio import CLOSED, VOWELS

    probs = np.zeros((n_frames, len(VOWELS)), dtype=np.float32)
    starts = np.arange(n_frames) / fps
    ends = starts + 1.0 / fps
    for span in spans:
        overlap = np.clip(np.minimum(ends, span.end_s) - np.maximum(starts, span.start_s), 0.0, None) * fps
        probs[:, VOWELS.index(span.vowel)] += overlap.astype(np.float32)
    probs[:, CLOSED] += np.clip(1.0 - probs.sum(axis=1), 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def idle_layer(n_frames: int, fps: float, seed: int) -> np.ndarray:
    """(T, 45) blinks, breathing and idle sway from kyara.drive.idle."""
    from kyara.drive.idle import IdleConfig, IdleMotion

    idle = IdleMotion(IdleConfig(), seed)
    return dicts_to_layer([idle.sample(float(t)) for t in frame_times(n_frames, fps)])


class SpeechTracks(NamedTuple):
    """poses: (T, 45) float32 full pose per frame. body_poses: (T, 45) the same without the fast
    face layers (mouth, blinks): what the student's body network sees when rendering is split."""
    poses: np.ndarray
    body_poses: np.ndarray


def speech_tracks(track, config: SpeakConfig = SpeakConfig(), spans: Sequence | None = None) -> SpeechTracks:
    """AudioTrack (kyara.drive.audio) [+ espeak-ng phoneme spans] → unquantized SpeechTracks.

    With spans, the per-frame vowel classes come from the phoneme timings (exact for TTS) and the
    acoustic analysis only supplies loudness and pitch.
    """
    from kyara.drive.audio import mouth_track

    n, fps = len(track), track.fps
    if spans:
        probs = phoneme_vowel_probs(spans, n, fps)
        track = replace(track, vowel_probs=probs, vowel=probs.argmax(axis=1).astype(np.int64))
    mouth = dominant_mouth(dicts_to_layer(mouth_track(track, smoothing_s=config.mouth_smoothing_s)), config.mouth_levels)
    if config.emotion_timeline:
        timeline = load_emotion_timeline(config.emotion_timeline)
    else:
        timeline = EmotionTimeline.constant(config.emotion, config.emotion_intensity)
    times = frame_times(n, fps)
    emotion = timeline.layer(times)
    # How much the voice owns the mouth: 1 while speaking, fading out over ~0.3 s of silence.
    width = max(1, int(0.3 * fps))
    speaking = moving_average(np.asarray(track.loudness) > 0.15, width)
    poses = assemble_track(
        n, emotion=emotion, mouth=mouth, speech_activity=np.clip(speaking * 2.0, 0.0, 1.0),
        idle=idle_layer(n, fps, config.seed),
        motion=[voice_head_layer(track.loudness, track.pitch_hz, fps, config.seed, config.head_motion)])
    body_poses = poses.copy()
    body_poses[:, FACE_ALL] = assemble_track(n, emotion=emotion)[:, FACE_ALL]
    return SpeechTracks(poses, body_poses)


def default_output(audio_path: Path | None, character_name: str) -> Path:
    """talk output name: the audio's stem, or '<character>_speech' for text, as .mp4 in the cwd."""
    stem = audio_path.stem if audio_path is not None else f"{character_name}_speech"
    return Path(f"{stem}.mp4")


def speak(character, audio_path: str | Path | None = None, text: str | None = None, output: str | Path | None = None,
          config: SpeakConfig = SpeakConfig(), device: str | None = "cpu", progress: bool = True,
          stats: RenderStats | None = None) -> Path:
    """Render a talking video and return its path.

    character: a Character (or anything with ``name`` and ``render(poses (N,45)) → (N,4,512,512)``)
    or a path to a .kyara file / image. Exactly one of audio_path (any format ffmpeg or soundfile
    reads; resampled as needed) or text (spoken by espeak-ng with config.voice). output: .mp4 (H.264
    + audio), .webm (VP9 with alpha + audio), .gif, .webp, or a directory / %d pattern for PNGs.
    stats, if given, is filled with frame and unique-pose counts and render time.

    Students on the CPU render with ``render_track_fast`` (unquantized poses; body network at
    keyframes on the character's pixels only; ~45 dB PSNR against the full render);
    config.exact renders every frame's exact pose with the full student (the slow reference).
    """
    from tqdm import tqdm

    from kyara.drive.audio import analyze, load_audio
    from kyara.render.video import open_writer

    if (audio_path is None) == (text is None):
        raise KyaraError("speak needs exactly one of an audio file or a text")
    if config.fps <= 0 or config.fps > 120:
        raise KyaraError(f"fps must be in (0, 120], got {config.fps}")
    background = parse_color(config.background) if config.background is not None else None
    if not hasattr(character, "render"):  # a path: a .kyara file / THA4 directory (student) or an image (teacher: slow)
        from kyara.character import load

        character = load(character, device=device)
    name = getattr(character, "name", "character")
    output = Path(output) if output is not None else default_output(Path(audio_path) if audio_path else None, name)

    with tempfile.TemporaryDirectory(prefix="kyara-speak-") as tmp:
        spans = None
        if text is not None:
            from kyara.drive.tts import speak_to_wav

            audio_path = Path(tmp) / "speech.wav"
            spans = speak_to_wav(text, audio_path, voice=config.voice, rate_wpm=config.rate_wpm)
        audio_path = Path(audio_path)
        samples, sample_rate = load_audio(audio_path)
        check_speech_length(len(samples) / sample_rate, f"--text {text!r}" if text is not None else str(audio_path))
        track = analyze(samples, sample_rate, fps=config.fps)
        tracks = speech_tracks(track, config, spans)
        fast = not config.exact and config.split and supports_split(character) and character.device.type == "cpu"
        poses = tracks.poses if (config.exact or fast) else quantize_track(tracks.poses, config.quantize)

        stats = stats if stats is not None else RenderStats()
        carries_audio = output.suffix.lower() in AUDIO_FORMATS
        writer = open_writer(output, fps=config.fps, background=background,
                             audio=audio_path if carries_audio else None)
        split = SplitConfig(body_max_gap_s=config.body_max_gap_s, batch_size=config.batch_size)
        with tqdm(total=len(poses), unit="frame", desc=f"speak {output.name}", disable=not progress) as bar:
            if fast:
                # Frames come back already flattened onto the writer's background where it has one.
                flatten = getattr(writer, "flattens_onto", None)
                frames = render_track_fast(character, poses, tracks.body_poses, config.fps, FastConfig(split=split),
                                           stats=stats, progress=bar, background=flatten)
            elif config.split and not config.exact and supports_split(character):
                frames = render_track_split(character, poses, tracks.body_poses, config.fps, split, stats=stats,
                                            progress=bar)
            else:
                frames = render_track(character, poses, batch_size=config.batch_size, stats=stats, progress=bar)
            if fast and flatten is not None:
                with writer:
                    for rgb in frames:
                        writer.write_flat(rgb)
            else:
                writer.write_all(frames)
    return writer.path
