"""Several characters from a scene file → one video, with their audio tracks mixed.

The scene file (YAML; schema and example in docs/produce.md and examples/scene.yaml) places each
character on a background, gives it an audio track and/or a pose script, and the job turns whoever
is speaking toward the nearest other character (head, body and eyes) while listeners glance back.
Errors in the file name the file and the line (from YAML node marks).
"""
from __future__ import annotations

import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from kyara.errors import KyaraError
from kyara.pose import FACE_ALL, INDEX, NUM_PARAMETERS, Pose, PoseError
from kyara.produce.frames import (QuantizeConfig, RenderStats, SplitConfig, quantize_track, render_track,
                                  render_track_split, supports_split)
from kyara.produce.motion import (EmotionKey, EmotionTimeline, HeadMotionConfig, assemble_track, dicts_to_layer,
                                  dominant_mouth, eased_layer, frame_times, voice_head_layer)

# Positive head_y / body_y / iris_rotation_y turn the character toward the left of the screen
# (measured on the THA3 teacher: +1 head_y moves the irises ~5 px left at 512 px).
SCREEN_LEFT_SIGN = 1.0
SPEAKER_TURN = {"head_y": 0.45, "body_y": 0.25, "iris_rotation_y": 0.6}
LISTENER_TURN = {"head_y": 0.25, "body_y": 0.1, "iris_rotation_y": 0.5}
TURN_SMOOTHING_S = 0.35
SPEAKING_LOUDNESS = 0.15
MIX_RATE = 48000
EVENTS = ("nod", "shake", "blink")
MOUTH_LEVELS = 4           # as SpeakConfig.mouth_levels


class SceneError(KyaraError):
    """A scene file is invalid; the message is '<file>:<line>: what is wrong'."""


# -- YAML with line numbers -------------------------------------------------------------------------
class _Map(dict):
    """A mapping from the scene file; .line is its first line, .lines[key] the line of each value."""
    line: int = 0
    lines: dict


class _Seq(list):
    line: int = 0
    lines: list


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        out = _Map(super().construct_mapping(node, deep=True))
        out.line = node.start_mark.line + 1
        out.lines = {self.construct_object(k, deep=True): v.start_mark.line + 1 for k, v in node.value}
        return out

    def construct_sequence(self, node, deep=False):
        out = _Seq(super().construct_sequence(node, deep=True))
        out.line = node.start_mark.line + 1
        out.lines = [v.start_mark.line + 1 for v in node.value]
        return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence)


# -- the scene model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScriptKey:
    """From time_s, ease toward this pose (preset × intensity, with pose overrides) over ease_s."""
    time_s: float
    pose: Pose
    ease_s: float = 0.4


@dataclass(frozen=True)
class ScriptEvent:
    time_s: float
    name: str            # one of EVENTS
    strength: float = 1.0


@dataclass(frozen=True)
class SceneCharacter:
    name: str
    file: Path
    center_x: float       # fraction of the canvas width
    bottom_y: float       # fraction of the canvas height where the frame's bottom edge sits
    scale: float
    audio: Path | None
    audio_start_s: float
    emotion: EmotionTimeline
    script: tuple[ScriptKey, ...]
    events: tuple[ScriptEvent, ...]
    line: int


@dataclass(frozen=True)
class Scene:
    path: Path
    width: int
    height: int
    fps: float
    background: str | None      # colour string or image path (resolved), None = transparent
    duration_s: float | None
    characters: tuple[SceneCharacter, ...]
    seed: int = 0
    batch_size: int = 4
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)


def _fail(path: Path, line: int, message: str) -> SceneError:
    return SceneError(f"{path}:{line}: {message}")


def _number(path, m: _Map, key: str, default, low=None, high=None) -> float:
    if key not in m:
        return default
    try:
        v = float(m[key])
    except (TypeError, ValueError):
        raise _fail(path, m.lines[key], f"'{key}' must be a number, got {m[key]!r}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise _fail(path, m.lines[key], f"'{key}' = {v:g} is outside [{low}, {high}]")
    return v


def _pair(path, m: _Map, key: str, default: tuple[float, float]) -> tuple[float, float]:
    if key not in m:
        return default
    v = m[key]
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, (int, float)) for x in v):
        raise _fail(path, m.lines[key], f"'{key}' must be a pair of numbers like [0.3, 1.0], got {v!r}")
    return float(v[0]), float(v[1])


