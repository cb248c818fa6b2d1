"""A student's body widths (kyara distill --body-widths) travel with it: the .kyara file's weights say the
shape, and every reader (load_character, the lite CPU student, the browser's shape check) builds that shape;
official THA4 export refuses any other than THA4's."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from kyara.character import (SAMPLE_CHARACTER, Character, CharacterFileError, export_tha4_directory,
                             load_character, save_kyara, student_from_state)
from kyara.distill import DistillConfig, distill
from kyara.pose_sampler import sample_poses
from kyara.student import BodyMorpher, FaceMorpher, Student
from kyara.student.body_morpher import LEVELS, WIDTHS, levels_for_widths, shape_from_state
from tests.fakes import FakeTeacher

NARROW = (24, 16, 8)


def _student(widths=NARROW, seed=0) -> Student:
    torch.manual_seed(seed)
    student = Student(FaceMorpher(), BodyMorpher(levels_for_widths(widths)))
    with torch.no_grad():   # gentle flows: He-initialised heads warp by whole image widths
        student.body_morpher.last_linear.weight.mul_(0.05)
    return student.eval()


def test_widths_give_thas_levels_and_are_checked():
    assert levels_for_widths(WIDTHS) == LEVELS and BodyMorpher().widths == WIDTHS == (360, 180, 90)
    assert levels_for_widths((510, 180, 90)) == ((128, 510, 180), (256, 180, 90), (512, 90, 90))
    assert DistillConfig().body_widths == WIDTHS   # the config's literal default is the module's
    for bad in ((360, 180), (0, 180, 90), (360, 180, 2000), (360.0, 180, 90)):
        with pytest.raises(ValueError, match="body widths"):
            levels_for_widths(bad)
        with pytest.raises(ValueError, match="body_widths"):
            DistillConfig(body_widths=bad)


def test_config_keeps_widths_through_json_and_old_configs_read_thas():
    config = DistillConfig(body_widths=(510, 180, 90))
    assert DistillConfig.from_json(config.to_json()) == config
    old = json.loads(DistillConfig().to_json())
    del old["body_widths"]
    assert DistillConfig.from_json(json.dumps(old)).body_widths == WIDTHS


def test_file_round_trip_keeps_the_shape_and_renders_the_same(tmp_path):
    sample = load_character(SAMPLE_CHARACTER)
    student = _student()
    path = save_kyara(tmp_path / "narrow.kyara", "narrow", sample.image, student, "none")
    loaded = load_character(path)
    assert loaded.poser.body_morpher.levels == levels_for_widths(NARROW)
    assert loaded.poser.body_morpher.layers_per_level == 3
    poses = sample_poses(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = student.pose(sample.image, poses)
        got = loaded.poser.pose(loaded.image, poses)
    # the same weights and maths: only the float32 summation order can differ (measured 0 here; 1e-5 of a [-1, 1] range)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_a_student_of_other_layers_per_level_loads_too():
    student = Student(body_morpher=BodyMorpher(levels_for_widths(NARROW), layers_per_level=2))
    tensors = {f"{part}.{k}": v for part in ("face_morpher", "body_morpher")
               for k, v in getattr(student, part).state_dict().items()}
    loaded = student_from_state(tensors, "test")
    assert loaded.body_morpher.layers_per_level == 2 and loaded.body_morpher.widths == NARROW


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop("body_morpher.siren_layers.2.0.linear.weight"), "missing or not a tensor"),
    (lambda t: [t.pop(k) for k in list(t) if k.startswith("body_morpher.siren_layers.2.")], r"levels \[0, 1\]"),
    (lambda t: [t.pop(f"body_morpher.siren_layers.1.2.linear.{k}") for k in ("weight", "bias")], "same layers"),
    # a hidden layer narrower than its level's first: the shape check names the weight
    (lambda t: t.update({"body_morpher.siren_layers.0.1.linear.weight": torch.zeros(24, 20, 1, 1)}), r"has shape \(24, 20, 1, 1\)"),
])
def test_damaged_shapes_are_clear_errors(damage, message):
    student = _student()
    tensors = {f"{part}.{k}": v.clone() for part in ("face_morpher", "body_morpher")
               for k, v in getattr(student, part).state_dict().items()}
    damage(tensors)
    with pytest.raises(CharacterFileError, match=message):
        student_from_state(tensors, "bad.kyara")


def test_shape_from_state_refuses_absurd_widths():
    state = BodyMorpher(levels_for_widths(NARROW)).state_dict()
    state["siren_layers.0.0.linear.weight"] = torch.zeros(5000, 47, 1, 1)
    with pytest.raises(ValueError, match="outside"):
        shape_from_state(state)


def test_official_export_of_other_widths_warns_and_kyara_reads_it_back(tmp_path):
    sample = load_character(SAMPLE_CHARACTER)
    student = _student()
    character = Character("narrow", sample.image, student, "tha4", {"colour": "premultiplied"})
    with pytest.warns(UserWarning, match="widths 24,16,8 .* official THA4 runtime loads only 360,180,90"):
        export_tha4_directory(character, tmp_path / "out")
    loaded = load_character(tmp_path / "out")
    assert loaded.poser.body_morpher.widths == NARROW
    for name, p in loaded.poser.named_parameters():
        assert torch.equal(p, dict(student.named_parameters())[name]), name   # float32 both ways: exact


def test_distill_builds_the_configured_shape(tmp_path):
    config = DistillConfig(teacher="fake", examples=2, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                           pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=0.0, checkpoint_every_examples=2,
                           mask_poses=2, ema_decay=0.0, body_widths=(8, 8, 8))
    image = torch.rand(4, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = distill(image, FakeTeacher(), config, out_dir=tmp_path, name="w", progress=False)
    assert result.character.poser.body_morpher.widths == (8, 8, 8)
    assert load_character(tmp_path / "w.kyara").poser.body_morpher.widths == (8, 8, 8)


NODE_CHECK = r"""
const fs = require('fs');
globalThis.self = globalThis;
for (const f of ['kyw.js', 'plan.js']) (0, eval)(fs.readFileSync(process.argv[1] + '/' + f, 'utf8'));
const R = self.kyaraRender, out = {};
for (const name of ['sample', 'narrow', 'two_layers', 'tampered']) {
  const buf = fs.readFileSync(`${process.argv[2]}/${name}.kyw`);
  try {
    const kyw = R.parseKyw(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length),
                           tensors => R.studentShapes(R.bodyShapeOf(tensors)));
    R.buildPlan(kyw, { lite: false });
    const shape = R.bodyShapeOf(kyw.tensors);
    out[name] = `ok ${shape.widths.join(',')}/${shape.layers}`;
  } catch (e) { out[name] = 'error ' + e.message; }
}
console.log(JSON.stringify(out));
"""


def test_browser_reads_the_widths_from_the_weights(tmp_path):
    """The page's default shape check (renderer.js start) takes a file's own widths and still refuses a
    file whose layers disagree with them."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no `node` executable (apt-get install nodejs) to run render/plan.js")
    from kyara.web.site import RENDER_DIR
    from kyara.web.weights import student_to_web_bytes

    sample = load_character(SAMPLE_CHARACTER)
    narrow = Character("narrow", sample.image, _student(), "none")
    (tmp_path / "sample.kyw").write_bytes(student_to_web_bytes(sample))
    (tmp_path / "narrow.kyw").write_bytes(student_to_web_bytes(narrow))
    two_layers = Student(body_morpher=BodyMorpher(levels_for_widths(NARROW), layers_per_level=2)).eval()
    (tmp_path / "two_layers.kyw").write_bytes(student_to_web_bytes(Character("two", sample.image, two_layers, "none")))
    tampered = _student()
    with torch.no_grad():   # level 1's first layer one row wider than its hidden layers expect
        layer = tampered.body_morpher.siren_layers[1][0].linear
        layer.weight = torch.nn.Parameter(torch.cat([layer.weight, layer.weight[:1]]))
        layer.bias = torch.nn.Parameter(torch.cat([layer.bias, layer.bias[:1]]))
    (tmp_path / "tampered.kyw").write_bytes(student_to_web_bytes(Character("t", sample.image, tampered, "none")))
    result = subprocess.run([node, "-e", NODE_CHECK, str(RENDER_DIR), str(tmp_path)], check=True, timeout=120,
                            capture_output=True, text=True)
    out = json.loads(result.stdout)
    assert out == {**out, "sample": "ok 360,180,90/3", "narrow": "ok 24,16,8/3", "two_layers": "ok 24,16,8/2"}
    # level 1 now 17 wide: level 0's last layer should emit 17
    assert out["tampered"] == "error weights tensor body_morpher.siren_layers.0.2.linear.weight has shape [16,24], expected [17,24]"
