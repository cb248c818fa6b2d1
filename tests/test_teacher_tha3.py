"""The THA3 teacher against the official tha3 0.1.9 package (the oracle), plus weight-file checks.

Oracle tests need the ``tha3`` package (see conftest.tha3_package). Its sample images are
non-commercial: they are read from the installed package at run time and never copied into the repo.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kyara.errors import KyaraError, WeightsError
from kyara.geometry import FACE_MORPHER_BOX
from kyara.image import load_image, save_image
from kyara.nn.blocks import Activation
from kyara.pose import HIGH, LOW, NUM_PARAMETERS
from kyara.teacher import TEACHERS, PreparedImage, Teacher, TeacherOutputs, load_teacher
from kyara.teacher import weights as tw
from kyara.teacher.tha3 import THA3, build_tha3

TOLERANCE = 1e-4          # max |Δ| in model space ([-1, 1])
ORACLE_IMAGES = ("crypko_00.png", "lambda_00.png")
ROLES = tuple(tw.FILE_NAMES)

# Analytic parameter counts (tha3-tha4-facts.md §3.6); the separable ones equal the official files'.
STANDARD_PARAMS = {"eyebrow_decomposer": 31_479_434, "eyebrow_combiner": 31_535_878, "face_morpher": 31_605_002,
                   "body_rotator": 32_662_276, "editor": 8_361_672}
SEPARABLE_PARAMS = {"eyebrow_decomposer": 3_319_982, "eyebrow_combiner": 3_325_370, "face_morpher": 3_335_201,
                    "body_rotator": 3_580_014, "editor": 942_328}


def random_poses(n: int, seed: int) -> torch.Tensor:
    """(n, 45) uniform over every parameter's full range."""
    g = torch.Generator().manual_seed(seed)
    low, high = torch.from_numpy(LOW), torch.from_numpy(HIGH)
    return low + (high - low) * torch.rand(n, NUM_PARAMETERS, generator=g)


# -- the oracle ------------------------------------------------------------------------------------------
def official_poser(tha3_package: Path, mode: str, model_dir: Path | None = None):
    """The package's own poser for `mode` (e.g. "separable_float"), loading files from `model_dir`."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # tha3's editor module imports pyplot
    import importlib

    module = importlib.import_module(f"tha3.poser.modes.{mode}")
    model_dir = model_dir or tha3_package / "data" / "models" / mode
    official_names = {"eyebrow_decomposer": "eyebrow_decomposer", "eyebrow_combiner": "eyebrow_morphing_combiner",
                      "face_morpher": "face_morpher", "body_rotator": "two_algo_face_body_rotator", "editor": "editor"}
    files = {official_names[role]: str(model_dir / name) for role, name in tw.FILE_NAMES.items()}
    return module.create_poser(torch.device("cpu"), module_file_names=files)


def official_outputs(poser, image: torch.Tensor, poses: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the official 29 outputs, face_morphed_full) for image (4, 512, 512) and poses (N, 45)."""
    batch = [image.unsqueeze(0).expand(poses.shape[0], -1, -1, -1).contiguous(), poses]
    intermediates: dict = {}
    with torch.no_grad():
        outputs = poser.output_list_func(poser.get_modules(), batch, intermediates)
    return outputs, intermediates["face_morphed_full"][0]


@pytest.fixture(scope="module")
def oracle(tha3_package):
    return official_poser(tha3_package, "separable_float")


@pytest.fixture(scope="module")
def teacher(tha3_package) -> Teacher:
    return load_teacher("tha3/separable_float", weights_dir=tha3_package / "data" / "models" / "separable_float")


@pytest.fixture(scope="module")
def oracle_runs(tha3_package, oracle, teacher):
    """Per sample image: (image, poses, kyara TeacherOutputs, official outputs, official face_morphed_full)."""
    runs = []
    for k, name in enumerate(ORACLE_IMAGES):
        image = load_image(tha3_package / "data" / "images" / name)
        poses = random_poses(2, seed=100 + k)
        ours = teacher.pose_all(teacher.prepare(image), poses)
        theirs, face_full = official_outputs(oracle, image, poses)
        runs.append((image, poses, ours, theirs, face_full))
    return runs


def test_image_loading_matches_official(tha3_package):
    from tha3.util import extract_pytorch_image_from_PIL_image

    path = tha3_package / "data" / "images" / ORACLE_IMAGES[0]
    theirs = extract_pytorch_image_from_PIL_image(Image.open(path))
    assert torch.equal(load_image(path), theirs)