def _check_keys(path, m: _Map, allowed: set[str], what: str) -> None:
    for k in m:
        if k not in allowed:
            raise _fail(path, m.lines[k], f"unknown key {k!r} in {what} (allowed: {', '.join(sorted(allowed))})")


# Built-in names a character's `file:` may use instead of a path: the bundled sample's student.
BUNDLED_CHARACTERS = ("sample",)


def _bundled_character(name: str) -> Path:
    from kyara.character import SAMPLE_CHARACTER

    return {"sample": SAMPLE_CHARACTER}[name]


def _confined_path(path: Path, m: _Map, key: str, value: str) -> Path:
    """Resolve a path from the scene file: it must stay inside the scene's folder (symlinks
    resolved) or the bundled data, so a shared scene file cannot read arbitrary files."""
    from kyara.character import DATA_DIR

    folder = path.parent.resolve()
    file = (folder / value).resolve()         # an absolute value replaces folder here
    if not any(file.is_relative_to(root) for root in (folder, DATA_DIR.resolve())):
        raise _fail(path, m.lines[key], f"'{key}' path escapes the scene's folder: {value} "
                    f"(paths must stay inside {folder})")
    return file


def _existing_file(path: Path, m: _Map, key: str) -> Path:
    value = m[key]
    if not isinstance(value, str) or not value:
        raise _fail(path, m.lines[key], f"'{key}' must be a file path")
    if key == "file" and value in BUNDLED_CHARACTERS:
        return _bundled_character(value)
    file = _confined_path(path, m, key, value)
    if not file.exists():
        label = "character" if key == "file" else key
        raise _fail(path, m.lines[key], f"{label} file not found: {value} (looked in {file.parent})")
    return file


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _parse_background(path: Path, data: _Map) -> str | None:
    """'background' → None (transparent), a colour string, or a confined image path (as a string)."""
    from kyara.image import ImageError, parse_color

    value = data.get("background", "white")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(path, data.lines["background"], "'background' must be a colour ('#rrggbb', 'green', "
                    "'transparent') or an image file")
    # Colours never contain a slash or a dot, so such a value is a path (checked as one, never parsed as a colour).
    if any(ch in value for ch in "/\\.") or Path(value).suffix:
        if Path(value).suffix.lower() not in IMAGE_SUFFIXES:
            _confined_path(path, data, "background", value)
            raise _fail(path, data.lines["background"], f"'background' image must be one of "
                        f"{', '.join(IMAGE_SUFFIXES)}, got {value}")
        return str(_existing_file(path, data, "background"))
    try:
        parse_color(value)
    except ImageError as e:
        raise _fail(path, data.lines["background"], f"'background': {e}") from None
    return None if value.strip().lower() == "transparent" else value


def _parse_emotion(path, c: _Map) -> EmotionTimeline:
    if "emotion" not in c:
        return EmotionTimeline(())
    value, line = c["emotion"], c.lines["emotion"]
    try:
        if isinstance(value, str):
            return EmotionTimeline.constant(value, _number(path, c, "emotion_intensity", 1.0, 0, 1))
        if isinstance(value, list):
            keys = []
            for item, item_line in zip(value, value.lines):
                if not isinstance(item, dict) or "emotion" not in item:
                    raise _fail(path, item_line, "emotion entries look like {t: 1.0, emotion: happy, intensity: 0.8}")
                keys.append(EmotionKey(float(item.get("t", 0.0)), str(item["emotion"]), float(item.get("intensity", 1.0))))
            return EmotionTimeline(tuple(keys))
    except (PoseError, TypeError, ValueError) as e:
        raise _fail(path, line, str(e)) from None
    raise _fail(path, line, "'emotion' must be a preset name or a list of {t, emotion, intensity}")


