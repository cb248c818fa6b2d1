"""The browser's pass plan (server/static/render/plan.js, run by Node) equals the Python mirror
(kyara.web.plan, run natively by the WGSL tests) bit for bit: packed weights, biases, per-frame
first-layer blocks, the model-space image, region masks and the pass list. Skipped without `node`."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.web.plan import build_plan
from kyara.web.poses import exactness_poses, tiny_character
from kyara.web.weights import parse_web_bytes, student_to_web_bytes
from kyara.web.site import RENDER_DIR

NODE_SCRIPT = r"""
const fs = require('fs');
globalThis.self = globalThis;
for (const f of ['kyw.js', 'plan.js']) (0, eval)(fs.readFileSync(process.argv[1] + '/' + f, 'utf8'));
const R = self.kyaraRender, dir = process.argv[2];
const buf = fs.readFileSync(dir + '/w.kyw');
const plan = R.buildPlan(R.parseKyw(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)),
                         { lite: process.argv[3] === 'lite' });
const pose = JSON.parse(fs.readFileSync(dir + '/pose.json'));
const masks = new Uint8Array(plan.masks.reduce((n, m) => n + m.length, 0));
plan.masks.forEach((m, l) => masks.set(m, plan.maskOffsets[l]));
const arrays = [['weights', plan.weights], ['biases', plan.biases], ['frame', plan.frame(pose)], ['image', plan.image],
                ['masks', masks]];
if (plan.faceInit) arrays.push(['face_init', plan.faceInit]);
fs.writeFileSync(dir + '/work.json', JSON.stringify(plan.work));
for (const [name, array] of arrays)
  fs.writeFileSync(`${dir}/${name}.bin`, Buffer.from(array.buffer, array.byteOffset, array.byteLength));
fs.writeFileSync(dir + '/passes.json', JSON.stringify(plan.passes));
"""


@pytest.fixture(scope="module")
def sample():
    return load_character(SAMPLE_CHARACTER)


def run_node(tmp_path, kyw: bytes, pose: np.ndarray, lite: bool) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` executable (apt-get install nodejs) to run render/plan.js")
    (tmp_path / "w.kyw").write_bytes(kyw)
    (tmp_path / "pose.json").write_text(json.dumps([float(v) for v in pose]))
    subprocess.run([node, "-e", NODE_SCRIPT, str(RENDER_DIR), str(tmp_path), "lite" if lite else "full"],
                   check=True, timeout=120)


@pytest.mark.parametrize("which", ["sample", "tiny"])
def test_js_plan_equals_python_plan(tmp_path, sample, which):
    character = sample if which == "sample" else tiny_character()
    kyw = student_to_web_bytes(character)
    pose = exactness_poses(5)[4]
    run_node(tmp_path, kyw, pose, lite=False)

    parsed = parse_web_bytes(kyw)
    plan = build_plan(parsed.tensors, parsed.header["face_box"])
    masks = np.fromfile(tmp_path / "masks.bin", np.uint8)
    np.testing.assert_array_equal(masks, plan.masks)
    assert masks.size == 128 ** 2 + 256 ** 2 + 512 ** 2 and 0.3 < masks[-512 * 512:].mean() < 0.6
    assert not (tmp_path / "face_init.bin").exists()
    for name, expected in (("weights", plan.weights), ("biases", plan.biases), ("frame", plan.frame(pose)),
                           ("image", plan.image)):
        got = np.fromfile(tmp_path / f"{name}.bin", np.float32)
        np.testing.assert_array_equal(got, expected.reshape(-1), err_msg=name)
    js_passes = json.loads((tmp_path / "passes.json").read_text())
    py_passes = [dict(kind=p.kind, size=p.size, gIn=p.g_in, gOut=p.g_out, wOff=p.w_off, bOff=p.b_off, act=p.act,
                      mask=p.mask, pb=p.pb, prevSize=p.prev_size, src=p.src, dst=p.dst) for p in plan.passes]
    assert js_passes == py_passes
    kinds = [p["kind"] for p in js_passes]
    assert kinds.count("first") == 4 and kinds[-1] == "compose"


@pytest.mark.parametrize("chosen_grid", [None, 160])
def test_js_lite_plan_equals_python_lite_plan_and_the_lite_student(tmp_path, chosen_grid):
    """The lite plan (kyara.student.lite): coarse body levels, the region and movable-face masks, the
    constant face, compose reading a coarse head; equal in JS and Python, and its masks are exactly
    the pixel sets LiteStudent evaluates. Also with a body grid chosen for the student (160: the file's
    plan, as kyara.student.lite.choose_body_grid stores it) instead of the default 128."""
    from dataclasses import replace

    from kyara.student.lite import LiteStudent, movable_face

    sample = load_character(SAMPLE_CHARACTER)   # its own copy: the plan is replaced below
    if chosen_grid is not None:
        sample.poser.lite_face_plan = replace(movable_face(sample.poser), body_grid=chosen_grid)
    lite = LiteStudent(sample.poser)
    assert lite.body_grid == (chosen_grid or 128)
    kyw = student_to_web_bytes(sample, lite=True)
    pose = exactness_poses(5)[4]
    run_node(tmp_path, kyw, pose, lite=True)
    parsed = parse_web_bytes(kyw)
    plan = build_plan(parsed.tensors, parsed.header["face_box"], parsed.header["lite"])
    np.testing.assert_array_equal(np.fromfile(tmp_path / "masks.bin", np.uint8), plan.masks)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "face_init.bin", np.float32), plan.face_init.reshape(-1))
    for name, expected in (("weights", plan.weights), ("frame", plan.frame(pose)), ("biases", plan.biases)):
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"{name}.bin", np.float32), expected.reshape(-1), name)
    js_passes = json.loads((tmp_path / "passes.json").read_text())
    assert [(p["kind"], p["size"], p["mask"], p["prevSize"]) for p in js_passes] == \
        [(p.kind, p.size, p.mask, p.prev_size) for p in plan.passes]
    # the body levels run on LiteStudent's grids (LiteConfig), the level masks are its coarse pixel
    # sets, the face mask its movable face pixels
    coarse = lite.coarse(lite.body_pixels())
    sizes = [level.size for level in coarse.pixels.levels]
    assert parsed.header["lite"]["body_sizes"] == sizes and sizes[-1] == lite.body_grid < 512
    assert plan.passes[-1].prev_size == sizes[-1]
    assert [p.size for p in plan.passes if p.kind == "first"][1:] == sizes
    for level, offset in zip(coarse.pixels.levels, plan.mask_offsets):
        mask = plan.masks[offset:offset + level.size ** 2]
        np.testing.assert_array_equal(np.flatnonzero(mask), level.index.numpy())
    face = plan.masks[plan.mask_offsets[4]:]
    np.testing.assert_array_equal(np.flatnonzero(face), lite.face_plan().pixels.output.index.numpy())
    # the page's work estimate: the lite student is several times cheaper than the full one
    full_work = json.loads(run_full_work(tmp_path, kyw, pose))
    assert 4 < full_work / json.loads((tmp_path / "work.json").read_text()) < 40


def run_full_work(tmp_path, kyw, pose) -> str:
    full = tmp_path / "full"
    full.mkdir()
    run_node(full, kyw, pose, lite=False)
    return (full / "work.json").read_text()
