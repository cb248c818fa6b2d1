import pytest
import torch

from kyara.character import (Character, export_tha4_directory, load_character, random_character, save_kyara)
from kyara.errors import CharacterFileError
from kyara.pose import FACE_ALL, Pose, stack
from kyara.student import BodyMorpher, FaceMorpher, Student
from reference_student import body_features_reference, face_reference


def test_parameter_counts_match_official_student():
    assert sum(p.numel() for p in FaceMorpher().parameters()) == 121_476
    assert sum(p.numel() for p in BodyMorpher().parameters()) == 331_567


def test_state_dict_keys_match_official_layout():
    face = FaceMorpher().state_dict()
    body = BodyMorpher().state_dict()
    assert set(face) == {f"siren.sine_layers.{i}.linear.{w}" for i in range(8) for w in ("weight", "bias")} | {
        "siren.last_linear.weight", "siren.last_linear.bias"}
    assert set(body) == {f"siren_layers.{l}.{j}.linear.{w}" for l in range(3) for j in range(3) for w in ("weight", "bias")} | {
        "last_linear.weight", "last_linear.bias"}
    assert tuple(body["siren_layers.0.0.linear.weight"].shape) == (360, 47, 1, 1)
    assert tuple(body["siren_layers.1.0.linear.weight"].shape) == (180, 227, 1, 1)
    assert tuple(body["siren_layers.2.0.linear.weight"].shape) == (90, 137, 1, 1)
    assert tuple(body["last_linear.weight"].shape) == (7, 90, 1, 1)


def test_student_output_shapes_and_face_box_only_depends_on_pose():
    torch.manual_seed(0)
    student = Student()
    image = torch.rand(4, 512, 512) * 2 - 1
    poses = stack([Pose(), Pose(mouth_aaa=1.0)])
    out = student(image, poses)
    assert out.image.shape == (2, 4, 512, 512)
    assert out.flow.shape == (2, 2, 512, 512) and out.alpha.shape == (2, 1, 512, 512)
    # the face edit replaces exactly the student face box
    edited = student.face_edit(image, poses)
    outside = edited.clone()
    outside[..., 80:208, 192:320] = 0
    ref = image.expand(2, -1, -1, -1).clone()
    ref[..., 80:208, 192:320] = 0
    assert torch.equal(outside, ref)
    with pytest.raises(ValueError):
        student(image, torch.zeros(2, 44))


def test_kyara_file_round_trip(tmp_path):
    ch = random_character(seed=1)
    path = save_kyara(tmp_path / "c.kyara", "c", ch.image, ch.poser, "tha3/separable_float", {"metrics": {"psnr": 1.0}})
    assert path.stat().st_size < 2 * 1024 * 1024, "character files must stay under 2 MiB"
    loaded = load_character(path)
    assert loaded.name == "c" and loaded.teacher_name == "tha3/separable_float"
    assert torch.equal(loaded.image, ch.image)
    for (k, a), (_, b) in zip(ch.poser.state_dict().items(), loaded.poser.state_dict().items()):
        assert torch.equal(a, b), k
    poses = stack([Pose(head_y=0.5)])
    assert torch.allclose(loaded.render(poses), ch.render(poses))


