"""The browser's WGSL student (server/static/render/student.wgsl) run natively by wgpu-py against the
PyTorch student on the bundled character: PSNR on 8-bit RGBA (acceptance: >= 45 dB).

Needs the ``wgpu`` package (dev extra) and an adapter: on a CPU-only Linux machine Debian's
mesa-vulkan-drivers (lavapipe). The real student takes 20-75 s a frame there (shared 2 cores), so
its tests are marked slow; the fast test runs the same shaders on a tiny random student
(kyara.web.poses.tiny_character). Measured (llvmpipe, 2026-12-04): float32 weights 89-92 dB, the
shipped float16 weights 58.8-60.4 dB; 45 dB is the acceptance bar, not a measured margin.

The lite student (kyara.student.lite.LiteStudent, same float16 weights, its face plan in the .kyw)
against the PyTorch LiteStudent: 66.6-68.6 dB on the 20 poses (llvmpipe, body grids 8/24/96, 2026-12-04;
66.2-68.5 with the earlier 32/64/128), 3-4 s a frame under load, so three of its poses run in the fast
suite and the 20 in the slow one. The student bundled since 2026-12-06 (session 19, better trained, larger weights)
is more sensitive to the float16 weights: lite 49.9-52.6 dB on the 20 poses, full 50.7-51.6 dB on four of them.
The one bundled in sessions 32-40 (the weight average, twice the body's rate) loses less to them:
lite 61.4-64.6 dB, full 62.9-63.6 dB (benchmarks/student_rounding.py; docs/benchmarks.md "Issue 16, session 32").
The one bundled since session 41 (the flow term x25, the default since session 40): lite 60.5-64.4 dB, full
62.8-63.6 dB (same script, side by side with session 32's; docs/benchmarks.md "Issue 16, session 41").
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.image import tensor_to_rgba_u8
from kyara.web.poses import exactness_poses, tiny_character
from kyara.web.weights import parse_web_bytes, student_to_web_bytes

ACCEPT_PSNR_DB = 45.0


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def character():
    return load_character(SAMPLE_CHARACTER)


def wgsl_for(character, lite: bool = False):
    pytest.importorskip("wgpu", reason="Python package 'wgpu' is not installed (pip install wgpu; dev extra)")
    from kyara.web.wgsl import WgslStudent, adapter

    gpu = adapter()
    if gpu is None:
        pytest.skip("wgpu found no WebGPU adapter (on Debian: apt-get install mesa-vulkan-drivers for lavapipe)")
    return WgslStudent(parse_web_bytes(student_to_web_bytes(character, lite=lite)), gpu, lite=lite)


@pytest.fixture(scope="module")
def wgsl_student(character):
    return wgsl_for(character)


def test_wgsl_matches_pytorch_on_a_tiny_student():
    """Every pass (face, three body levels with upsampling, projections, head, warp, blend, sRGB) on a
    small random student: seconds instead of a minute."""
    tiny = tiny_character()
    renderer = wgsl_for(tiny)
    for pose in exactness_poses(5)[3:5]:
        out = renderer.render(pose)
        ref = reference(tiny, pose)
        assert psnr_u8(out, ref) >= ACCEPT_PSNR_DB
        outside = ~tiny.poser.region.numpy()       # outside the region: the input, exactly
        np.testing.assert_array_equal(out[outside], ref[outside])


def reference(character, pose: np.ndarray) -> np.ndarray:
    return tensor_to_rgba_u8(character.render(torch.from_numpy(pose)[None])[0])


def check_poses(character, wgsl_student, poses: np.ndarray) -> list[float]:
    scores = []
    for pose in poses:
        out = wgsl_student.render(pose)
        ref = reference(character, pose)
        assert out.shape == ref.shape == (512, 512, 4) and out.dtype == np.uint8
        scores.append(psnr_u8(out, ref))
    assert min(scores) >= ACCEPT_PSNR_DB, [round(s, 2) for s in scores]
    return scores


@pytest.mark.slow
def test_wgsl_matches_pytorch_student_on_a_turned_preset(character, wgsl_student):
    pose = exactness_poses(3)[2]           # a preset with head and body turned: flow, blend and face all active
    out = wgsl_student.render(pose)
    ref = reference(character, pose)
    assert psnr_u8(out, ref) >= ACCEPT_PSNR_DB
    # the picture is the character, not an empty or constant frame
    assert (out[..., 3] == 0).mean() > 0.5 and (out[..., 3] == 255).mean() > 0.2
    # outside the student's region the output is the input, exactly
    outside = ~character.poser.region.numpy()
    np.testing.assert_array_equal(out[outside], ref[outside])


@pytest.mark.slow
def test_wgsl_matches_pytorch_student_on_20_poses(character, wgsl_student):
    check_poses(character, wgsl_student, exactness_poses(20))


# -- the lite student (kyara.student.lite) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def lite_character():
    from kyara.student.lite import use_student

    return use_student(load_character(SAMPLE_CHARACTER), "lite")


@pytest.fixture(scope="module")
def wgsl_lite(lite_character):
    return wgsl_for(lite_character, lite=True)


def test_wgsl_lite_matches_pytorch_lite_on_a_tiny_student():
    from kyara.student.lite import use_student

    tiny = use_student(tiny_character(), "lite")
    renderer = wgsl_for(tiny, lite=True)
    for pose in exactness_poses(5)[3:5]:
        out, ref = renderer.render(pose), reference(tiny, pose)
        assert psnr_u8(out, ref) >= ACCEPT_PSNR_DB
        np.testing.assert_array_equal(out[~tiny.poser.region.numpy()], ref[~tiny.poser.region.numpy()])


def test_wgsl_lite_follows_the_grid_chosen_for_the_student():
    """A plan that chose a finer body grid (kyara.student.lite.choose_body_grid) reaches the page: the header's
    body sizes and the shaders' frames are those of PyTorch's lite student at that grid."""
    from dataclasses import replace

    from kyara.student.lite import LiteStudent, movable_face, use_student

    tiny = tiny_character()
    tiny.poser.lite_face_plan = replace(movable_face(tiny.poser), body_grid=160)   # as if chosen and stored
    tiny = use_student(tiny, "lite")
    assert isinstance(tiny.poser, LiteStudent) and tiny.poser.body_grid == 160
    assert parse_web_bytes(student_to_web_bytes(tiny, lite=True)).header["lite"]["body_sizes"] == [8, 24, 160]
    # The tiny student is smooth (its frames at grids 128 and 160 are ~91 dB apart), so the header pins the
    # grid; the frames check that the shaders run the 160 plan (its level masks and taps) correctly.
    renderer = wgsl_for(tiny, lite=True)
    for pose in exactness_poses(5)[3:5]:
        assert psnr_u8(renderer.render(pose), reference(tiny, pose)) >= ACCEPT_PSNR_DB


def test_wgsl_lite_matches_pytorch_lite_student(lite_character, wgsl_lite):
    """Three of the 20 poses (rest, a turned preset, a random one) in the fast suite."""
    poses = exactness_poses(20)[[0, 2, 12]]
    scores = check_poses(lite_character, wgsl_lite, poses)
    # it is the lite student, not the full one: on the turned preset the page's frame is clearly closer to
    # PyTorch's lite frame than to the full student's. Measured (llvmpipe): session 7's bundled student 67 vs 51 dB;
    # session 19's 52.6 vs 43.1 dB, and over the 20 poses lite 49.9-52.6 against full 39.6-44.1 dB, the gap never
    # under 6.1 dB (its larger weights make float16 weights cost more); session 31's (bundled in sessions 32-40)
    # 63.8 vs 43.1 dB, the gap 17.3-22.7 dB over the 20; session 41's (bundled since) PyTorch's lite frame 42.8 dB
    # from the full one on this pose (40.5-44.0 over the 20) against the page's 60.5-64.4 dB from the lite one.
    # 5 dB keeps the test's point with a margin for either.
    full = load_character(SAMPLE_CHARACTER)
    assert psnr_u8(wgsl_lite.render(poses[1]), reference(full, poses[1])) < scores[1] - 5


@pytest.mark.slow
def test_wgsl_lite_matches_pytorch_lite_student_on_20_poses(lite_character, wgsl_lite):
    check_poses(lite_character, wgsl_lite, exactness_poses(20))