def _parse_script(path, c: _Map) -> tuple[tuple[ScriptKey, ...], tuple[ScriptEvent, ...]]:
    if "script" not in c:
        return (), ()
    items = c["script"]
    if not isinstance(items, list):
        raise _fail(path, c.lines["script"], "'script' must be a list of {t: ..., preset/pose/event: ...}")
    keys, events = [], []
    for item, line in zip(items, items.lines):
        if not isinstance(item, dict):
            raise _fail(path, line, "each script entry must be a mapping with 't'")
        _check_keys(path, item, {"t", "preset", "intensity", "pose", "event", "ease", "strength"}, "a script entry")
        t = _number(path, item, "t", None, 0)
        if t is None:
            raise _fail(path, line, "script entry needs 't' (seconds)")
        try:
            if "event" in item:
                if item["event"] not in EVENTS:
                    raise _fail(path, item.lines["event"], f"unknown event {item['event']!r}; choose one of {', '.join(EVENTS)}")
                events.append(ScriptEvent(t, item["event"], _number(path, item, "strength", 1.0, 0, 2)))
                continue
            pose = Pose()
            if "preset" in item:
                pose = Pose.preset(str(item["preset"]), _number(path, item, "intensity", 1.0, 0, 1))
            if "pose" in item:
                if not isinstance(item["pose"], dict):
                    raise _fail(path, item.lines["pose"], "'pose' must be a mapping of parameter names to values")
                pose = pose.replace(**{str(k): v for k, v in item["pose"].items()})
            keys.append(ScriptKey(t, pose, _number(path, item, "ease", 0.4, 0, 10)))
        except PoseError as e:
            raise _fail(path, line, str(e)) from None
    if [k.time_s for k in keys] != sorted(k.time_s for k in keys):
        raise _fail(path, items.line, "script keyframes must be in time order")
    return tuple(keys), tuple(events)


