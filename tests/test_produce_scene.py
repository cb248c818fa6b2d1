"""kyara scene: schema errors name file and line; speakers turn toward listeners; video with mixed audio."""
from __future__ import annotations

import numpy as np
import pytest

from kyara.cli import main
from kyara.pose import INDEX
from kyara.produce.scene import SceneError, load_scene, look_at_layers, render_scene, scene_tracks
from kyara.render.video import read_audio, read_frames
from test_produce_fakes import FakeCharacter, vowel_like, write_wav


def scene_dir(tmp_path, body: str):
    (tmp_path / "a.kyara").write_bytes(b"x")
    (tmp_path / "b.kyara").write_bytes(b"x")
    write_wav(tmp_path / "a.wav", vowel_like(1.0, 16000), 16000)
    write_wav(tmp_path / "b.wav", vowel_like(1.0, 22050, f0=220), 22050)
    path = tmp_path / "scene.yaml"
    path.write_text(body)
    return path


TWO = """\
fps: 30
size: [320, 180]
background: "#102030"
characters:
  - name: aoi
    file: a.kyara
    position: [0.25, 1.0]
    scale: 0.3
    audio: a.wav
  - name: ren
    file: b.kyara
    position: [0.75, 1.0]
    scale: 0.3
    audio: b.wav
    audio_start: 1.0
    script:
      - {t: 0.0, preset: surprised, intensity: 0.5}
      - {t: 0.5, event: nod}
"""