def test_tha4_directory_round_trip(tmp_path):
    ch = random_character(seed=2)
    out = export_tha4_directory(ch, tmp_path / "character_model", allow_straight=True)
    assert {p.name for p in out.iterdir()} == {"character_model.yaml", "character.png", "face_morpher.pt", "body_morpher.pt"}
    loaded = load_character(out)
    for (k, a), (_, b) in zip(ch.poser.state_dict().items(), loaded.poser.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(loaded.image, ch.image)


def test_corrupt_and_foreign_character_files(tmp_path):
    ch = random_character(seed=3)
    good = save_kyara(tmp_path / "good.kyara", "g", ch.image, ch.poser, "t")
    data = good.read_bytes()
    (tmp_path / "trunc.kyara").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.kyara").write_bytes(b"not a safetensors file at all")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(3)}, str(tmp_path / "foreign.kyara"), metadata={"format": "something-else"})
    for name, needle in [("trunc.kyara", "corrupt or foreign"), ("junk.kyara", "corrupt or foreign"),
                         ("foreign.kyara", "not a kyara character file"), ("missing.kyara", "not found")]:
        with pytest.raises(CharacterFileError, match=needle) as e:
            load_character(tmp_path / name)
        assert name in str(e.value)


def test_wrong_shape_weights_named(tmp_path):
    ch = random_character(seed=4)
    student = Student()
    student.body_morpher.last_linear = torch.nn.Conv2d(90, 6, 1)
    with pytest.raises(CharacterFileError, match="last_linear.weight"):
        path = save_kyara(tmp_path / "bad.kyara", "b", ch.image, student, "t")
        load_character(path)


def test_fast_channels_last_path_equals_official_conv_formulation():
    torch.manual_seed(5)
    face, body = FaceMorpher(), BodyMorpher()
    pose = torch.rand(2, 45) * 2 - 1
    assert torch.allclose(face(pose[:, FACE_ALL]), face_reference(face, pose[:, FACE_ALL]), atol=2e-5)
    assert torch.allclose(body.features(pose), body_features_reference(body, pose), atol=5e-5)


def test_cpu_pose_path_equals_forward_and_follows_weight_changes():
    """Student.pose on the CPU runs kyara.student.inference's evaluator; it must equal the module's
    forward and must not keep serving stale prepared weights after they change."""
    from kyara.pose_sampler import sample_poses

    ch = random_character(1)
    student, image = ch.poser, ch.image
    poses = sample_poses(2, torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ref = student.forward(image, poses).image
    fast = student.pose(image, poses)
    assert fast.shape == (2, 4, 512, 512)
    # float32 rounding through ω0 = 30 sine layers: < 0.15 of an 8-bit level at worst (random weights
    # are rougher than a trained student's, which agrees to ~1e-4)
    assert (fast - ref).abs().max() < 2e-3 and (fast - ref).abs().mean() < 1e-5
    with torch.no_grad():
        student.body_morpher.last_linear.bias.add_(0.05)   # an optimizer step would do the same
    changed = student.pose(image, poses)
    with torch.inference_mode():
        ref2 = student.forward(image, poses).image
    assert (changed - ref2).abs().max() < 2e-3 and (changed - fast).abs().max() > 1e-2


def _region_mask():
    import numpy as np

    mask = np.zeros((512, 512), bool)
    mask[60:420, 150:360] = True       # a body-shaped block
    mask[470:, 0:24] = True            # and a detached corner (tap bookkeeping across gaps)
    return torch.from_numpy(mask)


def _trained_looking_student(seed=0):
    torch.manual_seed(seed)
    student = Student()
    torch.nn.init.normal_(student.body_morpher.last_linear.weight, std=0.05)  # non-trivial flow/alpha/colour
    return student


def test_features_at_equals_dense_features_on_a_pixel_subset():
    from kyara.student.pixels import PixelSet

    body = _trained_looking_student().body_morpher
    poses = torch.rand(2, 45) * 2 - 1
    pixels = PixelSet.from_mask(_region_mask().numpy(), levels=3)
    with torch.no_grad():
        dense = body.features(poses).permute(0, 2, 3, 1).reshape(2, -1, 7)[:, pixels.output.index]
        subset = body.features_at(poses, pixels)
    assert subset.shape == (2, len(pixels.output), 7)
    assert torch.allclose(subset, dense, atol=2e-5), (subset - dense).abs().max()
    # differentiable: gradients reach every level's first layer
    body.features_at(poses[:1], pixels).square().mean().backward()
    assert all(layers[0].linear.weight.grad.abs().sum() > 0 for layers in body.siren_layers)


def test_region_student_matches_inside_and_keeps_the_input_outside():
    student = _trained_looking_student()
    ch = random_character(0)
    image = ch.image
    poses = stack([Pose(head_y=0.6, mouth_aaa=1.0), Pose(neck_z=-0.5, eye_wink_left=1.0)])
    region = _region_mask()
    with torch.no_grad():
        dense = student(image, poses).image
        student.set_region(region)
        restricted = student(image, poses).image
        face_edited = student.face_edit(image, poses)
    inside, outside = region.expand_as(dense[:, 0]), ~region.expand_as(dense[:, 0])
    assert torch.allclose(restricted.permute(1, 0, 2, 3)[:, inside], dense.permute(1, 0, 2, 3)[:, inside], atol=1e-3)  # float32 rounding through 9 sine layers of a random net
    # identity warp (grid_sample at pixel centres): equal up to rounding
    assert torch.allclose(restricted.permute(1, 0, 2, 3)[:, outside], face_edited.permute(1, 0, 2, 3)[:, outside], atol=1e-4)
    # the fast CPU path (Student.pose) uses the same region
    assert torch.allclose(student.pose(image, poses), restricted, atol=1e-3)


def test_region_round_trips_through_kyara_files_and_bad_regions_are_named(tmp_path):
    import warnings

    student = _trained_looking_student()
    student.set_region(_region_mask())
    ch = Character("r", random_character(0).image, student.eval(), "tha3/separable_float")
    path = save_kyara(tmp_path / "r.kyara", "r", ch.image, student, ch.teacher_name)
    back = load_character(path)
    assert torch.equal(back.poser.region.cpu(), _region_mask())
    poses = stack([Pose(head_x=-0.4)])
    assert torch.allclose(back.render(poses), ch.render(poses), atol=1e-5)
    with pytest.warns(UserWarning, match="region"):
        export_tha4_directory(back, tmp_path / "tha4", allow_straight=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_tha4_directory(random_character(0), tmp_path / "tha4_dense", allow_straight=True)   # no region: no warning
    with pytest.raises(ValueError, match="512, 512"):
        student.set_region(torch.ones(256, 256, dtype=torch.bool))
    with pytest.raises(ValueError, match="no pixel"):
        student.set_region(torch.zeros(512, 512, dtype=torch.bool))
    # a packed region of the wrong length is named in the error
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    tensors["body_region"] = tensors["body_region"][:100]
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    from kyara.character import write_kyara_file   # re-checksummed, so the region check is what fails
    write_kyara_file(tmp_path / "bad.kyara", tensors, meta)
    with pytest.raises(CharacterFileError, match="body_region"):
        load_character(tmp_path / "bad.kyara")


def test_cli_export_of_the_bundled_region_student_warns_in_one_line(tmp_path, capsys):
    from kyara.character import SAMPLE_CHARACTER
    from kyara.cli import main

    assert load_character(SAMPLE_CHARACTER).poser.region is not None   # the bundled student is region-trained
    assert main(["export", str(SAMPLE_CHARACTER), "--tha4-dir", str(tmp_path / "refused")]) == 2   # straight colour
    assert "--allow-straight" in capsys.readouterr().err and not (tmp_path / "refused" / "body_morpher.pt").exists()
    assert main(["export", str(SAMPLE_CHARACTER), "--tha4-dir", str(tmp_path / "out"), "--allow-straight"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "region" in err and "Traceback" not in err
    assert (tmp_path / "out" / "body_morpher.pt").exists()


def test_renderer_backends_agree_and_default_to_the_region():
    """Student.face_rgba / body_features pick the CPU evaluator without autograd and the modules'
    torch code with it; both give the same numbers, at the region's pixels by default."""
    student = _trained_looking_student()
    poses = torch.rand(2, 45) * 2 - 1
    for region in (None, _region_mask()):
        student.set_region(region)
        pixels = student.body_pixels()
        assert len(pixels.output) == (512 * 512 if region is None else int(region.sum()))
        torch_body = student.body_features(poses).detach()           # autograd on: torch backend
        torch_face = student.face_rgba(poses[:, FACE_ALL]).detach()
        assert student._evaluator() is None
        with torch.no_grad():
            assert student._evaluator() is not None
            cpu_body = student.body_features(poses)
            cpu_face = student.face_rgba(poses[:, FACE_ALL])
        assert cpu_body.shape == torch_body.shape == (2, len(pixels.output), 7)
        assert cpu_face.shape == torch_face.shape == (2, 4, 128, 128)
        # float32 rounding (summation order, ω0 folded into the weights) amplified by ω0 = 30 through 9 /
        # 8 sine layers: measured 1.4e-6 body, 2.9e-6 face here; the margin covers other CPUs' GEMM kernels
        # (the same bounds as the channels-last vs conv check above)
        assert (cpu_body - torch_body).abs().max() < 5e-5 and (cpu_face - torch_face).abs().max() < 2e-5


def test_compose_keeps_the_face_edited_image_outside_the_pixels():
    student = _trained_looking_student()
    student.set_region(_region_mask())
    image = torch.rand(4, 512, 512) * 2 - 1
    poses = torch.rand(2, 45) * 2 - 1
    with torch.no_grad():
        out = student.compose(image, student.face_rgba(poses[:, FACE_ALL]), student.body_features(poses))
        edited = student.face_edit(image, poses)
    outside = ~_region_mask()
    assert torch.all(out.flow[:, :, outside] == 0) and torch.all(out.alpha[:, :, outside] == 0)
    # identity warp: grid_sample at pixel centres reproduces the image up to its coordinate rounding
    # (measured 5.7e-5 on uniform [-1, 1] images)
    assert (out.image[:, :, outside] - edited[:, :, outside]).abs().max() < 2e-4
    assert (out.image[:, :, _region_mask()] - edited[:, :, _region_mask()]).abs().max() > 0.1


@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_padded_widths_are_exact_and_aligned(multiple):
    """pad_widths adds zero channels only: the batched evaluator's outputs equal the chunked CPU
    evaluator's for every padding, and every GEMM width is a multiple of `multiple`."""
    from kyara.student.inference import evaluate_batched, evaluate_poses, pad_widths, prepare_body, prepared_to
    from kyara.student.pixels import PixelSet

    student = _trained_looking_student()
    pixels = PixelSet.from_mask(_region_mask().numpy(), levels=3)
    poses = torch.rand(2, 45) * 2 - 1
    net = prepare_body(student.body_morpher)
    padded = pad_widths(net, multiple)
    for level in padded.levels:
        assert all(w.shape[0] % multiple == 0 and w.shape[1] % multiple == 0 for w, _ in level.hidden)
        assert level.features is None or level.features.shape[1] % multiple == 0
    assert padded.head_weight.shape[0] % multiple == 0
    if multiple == 8:
        assert [l.bias.numel() for l in padded.levels] == [360, 184, 96]
    reference = evaluate_poses(net, poses, pixels)
    out = evaluate_batched(prepared_to(padded, "cpu", torch.float32), poses, pixels, outputs=7)
    # float32 summation order only (the zero channels add exact zeros): the same bound as the CPU evaluator
    # against the modules (test_renderer_backends_agree_and_default_to_the_region)
    assert out.shape == reference.shape and (out - reference).abs().max() < 5e-5


def test_renderer_agrees_with_the_modules_and_snapshots_the_weights():
    """Student.renderer() (the batched evaluator, the fast GPU path's maths) renders the modules' images,
    with the weights of when it was made."""
    student = _trained_looking_student()
    student.set_region(_region_mask())
    # a smooth image: the warp turns a flow difference δ into an image difference δ · the image's slope
    ramp = torch.linspace(-1, 1, 512)
    image = torch.stack([ramp[None, :].expand(512, 512), ramp[:, None].expand(512, 512),
                         (ramp[None, :] * ramp[:, None]), torch.ones(512, 512)])
    poses = torch.rand(2, 45) * 2 - 1
    reference = student(image, poses).image.detach()                  # autograd: the modules
    render = student.renderer()
    with torch.no_grad():
        rendered = render(image, poses)
        student.body_morpher.last_linear.bias.add_(0.5)                 # as an optimizer step would
        assert torch.equal(render(image, poses), rendered)              # the renderer keeps its weights
        assert not torch.equal(student.renderer()(image, poses), rendered)
    # the features agree to float32 summation order (measured 1.3e-6); the warp multiplies a flow
    # difference by the image's slope, and this untrained face morpher pastes noise into the face box
    # (slope ~256 per unit of flow), which flows up to ±0.4 carry around it: measured 2.3e-4
    assert (rendered - reference).abs().max() < 2e-3


def test_padded_training_widths_change_nothing_but_the_gemm_shapes():
    """BodyMorpher.features_at(pad=8) (DistillConfig.width_multiple) is the same function with the same
    gradients: exact in float64 (the zero rows and columns add exact zeros); the official shapes stay."""
    from kyara.student.pixels import PixelSet

    body = _trained_looking_student().body_morpher.double()
    pixels = PixelSet.from_mask(_region_mask().numpy(), levels=3)
    poses = (torch.rand(2, 45) * 2 - 1).double()
    levels, (head_w, _) = body.padded_weights(8)
    assert [w.shape[0] for w, _, _ in levels] == [360, 184, 96] and tuple(head_w.shape) == (8, 96)
    assert [w.shape[1] for w, _, _ in levels] == [47, 184 + 47, 96 + 47]
    results = []
    for pad in (1, 8):
        body.zero_grad()
        out = body.features_at(poses, pixels, pad=pad)
        (out * torch.linspace(-1, 1, 7, dtype=torch.float64)).square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in body.parameters()]))
    (out1, grads1), (out8, grads8) = results
    assert out8.shape == out1.shape == (2, len(pixels.output), 7)
    # float64 rounding only (other GEMM blockings): measured ≤ 1e-15 on outputs and relative on gradients
    assert (out1 - out8).abs().max() < 1e-11
    assert max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(grads1, grads8)) < 1e-10
    assert tuple(body.siren_layers[2][1].linear.weight.shape) == (90, 90, 1, 1)


@pytest.mark.slow
def test_compiled_renderer_renders_what_pose_renders():
    """Student.renderer(compile=...) through inductor (here its CPU code) agrees with the eager renderer."""
    student = _trained_looking_student()
    student.set_region(_region_mask())
    ramp = torch.linspace(-1, 1, 512)
    image = torch.stack([ramp[None, :].expand(512, 512), ramp[:, None].expand(512, 512),
                         ramp[None, :] * ramp[:, None], torch.ones(512, 512)])
    poses = torch.rand(2, 45) * 2 - 1
    with torch.no_grad():
        eager = student.renderer()(image, poses)
        compiled = student.renderer(compile="default")(image, poses)
    # fused kernels sum in another order; the warp carries the face box's noise (see the batched test)
    assert compiled.shape == eager.shape and (compiled - eager).abs().max() < 2e-3


def test_graphed_renderer_checks_its_inputs_and_renders_off_cuda():
    """Off CUDA, GraphedRenderer calls the renderer directly: same frames as renderer(), new tensors."""
    from kyara.student.graphed import GraphedRenderer

    student = _trained_looking_student()
    student.set_region(_region_mask())
    image = torch.rand(4, 512, 512) * 2 - 1
    poses = torch.rand(2, 45) * 2 - 1
    with pytest.raises(ValueError, match=r"image must be \(4, 512, 512\), got \(3, 512, 512\)"):
        GraphedRenderer(student, image[:3], batch=2, compile=None)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        GraphedRenderer(student, image, batch=0, compile=None)
    render = GraphedRenderer(student, image, batch=2, compile=None)
    with pytest.raises(ValueError, match=r"poses must be \(2, 45\), got \(1, 45\)"):
        render(poses[:1])
    first = render(poses)
    with torch.no_grad():
        expected = student.renderer()(image, poses)
    assert torch.equal(first, expected)
    assert not torch.equal(render(poses.flip(0)), first) and torch.equal(first, expected)   # a new tensor each call


@pytest.mark.gpu
def test_graphed_renderer_replays_the_compiled_frames_on_cuda():
    """On a GPU, the CUDA graph's frames equal the compiled renderer's called eagerly, pose by pose."""
    from kyara.character import SAMPLE_CHARACTER, load_character
    from kyara.pose_sampler import sample_poses
    from kyara.student.graphed import GraphedRenderer

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    character = load_character(SAMPLE_CHARACTER, device="cuda")
    student = character.poser.half()
    image = character.image.to("cuda")
    render = GraphedRenderer(student, image, batch=2)
    direct = student.renderer(compile="default", overlap=False)
    for seed in (0, 1):
        poses = sample_poses(2, torch.Generator().manual_seed(seed)).to("cuda", torch.float16)
        with torch.inference_mode():
            expected = direct(image.half(), poses)
        got = render(poses)
        # the same kernels in a graph and out of it; the side stream only changes the order of independent work
        assert (got.float() - expected.float()).abs().max() < 1e-2
