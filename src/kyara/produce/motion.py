"""Offline motion layers for produced videos: an emotion timeline and head motion that follows a voice.

Both return pose *layers*: (T, 45) float32 arrays in THA3 parameter order (``kyara.pose.NAMES``),
one row per video frame, meant to be added to the other layers and clamped (``assemble_track``).
Everything here is deterministic given its inputs and seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kyara.errors import KyaraError
from kyara.pose import HIGH, INDEX, LOW, NUM_PARAMETERS, PRESETS, Pose, PoseError

MOUTH_VOWEL_NAMES = ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")
MOUTH_VOWELS = np.array([INDEX[n] for n in MOUTH_VOWEL_NAMES])
EYE_CLOSING_NAMES = ("eye_wink_left", "eye_wink_right", "eye_happy_wink_left", "eye_happy_wink_right",
                     "eye_relaxed_left", "eye_relaxed_right")
EYE_CLOSING = np.array([INDEX[n] for n in EYE_CLOSING_NAMES])


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """(T,) float64 seconds of each frame's start."""
    return np.arange(int(n_frames), dtype=np.float64) / float(fps)


def eased_layer(times_s: np.ndarray, keys: Sequence[tuple[float, np.ndarray, float]]) -> np.ndarray:
    """times_s (T,) seconds; keys in time order: (start s, (45,) target, ease s) → (T, 45) float32 layer.

    From each key's start the layer eases (smoothstep over the key's ease time; 0: at once) toward its
    target, starting from where the previous segment actually got to (rest before the first key).
    """
    out = np.zeros((len(times_s), NUM_PARAMETERS), dtype=np.float32)
    current = np.zeros(NUM_PARAMETERS, dtype=np.float32)
    for i, (start, target, ease) in enumerate(keys):
        end = keys[i + 1][0] if i + 1 < len(keys) else np.inf
        inside = (times_s >= start) & (times_s < end)
        w = smoothstep((times_s[inside] - start) / ease) if ease > 0 else np.ones(inside.sum())
        out[inside] = (1.0 - w)[:, None] * current + w[:, None] * target
        if np.isfinite(end):
            w_end = float(smoothstep(np.array((end - start) / ease))) if ease > 0 else 1.0
            current = (1.0 - w_end) * current + w_end * target
    return out


# -- emotion timeline -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmotionKey:
    """From time_s on, the character shows `preset` at `intensity` (reached after the fade)."""
    time_s: float
    preset: str
    intensity: float = 1.0


@dataclass(frozen=True)
class EmotionTimeline:
    """Presets blended over time: each key cross-fades from the previous expression over fade_s."""
    keys: tuple[EmotionKey, ...]
    fade_s: float = 0.4

    def __post_init__(self) -> None:
        for k in self.keys:
            if k.preset not in PRESETS:
                raise PoseError(f"unknown emotion {k.preset!r}; choose one of: {', '.join(PRESETS)}")
            if not 0.0 <= k.intensity <= 1.0:
                raise PoseError(f"emotion {k.preset!r}: intensity must be in [0, 1], got {k.intensity}")
        times = [k.time_s for k in self.keys]
        if times != sorted(times):
            raise PoseError("emotion keys must be in time order")

    @classmethod
    def constant(cls, preset: str | None, intensity: float = 1.0) -> "EmotionTimeline":
        return cls((EmotionKey(0.0, preset, float(intensity)),) if preset else ())

    def layer(self, times_s: np.ndarray) -> np.ndarray:
        """times_s (T,) seconds → (T, 45) float32 expression layer (preset values × intensity)."""
        # The very first key starts at full strength when it is at t=0 (no fade-in from neutral).
        return eased_layer(times_s, [(k.time_s, Pose.preset(k.preset, k.intensity).vector,
                                      self.fade_s if (i > 0 or k.time_s > 0) else 0.0)
                                     for i, k in enumerate(self.keys)])


