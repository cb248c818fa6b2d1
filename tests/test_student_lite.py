"""kyara.student.lite: the CPU-lite student evaluates fewer pixels but keeps the student's maths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kyara.character import Character, random_character
from kyara.errors import KyaraError
from kyara.image import tensor_to_rgba_u8
from kyara.pose import FACE_ALL
from kyara.pose_sampler import sample_poses
from kyara.student import Student
from kyara.student.lite import LiteConfig, LiteStudent, bilinear_taps, coarse_body, movable_face, use_student


@pytest.fixture(scope="module")
def character() -> Character:
    """A random student restricted to a small region (keeps the full body evaluation cheap)."""
    ch = random_character(seed=3)
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[72:232, 184:328] = True   # covers the face box (80:208, 192:320), like a real character's region
    ch.poser.set_region(region)
    return ch


@pytest.mark.parametrize("out_size,in_size", [(512, 128), (512, 192), (256, 256), (64, 32)])
def test_bilinear_taps_match_interpolate(out_size, in_size):
    grid = torch.randn(1, 3, in_size, in_size, dtype=torch.float64)
    flat = np.arange(out_size * out_size)
    taps, weights = bilinear_taps(flat, out_size, in_size)
    gathered = (grid.view(3, -1)[:, torch.from_numpy(taps)] * torch.from_numpy(weights).double()).sum(-1)
    expected = F.interpolate(grid, size=out_size, mode="bilinear", align_corners=False).view(3, -1)
    assert torch.allclose(gathered, expected, atol=1e-6)   # float32 weights: ~1e-7 relative


def test_full_grid_lite_body_equals_the_student(character):
    """body_grid = 512 with the native ×2 chain (body_low None) is the full student's 128/256/512 schedule."""
    poses = sample_poses(2, torch.Generator().manual_seed(0))
    exact = LiteStudent(character.poser, LiteConfig(body_grid=512, body_low=None))
    with torch.inference_mode():
        a = character.poser.body_features(poses)
        b = exact.body_features(poses)
    assert a.shape == b.shape
    assert float((a - b).abs().max()) < 1e-4   # float32 summation order (measured 2.4e-6 on the sample student)


def test_coarse_body_covers_every_tap(character):
    pixels = character.poser.body_pixels()
    coarse = coarse_body(pixels.output, (32, 64, 128))
    assert [lvl.size for lvl in coarse.pixels.levels] == [32, 64, 128]
    assert coarse.taps.shape == (len(pixels.output), 4)
    assert int(coarse.taps.max()) < len(coarse.pixels.output)
    assert torch.allclose(coarse.weights.sum(1), torch.ones(len(pixels.output)), atol=1e-6)
    # Far fewer network evaluations than the native schedule.
    assert sum(len(lvl) for lvl in coarse.pixels.levels) < sum(len(lvl) for lvl in pixels.levels) / 6


def test_lite_face_is_exact_on_movable_pixels_and_constant_elsewhere(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=8))
    poses = sample_poses(3, torch.Generator().manual_seed(1))[:, FACE_ALL]
    with torch.inference_mode():
        full = Student.face_rgba(character.poser, poses)
        faces = lite.face_rgba(poses)
    plan = lite.face_plan()
    mask = torch.zeros(128 * 128, dtype=torch.bool)
    mask[plan.pixels.output.index] = True
    mask = mask.view(128, 128)
    assert float((faces - full).abs().amax(1)[:, mask].max()) < 1e-4   # same evaluator on those pixels
    assert torch.equal(faces[:, :, ~mask], plan.constant[:, ~mask].expand(3, -1, -1))


def test_everything_movable_reproduces_the_face(character):
    """A threshold below any deviation marks every pixel movable: the full face morpher."""
    lite = LiteStudent(character.poser, LiteConfig(face_threshold=-1.0, face_poses=4))
    poses = sample_poses(2, torch.Generator().manual_seed(2))[:, FACE_ALL]
    with torch.inference_mode():
        assert float((lite.face_rgba(poses) - character.poser.face_rgba(poses)).abs().max()) < 1e-4
    assert lite.face_plan().share == 1.0