def load_scene(path: str | Path) -> Scene:
    """Parse and validate a scene file; every referenced file must exist (errors name file:line)."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"scene file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SceneError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, _Map):
        raise SceneError(f"{path}:1: a scene file is a mapping with 'characters' (see docs/produce.md)")
    _check_keys(path, data, {"fps", "size", "background", "duration", "characters", "seed", "batch_size"}, "the scene")
    width, height = _pair(path, data, "size", (1280.0, 720.0))
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise _fail(path, data.lines["size"], f"size {width:g}×{height:g} is outside 16..7680 × 16..4320")
    background = _parse_background(path, data)
    chars = data.get("characters")
    if not isinstance(chars, list) or not chars:
        raise _fail(path, data.lines.get("characters", data.line), "'characters' must be a non-empty list")
    characters = []
    for c, line in zip(chars, chars.lines):
        if not isinstance(c, _Map):
            raise _fail(path, line, "each character must be a mapping with at least 'file'")
        _check_keys(path, c, {"name", "file", "position", "scale", "audio", "audio_start", "emotion",
                              "emotion_intensity", "script"}, "a character")
        if "file" not in c:
            raise _fail(path, c.line, "character needs 'file' (a .kyara file)")
        file = _existing_file(path, c, "file")
        audio = _existing_file(path, c, "audio") if "audio" in c else None
        x, y = _pair(path, c, "position", (0.5, 1.0))
        keys, events = _parse_script(path, c)
        characters.append(SceneCharacter(
            name=str(c.get("name", file.stem)), file=file, center_x=x, bottom_y=y,
            scale=_number(path, c, "scale", 1.0, 0.05, 8.0), audio=audio,
            audio_start_s=_number(path, c, "audio_start", 0.0, 0.0), emotion=_parse_emotion(path, c),
            script=keys, events=events, line=c.line))
    duration = _number(path, data, "duration", None, 0.04, 3600)
    if duration is None and not any(c.audio or c.script or c.events for c in characters):
        raise _fail(path, data.line, "give 'duration', an audio track or a script: the scene length is unknown")
    return Scene(path=path, width=int(width), height=int(height), fps=_number(path, data, "fps", 30.0, 1, 120),
                 background=background, duration_s=duration,
                 characters=tuple(characters), seed=int(data.get("seed", 0)),
                 batch_size=int(_number(path, data, "batch_size", 4, 1, 64)))


# -- building each character's pose track -----------------------------------------------------------
def script_layer(keys: tuple[ScriptKey, ...], times_s: np.ndarray) -> np.ndarray:
    """(T,) times → (T, 45) pose layer easing from key to key (starting from rest)."""
    return eased_layer(times_s, [(k.time_s, k.pose.vector, k.ease_s) for k in keys])


def event_layer(events: tuple[ScriptEvent, ...], times_s: np.ndarray) -> np.ndarray:
    """Short additive clips: nod (head dips, 0.5 s), shake (head turns twice, 0.8 s), blink (0.15 s)."""
    out = np.zeros((len(times_s), NUM_PARAMETERS), dtype=np.float32)
    for ev in events:
        if ev.name == "nod":
            u = (times_s - ev.time_s) / 0.5
            out[:, INDEX["head_x"]] -= 0.4 * ev.strength * np.where((u >= 0) & (u <= 1), np.sin(np.pi * u), 0)
        elif ev.name == "shake":
            u = (times_s - ev.time_s) / 0.8
            out[:, INDEX["head_y"]] += 0.4 * ev.strength * np.where((u >= 0) & (u <= 1), np.sin(4 * np.pi * u), 0)
        elif ev.name == "blink":
            u = (times_s - ev.time_s) / 0.15
            v = np.where((u >= 0) & (u <= 1), np.sin(np.pi * u), 0)
            out[:, INDEX["eye_wink_left"]] += v
            out[:, INDEX["eye_wink_right"]] += v
    return out


def _smooth_box(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1:
        return x
    return np.convolve(np.pad(x, (n // 2, n - 1 - n // 2), mode="edge"), np.ones(n) / n, mode="valid")


def look_at_layers(speaking: np.ndarray, center_x: np.ndarray, fps: float) -> list[np.ndarray]:
    """speaking (C, T) in [0, 1]; center_x (C,) canvas x → per character (T, 45) turn layers.

    The loudest speaker turns toward the nearest other character; everyone else glances at the
    loudest speaker. Direction: toward the left of the screen is SCREEN_LEFT_SIGN.
    """
    C, T = speaking.shape
    layers = [np.zeros((T, NUM_PARAMETERS), dtype=np.float32) for _ in range(C)]
    if C < 2:
        return layers
    loudest = speaking.argmax(axis=0)                      # (T,)
    active = speaking.max(axis=0) > 0.5                    # (T,)
    n = max(1, int(TURN_SMOOTHING_S * fps))
    for c in range(C):
        others = [o for o in range(C) if o != c]
        nearest = min(others, key=lambda o: abs(center_x[o] - center_x[c]))
        to_nearest = SCREEN_LEFT_SIGN * np.sign(center_x[c] - center_x[nearest])
        is_speaker = active & (loudest == c)
        target_x = center_x[loudest]
        to_speaker = SCREEN_LEFT_SIGN * np.sign(center_x[c] - target_x)
        is_listener = active & (loudest != c)
        for name in SPEAKER_TURN:
            raw = is_speaker * to_nearest * SPEAKER_TURN[name] + is_listener * to_speaker * LISTENER_TURN[name]
            layers[c][:, INDEX[name]] = _smooth_box(raw.astype(np.float32), n)
    return layers


def mix_audio(scene: Scene, n_frames: int, out_path: Path) -> Path | None:
    """Mix every character's audio (placed at audio_start) into one 16-bit mono WAV; None if none."""
    from kyara.drive.audio import load_audio

    if all(c.audio is None for c in scene.characters):
        return None
    total = int(np.ceil(n_frames / scene.fps * MIX_RATE))
    mix = np.zeros(total, dtype=np.float32)
    for c in scene.characters:
        if c.audio is not None:
            samples, _ = load_audio(c.audio, MIX_RATE)
            start = int(round(c.audio_start_s * MIX_RATE))
            seg = samples[: max(0, total - start)]
            mix[start:start + len(seg)] += seg
    peak = float(np.abs(mix).max())
    if peak > 1.0:
        mix /= peak          # overlapping voices: scale down rather than clip
    with wave.open(str(out_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIX_RATE)
        w.writeframes((mix * 32767).astype("<i2").tobytes())
    return out_path


def scene_tracks(scene: Scene) -> tuple[int, list]:
    """→ (T frames, per character SpeechTracks: (T, 45) unquantized poses and body-network poses)."""
    from kyara.drive.audio import analyze, load_audio, mouth_track
    from kyara.produce.speak import SpeechTracks, idle_layer

    fps = scene.fps
    audio_tracks = {}
    end_s = 0.0
    for i, c in enumerate(scene.characters):
        if c.audio is not None:
            samples, sr = load_audio(c.audio)
            audio_tracks[i] = analyze(samples, sr, fps)
            end_s = max(end_s, c.audio_start_s + audio_tracks[i].duration_s)
        if c.script:
            end_s = max(end_s, c.script[-1].time_s + c.script[-1].ease_s + 0.5)
        if c.events:
            end_s = max(end_s, max(e.time_s for e in c.events) + 1.0)
    duration = scene.duration_s if scene.duration_s is not None else end_s
    T = max(1, int(np.ceil(duration * fps - 1e-9)))
    times = frame_times(T, fps)

    mouths, loud, pitch = [], np.zeros((len(scene.characters), T), np.float32), np.zeros((len(scene.characters), T), np.float32)
    for i, c in enumerate(scene.characters):
        mouth = np.zeros((T, NUM_PARAMETERS), np.float32)
        if i in audio_tracks:
            tr = audio_tracks[i]
            offset = int(round(c.audio_start_s * fps))
            m = dominant_mouth(dicts_to_layer(mouth_track(tr)), MOUTH_LEVELS)
            n = max(0, min(len(tr), T - offset))
            mouth[offset:offset + n] = m[:n]
            loud[i, offset:offset + n] = tr.loudness[:n]
            pitch[i, offset:offset + n] = tr.pitch_hz[:n]
        mouths.append(mouth)
    n_smooth = max(1, int(0.3 * fps))
    speaking = np.stack([np.clip(2.0 * _smooth_box((l > SPEAKING_LOUDNESS).astype(np.float32), n_smooth), 0, 1)
                         for l in loud])
    centers = np.array([c.center_x * scene.width for c in scene.characters])
    looks = look_at_layers(speaking, centers, fps)
    tracks = []
    for i, c in enumerate(scene.characters):
        head = voice_head_layer(loud[i], pitch[i], fps, scene.seed + i, HeadMotionConfig())
        expression = c.emotion.layer(times) + script_layer(c.script, times)
        poses = assemble_track(T, emotion=expression, mouth=mouths[i], speech_activity=speaking[i],
                               idle=idle_layer(T, fps, scene.seed + 100 + i),
                               motion=[head, looks[i], event_layer(c.events, times)])
        body_poses = poses.copy()
        body_poses[:, FACE_ALL] = assemble_track(T, emotion=expression)[:, FACE_ALL]
        tracks.append(SpeechTracks(poses, body_poses))
    return T, tracks


def render_scene(scene_path: str | Path, output: str | Path, characters: dict | None = None, device: str | None = "cpu",
                 progress: bool = True, stats: RenderStats | None = None, student: str = "full") -> Path:
    """Render a scene file to a video (.mp4 / .webm / .gif / .webp / PNG frames) → the output path.

    characters: optional {character file path (resolved) or name: Character} to use instead of
    loading the files (tests, or characters already in memory). student: auto | lite | full, the student
    renderer for loaded characters (kyara.student.lite.use_student).
    """
    from tqdm import tqdm

    from kyara.render.composite import Placement, compose, make_canvas
    from kyara.render.video import open_writer
    from kyara.character import load
    from kyara.student.lite import use_student

    scene = load_scene(scene_path)
    output = Path(output)
    loaded = []
    for c in scene.characters:
        given = (characters or {}).get(str(c.file)) or (characters or {}).get(c.name)
        try:
            loaded.append(given if given is not None else use_student(load(c.file, device=device), student))
        except KyaraError as e:
            raise SceneError(f"{scene.path}:{c.line}: character {c.name!r}: {e}") from None
    T, tracks = scene_tracks(scene)
    background = make_canvas(scene.width, scene.height, scene.background)
    stats = stats if stats is not None else RenderStats()
    streams = []
    for ch, tr in zip(loaded, tracks):
        poses = quantize_track(tr.poses, scene.quantize)
        if supports_split(ch):
            streams.append(render_track_split(ch, poses, tr.body_poses, scene.fps,
                                              SplitConfig(batch_size=scene.batch_size), stats))
        else:
            streams.append(render_track(ch, poses, scene.batch_size, stats))
    with tempfile.TemporaryDirectory(prefix="kyara-scene-") as tmp:
        audio = mix_audio(scene, T, Path(tmp) / "mix.wav") if output.suffix.lower() in (".mp4", ".webm") else None
        writer = open_writer(output, fps=scene.fps, background=None, audio=audio)
        # Characters further down the screen (larger bottom_y) are nearer the viewer: draw them last.
        order = sorted(range(len(loaded)), key=lambda i: (scene.characters[i].bottom_y, i))

        def frames():
            for _ in tqdm(range(T), unit="frame", desc=f"scene {output.name}", disable=not progress):
                rendered = [next(s) for s in streams]
                layers = []
                for i in order:
                    c = scene.characters[i]
                    frame = rendered[i]
                    # Scale is relative to a 512 px character frame, whatever size the poser emits.
                    place = Placement(c.center_x * scene.width, c.bottom_y * scene.height, c.scale * 512 / frame.shape[0])
                    layers.append((frame, place))
                yield compose(background, layers)

        writer.write_all(frames())
    return writer.path