def test_final_image_and_face_morphed_full_match_official(oracle_runs):
    for _, _, ours, theirs, face_full in oracle_runs:
        assert (ours.image - theirs[0]).abs().max().item() <= TOLERANCE
        assert (ours.face_morphed_full - face_full).abs().max().item() <= TOLERANCE


def test_all_29_official_outputs_match(oracle_runs):
    for _, _, ours, theirs, _ in oracle_runs:
        mine = ours.official_order()
        assert len(mine) == len(theirs) == 29
        for index, (a, b) in enumerate(zip(mine, theirs)):
            assert a.shape == b.shape, f"output {index}: {tuple(a.shape)} vs {tuple(b.shape)}"
            assert (a - b).abs().max().item() <= TOLERANCE, f"output {index} differs"


def test_png_matches_official_conversion(oracle_runs, tmp_path):
    from tha3.util import rgba_to_numpy_image

    _, _, ours, theirs, _ = oracle_runs[0]
    path = save_image(ours.image[0], tmp_path / "posed.png")
    written = np.asarray(Image.open(path).convert("RGBA")).astype(np.int16)
    reference = np.rint(rgba_to_numpy_image(theirs[0][0].float()) * 255.0).astype(np.int16)
    assert written.shape == reference.shape == (512, 512, 4)
    assert np.abs(written - reference).max() <= 1


def test_pose_equals_pose_all_and_prepared_equals_raw(oracle_runs, teacher):
    image, poses, ours, _, _ = oracle_runs[0]
    fast = teacher.pose(image, poses[:1])             # raw image: decomposer runs inside
    assert fast.shape == (1, 4, 512, 512) and fast.dtype == torch.float32
    assert (fast - ours.image[:1]).abs().max().item() <= TOLERANCE  # batch 1 vs batch 2 of the same pose


def test_outputs_shapes_and_names(oracle_runs):
    out: TeacherOutputs = oracle_runs[0][2]
    n = 2
    expected = {"image": (n, 4, 512, 512), "editor.alpha": (n, 4, 512, 512), "editor.color_change": (n, 4, 512, 512),
                "editor.warped_image": (n, 4, 512, 512), "editor.flow": (n, 2, 512, 512),
                "face_morphed_full": (n, 4, 512, 512), "face_morpher.image": (n, 4, 192, 192),
                "body_rotator.warped_image": (n, 4, 256, 256), "body_rotator.flow": (n, 2, 256, 256),
                "eyebrow_combiner.eyebrow_image": (n, 4, 128, 128)}
    for name, shape in expected.items():
        network, _, field = name.rpartition(".")
        assert tuple(getattr(getattr(out, network) if network else out, field).shape) == shape, name
    assert torch.equal(out.image, out.editor.image)
    # the face box of face_morphed_full is the face morpher output
    assert torch.equal(FACE_MORPHER_BOX.crop(out.face_morphed_full), out.face_morpher.image)


def test_prepared_image_is_checked(teacher):
    prepared = teacher.prepare(torch.zeros(4, 512, 512))
    assert isinstance(prepared, PreparedImage) and prepared.eyebrow_layers.eyebrow_layer.shape == (1, 4, 128, 128)
    foreign = prepared._replace(teacher="tha3/standard_float")
    with pytest.raises(KyaraError, match="call prepare"):
        teacher.pose(foreign, torch.zeros(1, 45))
    with pytest.raises(KyaraError, match="2 images cannot be posed with 3 poses"):
        teacher.pose(torch.zeros(2, 4, 512, 512), torch.zeros(3, 45))
    with pytest.raises(KyaraError, match=r"image must be \(4, 512, 512\)"):
        teacher.pose(torch.zeros(4, 256, 256), torch.zeros(1, 45))
    with pytest.raises(KyaraError, match=r"poses must be \(N, 45\)"):
        teacher.pose(prepared, torch.zeros(2, 44))


