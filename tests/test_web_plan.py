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
const plan = R.buildPlan(R.parseKyw(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)));
const pose = JSON.parse(fs.readFileSync(dir + '/pose.json'));
const masks = new Uint8Array(plan.masks.reduce((n, m) => n + m.length, 0));
plan.masks.forEach((m, l) => masks.set(m, plan.maskOffsets[l]));
for (const [name, array] of [['weights', plan.weights], ['biases', plan.biases], ['frame', plan.frame(pose)],
                             ['image', plan.image], ['masks', masks]])
  fs.writeFileSync(`${dir}/${name}.bin`, Buffer.from(array.buffer, array.byteOffset, array.byteLength));
fs.writeFileSync(dir + '/passes.json', JSON.stringify(plan.passes));
"""


@pytest.mark.parametrize("which", ["sample", "tiny"])
def test_js_plan_equals_python_plan(tmp_path, which):
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` executable (apt-get install nodejs) to run render/plan.js")
    character = load_character(SAMPLE_CHARACTER) if which == "sample" else tiny_character()
    kyw = student_to_web_bytes(character)
    (tmp_path / "w.kyw").write_bytes(kyw)
    pose = exactness_poses(5)[4]
    (tmp_path / "pose.json").write_text(json.dumps([float(v) for v in pose]))
    subprocess.run([node, "-e", NODE_SCRIPT, str(RENDER_DIR), str(tmp_path)], check=True, timeout=120)

    parsed = parse_web_bytes(kyw)
    plan = build_plan(parsed.tensors, parsed.header["face_box"])
    masks = np.fromfile(tmp_path / "masks.bin", np.uint8)
    np.testing.assert_array_equal(masks, plan.masks)
    assert masks.size == 128 ** 2 + 256 ** 2 + 512 ** 2 and 0.3 < masks[-512 * 512:].mean() < 0.6
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