def test_missing_character_names_file_and_line(tmp_path):
    path = scene_dir(tmp_path, TWO.replace("file: b.kyara", "file: nobody.kyara"))
    with pytest.raises(SceneError, match=r"scene\.yaml:11: character file not found: nobody\.kyara"):
        load_scene(path)
    assert main(["scene", str(path), "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2


def test_missing_audio_and_bad_values_name_the_line(tmp_path):
    with pytest.raises(SceneError, match=r"scene\.yaml:9: audio file not found: gone\.wav"):
        load_scene(scene_dir(tmp_path, TWO.replace("audio: a.wav", "audio: gone.wav")))
    with pytest.raises(SceneError, match=r"scene\.yaml:17: unknown preset 'surprize'"):
        load_scene(scene_dir(tmp_path, TWO.replace("preset: surprised", "preset: surprize")))
    with pytest.raises(SceneError, match=r"scene\.yaml:8: 'scale' must be a number"):
        load_scene(scene_dir(tmp_path, TWO.replace("scale: 0.3\n    audio: a.wav", "scale: big\n    audio: a.wav")))
    with pytest.raises(SceneError, match=r"scene\.yaml:7: unknown key 'positon'"):
        load_scene(scene_dir(tmp_path, TWO.replace("position: [0.25", "positon: [0.25")))
    with pytest.raises(SceneError, match=r"scene\.yaml:3: invalid YAML"):
        load_scene(scene_dir(tmp_path, "fps: 30\nsize: [1, 2\nbackground: x\n"))


def test_speaker_turns_toward_listener():
    speaking = np.zeros((2, 60))
    speaking[0, :30] = 1.0      # left character speaks first, then the right one
    speaking[1, 30:] = 1.0
    left, right = look_at_layers(speaking, np.array([100.0, 500.0]), fps=30.0)
    hy = INDEX["head_y"]
    # Positive head_y turns toward the screen's left (measured on THA3).
    assert left[10, hy] < -0.2 and right[10, hy] > 0.1      # speaker looks right, listener looks left
    assert right[50, hy] > 0.2 and left[50, hy] < -0.1
    assert left[10, INDEX["iris_rotation_y"]] < 0 and left[10, INDEX["body_y"]] < 0


def test_render_scene_mixes_audio(tmp_path):
    path = scene_dir(tmp_path, TWO)
    scene = load_scene(path)
    T, tracks = scene_tracks(scene)
    assert T == 60 and len(tracks) == 2
    assert tracks[1].poses[:20, INDEX["eye_surprised_left"]].max() > 0.3, "the script plays"
    chars = {"aoi": FakeCharacter("aoi", 32), "ren": FakeCharacter("ren", 32)}
    out = render_scene(path, tmp_path / "scene.mp4", characters=chars, progress=False)
    frames = read_frames(out)
    assert frames.shape == (60, 180, 320, 3)
    assert np.abs(frames[0, 5, 5].astype(int) - (0x10, 0x20, 0x30)).max() < 12, "background colour"
    audio = read_audio(out)
    assert abs(len(audio) / 16000 - 2.0) <= 1 / 30
    assert np.abs(audio[: 16000]).max() > 0.05 and np.abs(audio[16000 + 2000:]).max() > 0.05, "both voices mixed"


def test_example_scene_is_valid():
    """examples/scene.yaml loads as shipped: the bundled sample for both characters, voices beside it."""
    from pathlib import Path

    from kyara.character import SAMPLE_CHARACTER

    scene = load_scene(Path(__file__).resolve().parent.parent / "examples" / "scene.yaml")
    assert [c.name for c in scene.characters] == ["aoi", "ren"]
    assert all(c.file == SAMPLE_CHARACTER for c in scene.characters), "`file: sample` is the bundled student"
    assert all(c.audio is not None and c.audio.is_file() for c in scene.characters)
    assert len(scene.characters[1].script) == 2 and len(scene.characters[1].events) == 2


def test_paths_are_confined_to_the_scene_folder(tmp_path):
    show = tmp_path / "show"
    show.mkdir()
    (tmp_path / "outside.kyara").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (tmp_path / "outside.wav").write_bytes(b"x")
    escapes = {
        "file": ("file: b.kyara", "file: ../outside.kyara", 11),
        "file (absolute)": ("file: b.kyara", f"file: {tmp_path / 'outside.kyara'}", 11),
        "audio": ("audio: a.wav", "audio: ../outside.wav", 9),
        "background image": ('background: "#102030"', "background: ../outside.png", 3),
        "background non-image": ('background: "#102030"', "background: ../../../etc/passwd", 3),
        "background (absolute)": ('background: "#102030"', "background: /etc/passwd", 3),
    }
    for what, (old, new, line) in escapes.items():
        key = what.split(" ")[0]
        path = scene_dir(show, TWO.replace(old, new))
        with pytest.raises(SceneError, match=rf"scene\.yaml:{line}: '{key}' path escapes the scene's folder"):
            load_scene(path)
    # A symlink inside the folder that leads outside escapes too (paths are compared resolved).
    (show / "link.kyara").symlink_to(tmp_path / "outside.kyara")
    with pytest.raises(SceneError, match=r"scene\.yaml:11: 'file' path escapes"):
        load_scene(scene_dir(show, TWO.replace("file: b.kyara", "file: link.kyara")))


def test_path_escape_is_one_cli_line_naming_the_key(tmp_path, capsys):
    path = scene_dir(tmp_path, TWO.replace('background: "#102030"', "background: ../../secret"))
    assert main(["scene", str(path), "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'background' path escapes the scene's folder: ../../secret" in err
    assert "colour" not in err


def test_bad_background_colour_names_the_line(tmp_path):
    with pytest.raises(SceneError, match=r"scene\.yaml:3: 'background': cannot parse colour 'blurple'"):
        load_scene(scene_dir(tmp_path, TWO.replace('"#102030"', "blurple")))
    with pytest.raises(SceneError, match=r"scene\.yaml:3: 'background' image must be one of"):
        (tmp_path / "notes.txt").write_text("x")
        load_scene(scene_dir(tmp_path, TWO.replace('"#102030"', "notes.txt")))
    assert load_scene(scene_dir(tmp_path, TWO.replace('"#102030"', "transparent"))).background is None


def test_bundled_sample_and_bundled_data_are_allowed(tmp_path):
    from kyara.character import SAMPLE_CHARACTER

    scene = load_scene(scene_dir(tmp_path, TWO.replace("file: a.kyara", "file: sample")
                                 .replace("file: b.kyara", f"file: {SAMPLE_CHARACTER}")))
    assert [c.file for c in scene.characters] == [SAMPLE_CHARACTER, SAMPLE_CHARACTER.resolve()]