# -- standard variants vs the package's standard classes (random weights; ~11 s, ~1.1 GB) ----------------
def test_standard_architecture_matches_official_with_random_weights(tha3_package, monkeypatch):
    """No standard weights ship with the package, so compare both implementations of the standard
    architecture on the same random weights (this is where the hidden-ReLU gotcha shows)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import tha3.poser.modes.standard_float as official

    torch.manual_seed(0)
    networks = build_tha3(separable=False, device="cpu")
    states = {str(Path("/random") / tw.FILE_NAMES[role]): net.state_dict() for role, net in networks.networks().items()}
    monkeypatch.setattr(official, "torch_load", lambda name: states[name])
    poser = official_poser(tha3_package, "standard_float", Path("/random"))
    from kyara.teacher.tha3 import Teacher as THA3Teacher

    teacher = THA3Teacher(networks.eval().requires_grad_(False), "standard_float", torch.device("cpu"), torch.float32)
    image = load_image(tha3_package / "data" / "images" / ORACLE_IMAGES[0])
    poses = random_poses(1, seed=7)
    ours = teacher.pose_all(image, poses).official_order()
    theirs, _ = official_outputs(poser, image, poses)
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert (a - b).abs().max().item() <= TOLERANCE, f"output {index} differs"


# -- architecture ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("separable, expected", [(False, STANDARD_PARAMS), (True, SEPARABLE_PARAMS)])
def test_parameter_counts(separable, expected):
    networks = build_tha3(separable, "meta").networks()
    assert {role: sum(p.numel() for p in net.parameters()) for role, net in networks.items()} == expected


def test_separable_counts_equal_official_files(tha3_package):
    networks = build_tha3(True, "meta").networks()
    for role, net in networks.items():
        state = tw.read_state_dict(tha3_package / "data" / "models" / "separable_float" / tw.FILE_NAMES[role])
        assert sum(t.numel() for t in state.values()) == sum(p.numel() for p in net.parameters())


def activations_of(blocks) -> list[float]:
    """negative_slope of the activation closing each block (0.0 = ReLU)."""
    slopes = []
    for block in blocks:
        last = block[-1]
        slopes.append(getattr(last, "negative_slope", 0.0) if isinstance(last, torch.nn.LeakyReLU) else 0.0)
    return slopes


def test_hidden_relu_only_in_standard_rotator_and_editor_downsampling():
    for separable in (False, True):
        nets: THA3 = build_tha3(separable, "meta")
        for backbone in (nets.body_rotator.encoder_decoder, nets.editor.body):
            down = activations_of(backbone.downsample_blocks[1:])
            assert down == ([0.1] * 3 if separable else [0.0] * 3)   # standard: ReLU as trained (facts §3.7.1)
            assert activations_of(backbone.downsample_blocks[:1]) == [0.1]
            path = backbone.bottleneck_blocks[0].resnet_path
            assert isinstance(path[2], torch.nn.LeakyReLU) and path[2].negative_slope == 0.1
        assert activations_of(nets.eyebrow_decomposer.body.downsample_blocks) == [0.0] * 4
    assert Activation(0.1).module().negative_slope == 0.1


def test_registry_and_variants():
    assert set(TEACHERS) == {"tha3/separable_float", "tha3/standard_float", "tha3/separable_half", "tha3/standard_half",
                             "tha4"}
    assert tw.VARIANTS["standard_half"].dtype == torch.float16 and not tw.VARIANTS["standard_half"].separable
    with pytest.raises(KyaraError, match="unknown teacher 'tha3/nope'"):
        load_teacher("tha3/nope")


def test_half_variant_loads_in_float16(tha3_package):
    teacher = load_teacher("tha3/separable_half", weights_dir=tha3_package / "data" / "models" / "separable_float")
    assert teacher.dtype == torch.float16 and teacher.variant == "separable_half"
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in teacher.networks.parameters())


# -- weight files ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def separable_states() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return {role: net.state_dict() for role, net in build_tha3(True, "cpu").networks().items()}


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, separable_states) -> Path:
    """A directory of five valid (random) separable weight files."""
    directory = tmp_path_factory.mktemp("good_weights")
    for role, state in separable_states.items():
        torch.save(state, directory / tw.FILE_NAMES[role])
    return directory


def write_dir(directory: Path, good_dir: Path, replaced: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """A weights directory linking to the good files except the `replaced` ones (role → state dict)."""
    directory.mkdir(parents=True, exist_ok=True)
    for role, name in tw.FILE_NAMES.items():
        if replaced and role in replaced:
            torch.save(replaced[role], directory / name)
        else:
            (directory / name).symlink_to(good_dir / name)
    return directory


def load_error(directory: Path) -> str:
    with pytest.raises(WeightsError) as info:
        load_teacher("tha3/separable_float", weights_dir=directory)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_random_weights_round_trip(tmp_path, good_dir, separable_states):
    teacher = load_teacher("tha3/separable_float", weights_dir=write_dir(tmp_path, good_dir))
    for role, net in teacher.networks.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, separable_states[role][key])


def test_renamed_key(tmp_path, good_dir, separable_states):
    state = dict(separable_states["face_morpher"])
    state["body.bottleneck_blocks.3.resnet_path.1.wieght"] = state.pop("body.bottleneck_blocks.3.resnet_path.1.weight")
    message = load_error(write_dir(tmp_path, good_dir, {"face_morpher": state}))
    assert "face_morpher.pt" in message and "missing key 'body.bottleneck_blocks.3.resnet_path.1.weight'" in message
    assert "unexpected key 'body.bottleneck_blocks.3.resnet_path.1.wieght'" in message


def test_extra_key(tmp_path, good_dir, separable_states):
    state = {**separable_states["editor"], "body.extra.weight": torch.zeros(3)}
    message = load_error(write_dir(tmp_path, good_dir, {"editor": state}))
    assert "editor.pt" in message and "unexpected key 'body.extra.weight'" in message


def test_wrong_shape(tmp_path, good_dir, separable_states):
    state = dict(separable_states["body_rotator"])
    state["grid_change_creator.weight"] = torch.zeros(2, 32, 3, 3)
    message = load_error(write_dir(tmp_path, good_dir, {"body_rotator": state}))
    assert "two_algo_face_body_rotator.pt" in message
    assert "'grid_change_creator.weight' has shape (2, 32, 3, 3), expected (2, 64, 3, 3)" in message


def test_non_finite_value(tmp_path, good_dir, separable_states):
    state = {k: v.clone() for k, v in separable_states["eyebrow_combiner"].items()}
    state["combine_alpha.0.bias"][0] = float("nan")
    message = load_error(write_dir(tmp_path, good_dir, {"eyebrow_combiner": state}))
    assert "eyebrow_morphing_combiner.pt" in message and "NaN" in message


def replace_file(directory: Path, name: str) -> Path:
    """Unlink the (symlinked) file so that writing to it leaves the shared good file alone."""
    path = directory / name
    path.unlink()
    return path


def test_truncated_file(tmp_path, good_dir):
    directory = write_dir(tmp_path, good_dir)
    data = (good_dir / "eyebrow_decomposer.pt").read_bytes()
    path = replace_file(directory, "eyebrow_decomposer.pt")
    path.write_bytes(data[: len(data) // 2])
    message = load_error(directory)
    assert str(path) in message and "not a readable PyTorch state dict" in message


def test_non_torch_file(tmp_path, good_dir):
    directory = write_dir(tmp_path, good_dir)
    replace_file(directory, "editor.pt").write_text("<html>404 not found</html>")
    message = load_error(directory)
    assert "editor.pt" in message and "not a readable PyTorch state dict" in message


class Payload:  # not an allowed global for weights_only loading
    pass


def test_pickled_object_is_refused(tmp_path, good_dir):
    directory = write_dir(tmp_path, good_dir)
    torch.save({"body.x": Payload()}, replace_file(directory, "eyebrow_decomposer.pt"))
    message = load_error(directory)
    assert "eyebrow_decomposer.pt" in message and "not a readable PyTorch state dict" in message


def test_not_a_state_dict(tmp_path, good_dir):
    directory = write_dir(tmp_path, good_dir)
    torch.save([torch.zeros(3)], replace_file(directory, "eyebrow_decomposer.pt"))
    assert "expected a state dict" in load_error(directory)


def test_standard_file_in_separable_dir_gets_a_hint(tmp_path, good_dir):
    standard = {k: torch.zeros(v.shape) for k, v in build_tha3(False, "meta").editor.state_dict().items()}
    message = load_error(write_dir(tmp_path, good_dir, {"editor": standard}))
    assert "editor.pt" in message and "fits the standard architecture" in message


def test_missing_directory_says_how_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tw, "installed_tha3_models_dir", lambda: None)
    assert tw.default_weights_dir("standard_half") == tmp_path / "home" / "models" / "tha3" / "standard_half"
    with pytest.raises(WeightsError, match=r"kyara models fetch.*--weights DIR"):
        load_teacher("tha3/standard_half")


def test_default_dir_falls_back_to_installed_package(tmp_path, monkeypatch, tha3_package):
    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "home"))
    assert tw.default_weights_dir("separable_float") == tha3_package / "data" / "models" / "separable_float"