def test_pose_rgba_u8_matches_the_float_path(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    poses = sample_poses(2, torch.Generator().manual_seed(4))
    u8 = lite.pose_rgba_u8(character.image, poses)
    with torch.inference_mode():
        reference = np.stack([tensor_to_rgba_u8(x) for x in lite.pose(character.image, poses)])
    assert u8.shape == (2, 512, 512, 4) and u8.dtype == np.uint8
    # Lookup-table sRGB: one level off only where a value sits within 1/65536 of a rounding edge.
    # Fully transparent pixels come out as (0, 0, 0, 0) there (their straight colour is invisible).
    diff = np.abs(u8.astype(int) - reference)
    assert diff[..., 3].max() <= 1
    assert diff[..., :3][reference[..., 3] > 0].max() <= 1
    assert (u8[..., :3][u8[..., 3] == 0] == 0).all()


def test_pose_rgba_u8_with_the_face_box_outside_the_region(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[100:200, 220:300] = True
    lite.set_region(region)
    poses = sample_poses(1, torch.Generator().manual_seed(6))
    with torch.inference_mode():
        reference = tensor_to_rgba_u8(lite.pose(character.image, poses)[0])
    assert np.array_equal(lite.pose_rgba_u8(character.image, poses)[0], reference)


def test_lite_falls_back_to_the_modules_under_autograd(character):
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    poses = sample_poses(1, torch.Generator().manual_seed(5))[:, FACE_ALL]
    out = lite.face_rgba(poses)   # grad enabled: the differentiable module path, no face plan needed
    assert lite._face_plan is None
    assert torch.allclose(out, character.poser.face_morpher(poses))


def test_use_student_modes(character):
    ch = Character(character.name, character.image, character.poser, "none")
    assert use_student(ch, "full").poser is character.poser
    assert use_student(ch, "auto", frames=1).poser is character.poser        # too short to repay the analysis
    assert isinstance(use_student(ch, "auto").poser, LiteStudent)
    assert use_student(ch, "lite").poser is ch.poser                         # already lite: unchanged
    with pytest.raises(KyaraError, match="--student"):
        use_student(ch, "fast")


def test_use_student_lite_refuses_a_teacher():
    class Teacherish:
        device = torch.device("cpu")

    ch = Character("t", torch.zeros(4, 512, 512), Teacherish(), "tha3")
    assert use_student(ch, "auto").poser is ch.poser
    with pytest.raises(KyaraError, match="distilled"):
        use_student(ch, "lite")


def test_cli_commands_take_the_student_flag():
    import argparse

    from kyara.cli import demo, live, pose, scene, speak, stickers

    for module in (pose, speak, stickers, scene, demo, live):
        parser = argparse.ArgumentParser()
        module.register(parser.add_subparsers())
        actions = [a for sub in parser._subparsers._group_actions for p in sub.choices.values() for a in p._actions]
        student = [a for a in actions if "--student" in a.option_strings]
        assert student and list(student[0].choices) == ["auto", "lite", "full"], module.__name__


# -- issue 15, second round: the plan in the .kyara file, the GPU reference, the two-lane frame ---------------
def test_face_plan_round_trips_through_the_kyara_file(character, tmp_path):
    from kyara.character import load_character

    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    plan = lite.face_plan()
    path = Character(character.name, character.image, lite, "none").save(tmp_path / "c.kyara")
    loaded = load_character(path)
    again = LiteStudent(loaded.poser, LiteConfig(face_poses=4))
    assert again._face_plan is not None   # read from the file, not recomputed
    assert torch.equal(again._face_plan.mask, plan.mask) and torch.equal(again._face_plan.constant, plan.constant)
    assert "lite" not in loaded.metadata   # the plan's description travels with its tensors only
    # Another face setting, or other face weights: the stored plan does not fit and is not used.
    assert LiteStudent(loaded.poser, LiteConfig(face_poses=5))._face_plan is None
    with torch.no_grad():
        loaded.poser.face_morpher.siren.last_linear.bias.add_(0.01)
    assert LiteStudent(loaded.poser, LiteConfig(face_poses=4))._face_plan is None


def test_a_malformed_stored_plan_is_a_one_line_error(character, tmp_path):
    from kyara.character import load_character, resave_kyara
    from kyara.errors import CharacterFileError

    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    lite.face_plan()
    path = Character(character.name, character.image, lite, "none").save(tmp_path / "c.kyara")
    resave_kyara(path, tmp_path / "bad.kyara", add_tensors={"lite_face_mask": torch.zeros(7, dtype=torch.uint8)})
    with pytest.raises(CharacterFileError, match="lite_face_mask must be 2048 uint8 bytes"):
        load_character(tmp_path / "bad.kyara")
    resave_kyara(path, tmp_path / "meta.kyara", add_metadata={"lite": "{\"face_threshold\": 1}"})
    with pytest.raises(CharacterFileError, match="metadata 'lite'"):
        load_character(tmp_path / "meta.kyara")


def test_distill_lite_from_stores_a_plan_that_loads(character, tmp_path, capsys):
    from kyara.character import load_character
    from kyara.cli import main

    path = character.save(tmp_path / "plain.kyara")   # a plain Student: no plan in the file
    assert LiteStudent(load_character(path).poser)._face_plan is None
    out = tmp_path / "lite.kyara"
    assert main(["distill", "--lite-from", str(path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lite plan stored" in printed and "no held-out PSNR" in printed   # no metrics: the default grid
    stored = LiteStudent(load_character(out).poser)._face_plan
    assert stored is not None and stored.seconds == 0.0   # read from the file, not recomputed
    computed = movable_face(character.poser)
    assert torch.equal(stored.mask, computed.mask) and torch.equal(stored.constant, computed.constant)
    assert LiteStudent(load_character(path).poser)._face_plan is None   # the source file is untouched
    # In place on a file that has it: nothing to do, the file is not rewritten.
    before = out.stat().st_mtime_ns
    assert main(["distill", "--lite-from", str(out)]) == 0
    assert "unchanged" in capsys.readouterr().out and out.stat().st_mtime_ns == before


@pytest.mark.parametrize("argv,message", [
    (["distill", "--lite-from", "{d}/plain.kyara", "{d}/image.png"], "not both"),
    (["distill", "--lite-from", "{d}/missing.kyara"], "missing.kyara: character file not found"),
    (["distill", "--lite-from", "{d}/image.png"], "expected a .kyara file"),
    (["distill", "--lite-from", "{d}/plain.kyara", "-o", "{d}/out.png"], "--output"),
    (["distill"], "needs a character IMAGE"),
    (["distill", "{d}/image.png"], "needs -o/--output"),
])
def test_distill_lite_from_bad_input_is_a_one_line_error(character, tmp_path, capsys, argv, message):
    from kyara.cli import main

    character.save(tmp_path / "plain.kyara")
    assert main([a.format(d=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_reference_pose_is_the_cpu_path(character):
    """reference_pose (batched torch ops, any device: the GPU quality check) computes the CPU plan's frames."""
    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    poses = sample_poses(2, torch.Generator().manual_seed(7))
    with torch.inference_mode():
        cpu = lite.pose(character.image, poses)
        reference = lite.reference_pose(character.image, poses)
    # float32 summation order only: measured 1.6e-4 on this random student, 6e-5 on the sample student
    assert float((cpu - reference).abs().max()) < 1e-3


def test_two_lanes_and_one_lane_draw_the_same_frames(character):
    """The face split between lanes, the half-and-half compositing and the unchanged-face shortcut
    change nothing: frame by frame equal to one lane without shortcuts."""
    poses = sample_poses(3, torch.Generator().manual_seed(8))
    poses[1, FACE_ALL] = poses[0, FACE_ALL]          # same face, other body: the face is not evaluated again
    before = torch.get_num_threads()
    frames = {}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
            frames[threads] = np.concatenate([lite.pose_rgba_u8(character.image, poses[i:i + 1]) for i in range(3)])
    finally:
        torch.set_num_threads(before)
    fresh = LiteStudent(character.poser, LiteConfig(face_poses=4)).pose_rgba_u8(character.image, poses[1:2])[0]
    assert np.array_equal(frames[2], frames[1])
    assert np.array_equal(frames[2][1], fresh)


def test_face_split_covers_the_movable_pixels_once(character):
    from kyara.student.lite import BoundSiren, _FaceSplit

    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    plan = lite.face_plan()
    with torch.inference_mode():
        nets = lite._evaluator()
        body = BoundSiren(nets[1], lite.coarse(lite.body_pixels()).pixels)
        split = _FaceSplit(nets[0], plan, body)
        pose = sample_poses(1, torch.Generator().manual_seed(9))[0, FACE_ALL]
        parts = torch.cat([split.values(0, pose), split.values(1, pose)])
        whole = BoundSiren(nets[0], plan.pixels)(pose)
    assert split.rows[0].stop == split.rows[1].start and split.rows[1].stop == len(plan.pixels.output)
    assert torch.equal(parts, whole)


def test_dilate_is_the_square_max_pool():
    from kyara.student.pixels import dilate

    mask = torch.rand(64, 80, generator=torch.Generator().manual_seed(0)) > 0.97
    for px in (1, 3, 16):
        square = F.max_pool2d(mask[None, None].float(), 2 * px + 1, stride=1, padding=px)[0, 0] > 0
        assert torch.equal(dilate(mask, px), square)


def test_live_frames_encode_losslessly(character):
    """The live engine's default WebP is lossless (issue 15: half the encode CPU of lossy q90): exact pixels."""
    import io

    from PIL import Image

    from kyara.live.engine import encode_webp

    lite = LiteStudent(character.poser, LiteConfig(face_poses=4))
    rgba = lite.pose_rgba_u8(character.image, sample_poses(1, torch.Generator().manual_seed(10)))[0]
    decoded = np.asarray(Image.open(io.BytesIO(encode_webp(rgba))).convert("RGBA"))
    visible = rgba[..., 3] > 0   # WebP may drop the colour of fully transparent pixels
    assert np.array_equal(decoded[..., 3], rgba[..., 3]) and np.array_equal(decoded[visible], rgba[visible])


def test_auto_picks_lite_for_short_jobs_when_the_file_carries_the_plan(character, tmp_path):
    from kyara.character import load_character

    lite = LiteStudent(character.poser)
    lite._face_plan = movable_face(character.poser, LiteConfig(face_poses=4))   # stored as if made with the defaults
    object.__setattr__(lite._face_plan, "config", LiteConfig())
    path = Character(character.name, character.image, lite, "none").save(tmp_path / "c.kyara")
    with_plan = load_character(path)
    assert isinstance(use_student(with_plan, "auto", frames=1).poser, LiteStudent)
    without = load_character(Character(character.name, character.image, character.poser, "none").save(tmp_path / "p.kyara"))
    assert not isinstance(use_student(without, "auto", frames=1).poser, LiteStudent)


# -- the body grid chosen per student -------------------------------------------------------------------------
def test_predicted_gap_adds_the_two_errors():
    from kyara.student.lite import predicted_gap_db

    assert predicted_gap_db(40.0, 1e-4) == pytest.approx(10 * np.log10(2.0))   # equal errors: 3.01 dB
    assert predicted_gap_db(30.0, 0.0) == 0.0
    assert predicted_gap_db(30.0, 1e-4) < predicted_gap_db(40.0, 1e-4)          # a worse student hides more


def test_choose_body_grid_measures_the_lite_path_against_the_full_student(character):
    """With every face pixel movable and the body's native chain at 512 the lite frames are the full
    student's, so the predicted gap is rounding only; a student far from its teacher accepts the first
    grid; one that is (said to be) perfect accepts none and gets the largest, every grid measured."""
    from kyara.student.lite import choose_body_grid

    exact = LiteConfig(body_grid=512, body_low=None, face_threshold=-1.0, face_poses=4, grid_poses=2,
                       body_grids=(256, 512))
    plan = movable_face(character.poser, exact)
    grid, gaps = choose_body_grid(character.poser, character.image, 80.0, plan, exact)
    # 512: the same maths in another summation order; measured 5.5e-6 dB (a squared difference of ~1e-14,
    # float32 rounding, against the 1e-8 of an 80 dB student); 256 measured 1.59 dB on this random student
    assert grid == 512 and list(gaps) == [256, 512] and gaps[512] < 1e-4 and gaps[256] > exact.max_gap_db
    config = LiteConfig(face_poses=4, grid_poses=2)
    plan = movable_face(character.poser, config)
    grid, gaps = choose_body_grid(character.poser, character.image, 3.0, plan, config)
    assert grid == 128 and list(gaps) == [128] and gaps[128] <= config.max_gap_db
    grid, gaps = choose_body_grid(character.poser, character.image, 99.0, plan, config)
    assert grid == 256 and list(gaps) == [128, 160, 192, 256] and min(gaps.values()) > config.max_gap_db


def test_the_chosen_grid_travels_in_the_file_and_sets_the_lite_body(character, tmp_path):
    from kyara.character import load_character, resave_kyara
    from kyara.errors import CharacterFileError
    from kyara.student.lite import DEFAULT_BODY_GRID, make_plan

    config = LiteConfig(face_poses=4, grid_poses=2)
    lite = LiteStudent(character.poser, config)
    assert lite.body_grid == DEFAULT_BODY_GRID                     # a plan made at load chooses nothing
    lite._face_plan = make_plan(character.poser, character.image, 99.0, config)
    assert lite._face_plan.body_grid == 256 and lite.body_grid == 256
    assert [level.size for level in lite.coarse(lite.body_pixels()).pixels.levels] == [8, 24, 256]
    path = Character(character.name, character.image, lite, "none").save(tmp_path / "c.kyara")
    loaded = LiteStudent(load_character(path).poser, config)
    assert loaded._face_plan.body_grid == 256 and loaded.body_grid == 256
    assert LiteStudent(load_character(path).poser, LiteConfig(body_grid=160, face_poses=4)).body_grid == 160
    meta = '{"face_threshold": 64.0, "face_quantile": 0.99, "face_dilate_px": 1, "face_poses": 4, "seed": 15, ' \
           '"face_weights_sha256": "x", "body_grid": 130}'
    resave_kyara(path, tmp_path / "bad.kyara", add_metadata={"lite": meta})
    with pytest.raises(CharacterFileError, match="body_grid 130"):
        load_character(tmp_path / "bad.kyara")


def test_lite_from_chooses_the_grid_from_the_files_heldout_psnr(character, tmp_path, capsys):
    """A file whose metrics give the student's held-out PSNR gets a chosen grid; a plan stored without one
    is made again; a plan with one is left alone."""
    import json

    from kyara.character import load_character, store_lite_plan
    from kyara.cli import main

    metrics = {"metrics": json.dumps({"heldout_psnr_db": 99.0})}   # "perfect": no grid is close enough
    lite = LiteStudent(character.poser)
    lite._face_plan = movable_face(character.poser)                 # a plan of the defaults, without a grid
    path = Character(character.name, character.image, lite, "none", metrics).save(tmp_path / "c.kyara")
    assert LiteStudent(load_character(path).poser)._face_plan.body_grid is None
    assert main(["distill", "--lite-from", str(path)]) == 0
    assert "body grid 256²" in capsys.readouterr().out
    assert LiteStudent(load_character(path).poser).body_grid == 256
    before = path.stat().st_mtime_ns
    plan, written = store_lite_plan(path)
    assert not written and plan.body_grid == 256 and path.stat().st_mtime_ns == before


@pytest.mark.gpu
def test_choose_body_grid_on_cuda_agrees_with_the_cpu():
    """At the end of a GPU distillation the grid is chosen on the GPU (reference_pose there): the same grid as
    on the CPU, and the same predicted gaps to float32 rounding."""
    from kyara.character import SAMPLE_CHARACTER, load_character
    from kyara.student.lite import choose_body_grid

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = LiteConfig(grid_poses=4)
    results = {}
    for device in ("cpu", "cuda"):
        character = load_character(SAMPLE_CHARACTER, device=device)
        plan = movable_face(character.poser, config)
        results[device] = choose_body_grid(character.poser, character.image, 36.44, plan, config)
    assert results["cuda"][0] == results["cpu"][0]
    for grid, gap in results["cpu"][1].items():
        # TF32 matmuls may be on: 1e-3 of a squared difference of ~6e-5 moves a ~1 dB gap by ~1e-3 dB
        assert results["cuda"][1][grid] == pytest.approx(gap, abs=0.02)


def test_make_plan_chooses_no_grid_for_a_body_of_another_depth(character):
    """LiteConfig's coarse grids (8, 24, G) are for THA4's three body levels; a two-level body (small test
    students) gets the face plan alone instead of a ValueError at the end of its distillation."""
    from kyara.student import BodyMorpher, FaceMorpher
    from kyara.student.lite import make_plan

    two = Student(FaceMorpher(hidden=16, num_layers=2), BodyMorpher(levels=((256, 8, 8), (512, 8, 8)), layers_per_level=1),
                  region=character.poser.region)
    plan = make_plan(two, character.image, 30.0, LiteConfig(face_poses=4, grid_poses=2))
    assert plan.body_grid is None and plan.pixels.fraction > 0