def load_emotion_timeline(path: str | Path, fade_s: float = 0.4) -> EmotionTimeline:
    """YAML/JSON: a list of ``{t: seconds, emotion: preset, intensity: 0..1}``, or a mapping with
    ``fade_s`` and ``keys: [...]``. Errors name the file and the entry."""
    import yaml

    from kyara.errors import describe_yaml_error

    path = Path(path)
    if path.is_dir():
        raise KyaraError(f"{path}: is a folder; the emotion timeline must be a YAML file")
    if not path.is_file():
        raise KyaraError(f"emotion timeline not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KyaraError(f"{path}: not a text file (an emotion timeline is YAML)") from None
    except yaml.YAMLError as e:
        raise KyaraError(f"{path}: invalid YAML: {describe_yaml_error(e)}") from None
    if isinstance(data, Mapping):
        fade = data.get("fade_s", fade_s)
        if isinstance(fade, bool) or not isinstance(fade, (int, float)) or not 0 <= fade < 60:
            raise KyaraError(f"{path}: fade_s must be a number of seconds in [0, 60), got {fade!r}")
        fade_s = float(fade)
        data = data.get("keys")
    if not isinstance(data, list) or not data:
        raise KyaraError(f"{path}: expected a list of {{t, emotion, intensity}} entries (or keys: [...])")
    keys = tuple(parse_emotion_key(item, f"{path}: entry #{i}") for i, item in enumerate(data))
    try:
        return EmotionTimeline(keys, fade_s=fade_s)
    except PoseError as e:
        raise KyaraError(f"{path}: {e}") from None


def parse_emotion_key(item: object, where: str) -> EmotionKey:
    if not isinstance(item, Mapping):
        raise KyaraError(f"{where}: expected a mapping like {{t: 1.5, emotion: happy, intensity: 0.8}}")
    unknown = set(item) - {"t", "emotion", "preset", "intensity"}
    if unknown:
        raise KyaraError(f"{where}: unknown key {sorted(unknown)[0]!r} (use t, emotion, intensity)")
    name = item.get("emotion", item.get("preset"))
    if name is None:
        raise KyaraError(f"{where}: missing 'emotion'")
    numbers = {}
    for key, default in (("t", 0.0), ("intensity", 1.0)):
        value = item.get(key, default)
        # float() would take YAML's '1.5' (a string) and true (a bool): refuse what is not written as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise KyaraError(f"{where}: {key} must be a number, got {value!r}")
        numbers[key] = float(value)
    try:
        return EmotionKey(numbers["t"], str(name), numbers["intensity"])
    except (TypeError, ValueError) as e:
        raise KyaraError(f"{where}: {e}") from None


# -- head motion that follows the voice -------------------------------------------------------------
@dataclass(frozen=True)
class HeadMotionConfig:
    """Amplitudes are in pose units (head angles: 1.0 ≈ 15°)."""
    nod_depth: float = 0.22           # head_x dip on the strongest stressed syllable
    nod_duration_s: float = 0.45      # length of one nod (down and back)
    min_stress_gap_s: float = 1.0     # at most one nod per this interval (people do not nod every syllable)
    stress_threshold: float = 0.12    # loudness rise (0..1 units over ~60 ms) that counts as stress
    pitch_lift: float = 0.05          # head_x per semitone above the speaker's median pitch
    pitch_lift_max: float = 0.25
    sway_yaw: float = 0.18            # slow head_y sway amplitude while speaking
    sway_roll: float = 0.10           # slow neck_z sway amplitude while speaking
    idle_sway_fraction: float = 0.35  # sway left when silent, as a fraction of the speaking sway
    body_follow: float = 0.4          # body_y / body_z follow the head by this fraction
    smoothing_s: float = 0.12


def _smooth(x: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """Zero-phase exponential smoothing (forward then backward) of a (T,) or (T, K) array."""
    if seconds <= 0 or len(x) < 2:
        return x.astype(np.float32)
    a = 1.0 - np.exp(-1.0 / (fps * seconds))
    y = np.array(x, dtype=np.float64)
    for t in range(1, len(y)):             # forward pass
        y[t] = y[t - 1] + a * (y[t] - y[t - 1])
    for t in range(len(y) - 2, -1, -1):    # backward pass cancels the lag
        y[t] = y[t + 1] + a * (y[t] - y[t + 1])
    return y.astype(np.float32)


def stress_times(loudness: np.ndarray, fps: float, config: HeadMotionConfig = HeadMotionConfig()) -> list[tuple[int, float]]:
    """Stressed syllables as (frame, strength in (0, 1]): frames where loudness rises sharply.

    loudness: (T,) in [0, 1]. A frame qualifies when the rise over the last ~60 ms exceeds the
    threshold and it is the largest rise within min_stress_gap_s (greedy, strongest first).
    """
    lag = max(1, int(round(0.06 * fps)))
    rise = np.zeros_like(loudness, dtype=np.float32)
    rise[lag:] = loudness[lag:] - loudness[:-lag]
    candidates = np.flatnonzero(rise > config.stress_threshold)
    gap = max(1, int(round(config.min_stress_gap_s * fps)))
    chosen: list[tuple[int, float]] = []
    taken = np.zeros(len(loudness), dtype=bool)
    for t in candidates[np.argsort(-rise[candidates])]:
        if taken[max(0, t - gap):t + gap + 1].any():
            continue
        taken[t] = True
        chosen.append((int(t), float(rise[t])))
    if not chosen:
        return []
    top = max(s for _, s in chosen)
    return sorted((t, s / top) for t, s in chosen)


def voice_head_layer(loudness: np.ndarray, pitch_hz: np.ndarray, fps: float, seed: int = 0,
                     config: HeadMotionConfig = HeadMotionConfig()) -> np.ndarray:
    """Head and body motion driven by a voice → (T, 45) float32 layer (only head_x, head_y, neck_z,
    body_y, body_z are non-zero).

    loudness: (T,) in [0, 1]; pitch_hz: (T,) Hz, 0 where unvoiced. Nods (head_x dips) on stressed
    syllables, a slight lift on high pitch, and a slow random sway whose amplitude grows while speaking.
    """
    T = len(loudness)
    loudness = np.asarray(loudness, dtype=np.float32)
    pitch_hz = np.asarray(pitch_hz, dtype=np.float32)
    times = frame_times(T, fps)
    layer = np.zeros((T, NUM_PARAMETERS), dtype=np.float32)
    if T == 0:
        return layer

    # Nods: a raised-cosine dip starting just before each stressed syllable's peak.
    head_x = np.zeros(T, dtype=np.float32)
    n = max(2, int(round(config.nod_duration_s * fps)))
    shape = 0.5 - 0.5 * np.cos(np.linspace(0.0, 2.0 * np.pi, n, dtype=np.float32))
    for t, strength in stress_times(loudness, fps, config):
        start = max(0, t - n // 3)
        seg = shape[: T - start]
        head_x[start:start + len(seg)] -= config.nod_depth * strength * seg

    # Pitch: semitones above the speaker's median voiced pitch lift the head a little.
    voiced = pitch_hz > 0
    if voiced.sum() >= 3:
        median = float(np.median(pitch_hz[voiced]))
        semitones = np.where(voiced, 12.0 * np.log2(np.maximum(pitch_hz, 1.0) / median), 0.0)
        lift = np.clip(semitones * config.pitch_lift, -config.pitch_lift_max, config.pitch_lift_max)
        head_x += _smooth(lift.astype(np.float32), fps, 0.25)

    # Sway: sums of slow sinusoids with random phases; louder speech sways more.
    rng = np.random.default_rng(seed)
    activity = _smooth(np.clip(loudness * 2.5, 0.0, 1.0), fps, 0.6)
    amplitude = config.idle_sway_fraction + (1.0 - config.idle_sway_fraction) * activity

    def slow_noise() -> np.ndarray:
        freqs = rng.uniform(0.08, 0.35, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = np.array([0.55, 0.3, 0.15])
        return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * times[None] + phases[:, None])).sum(0)

    head_y = config.sway_yaw * amplitude * slow_noise()
    neck_z = config.sway_roll * amplitude * slow_noise()
    head_x = _smooth(head_x, fps, config.smoothing_s * 0.5)

    layer[:, INDEX["head_x"]] = head_x
    layer[:, INDEX["head_y"]] = head_y
    layer[:, INDEX["neck_z"]] = neck_z
    layer[:, INDEX["body_y"]] = config.body_follow * head_y
    layer[:, INDEX["body_z"]] = config.body_follow * neck_z
    return layer


# -- input checks and helpers ----------------------------------------------------------------------
MIN_SPEECH_S = 0.1   # shorter audio holds no syllable to animate (espeak-ng says "?" in 8 ms of silence)


def check_speech_length(seconds: float, source: str) -> None:
    """Refuse speech too short to animate with one line naming its source (a file, or --text '...')."""
    if not seconds >= MIN_SPEECH_S:
        hint = "; give it words to speak" if source.startswith("--text") else ""
        raise KyaraError(f"{source}: {seconds:.3f} s of speech is too short to animate (kyara speak needs at least "
                         f"{MIN_SPEECH_S:g} s){hint}")


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of a (T,) series with zero padding, always T long (np.convolve's "same"
    mode returns max(T, width) values, which broke tracks shorter than the window)."""
    x = np.asarray(x, dtype=np.float32)
    width = max(1, int(width))
    full = np.convolve(x, np.ones(width, dtype=np.float32) / width, mode="full")
    start = (width - 1) // 2
    return full[start:start + len(x)]


def _check_layer(name: str, layer: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if layer is not None and np.shape(layer) != shape:
        raise ValueError(f"assemble_track: the {name} layer has shape {np.shape(layer)}, expected {shape}")


# -- combining layers -------------------------------------------------------------------------------
def assemble_track(n_frames: int, emotion: np.ndarray | None = None, mouth: np.ndarray | None = None,
                   speech_activity: np.ndarray | None = None, idle: np.ndarray | None = None,
                   motion: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Combine layers into the final (T, 45) float32 pose track, clamped to each parameter's range.

    emotion: (T, 45) expression layer. mouth: (T, 45) speech mouth layer (vowel shapes).
    speech_activity: (T,) in [0, 1]; while speaking, the emotion's own vowel shapes fade out so the
    lips follow the speech (its mouth corners, smirk and delta stay). idle: (T, 45) blinks and
    breathing; blinks are scaled down by how closed the emotion already keeps the eyes. motion:
    further additive layers (head motion, look-at).
    """
    T = int(n_frames)
    if T < 1:
        raise KyaraError(f"nothing to animate: the track has {T} frames")
    for name, layer in (("emotion", emotion), ("mouth", mouth), ("idle", idle), *(("motion", m) for m in motion)):
        _check_layer(name, layer, (T, NUM_PARAMETERS))
    _check_layer("speech_activity", speech_activity, (T,))
    track = np.zeros((T, NUM_PARAMETERS), dtype=np.float32)
    if emotion is not None:
        track += emotion
    if mouth is not None:
        keep = 1.0 - (np.clip(speech_activity, 0.0, 1.0) if speech_activity is not None else np.ones(T))
        track[:, MOUTH_VOWELS] *= keep[:, None].astype(np.float32)
        track += mouth
    if idle is not None:
        idle = idle.copy()
        eyes_closed = np.clip(track[:, EYE_CLOSING].max(axis=1), 0.0, 1.0)
        idle[:, EYE_CLOSING] *= (1.0 - eyes_closed)[:, None]
        track += idle
    for layer in motion:
        track += layer
    return np.clip(track, LOW, HIGH)


def dicts_to_layer(rows: Sequence[Mapping[str, float]]) -> np.ndarray:
    """A list of per-frame {parameter: value} dicts → (T, 45) float32 (unnamed parameters 0)."""
    layer = np.zeros((len(rows), NUM_PARAMETERS), dtype=np.float32)
    for t, row in enumerate(rows):
        for name, value in row.items():
            if name not in INDEX:
                raise PoseError(f"unknown pose parameter {name!r} in a motion layer")
            layer[t, INDEX[name]] = value
    return layer


def dominant_mouth(layer: np.ndarray, levels: int = 4, switch_margin: float = 0.2) -> np.ndarray:
    """Anime-style mouth: one vowel shape at a time, its openness on `levels` steps (0 … 1).

    layer: (T, 45) with blended mouth_aaa … mouth_ooo values; returns a copy where each frame keeps
    only the dominant shape, carrying the summed openness rounded to the nearest of `levels`
    evenly spaced values. The dominant shape only changes when another one is larger by
    switch_margin (relative), so near-ties do not flicker. levels = 0 returns the layer unchanged.
    This bounds the number of distinct mouths (5 × (levels − 1) + closed), which is what makes
    rendering each distinct face once cheap.
    """
    if levels <= 0:
        return layer.copy()
    if levels < 2:
        raise ValueError(f"levels must be 0 (off) or >= 2, got {levels}")
    out = layer.copy()
    shapes = layer[:, MOUTH_VOWELS]                           # (T, 5)
    openness = np.clip(shapes.sum(axis=1), 0.0, 1.0)          # (T,)
    step = 1.0 / (levels - 1)
    current = -1
    out[:, MOUTH_VOWELS] = 0.0
    for t in range(len(layer)):
        best = int(shapes[t].argmax())
        if current < 0 or shapes[t, best] > (1.0 + switch_margin) * shapes[t, current]:
            current = best
        level = np.round(openness[t] / step) * step
        if level > 0:
            out[t, MOUTH_VOWELS[current]] = level
    return out
