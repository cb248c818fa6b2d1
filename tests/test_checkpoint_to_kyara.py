"""scripts/checkpoint_to_kyara.py: a cut-off run's checkpoint written as a character file (docs/gpu-runbook.md),
so its student can be evaluated anywhere."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from kyara.character import SAMPLE_IMAGE, load_character
from kyara.distill.checkpoint import save_checkpoint
from kyara.distill.config import DistillConfig
from kyara.distill.ema import WeightAverage
from kyara.distill.step import optimizers
from kyara.student import BodyMorpher, Student
from kyara.student.body_morpher import levels_for_widths

from script_module import load_script



def _script():
    return load_script("scripts/checkpoint_to_kyara.py")


@pytest.mark.parametrize("ema, widths", [(0.0, (360, 180, 90)), (0.999, (24, 16, 8))])
def test_the_file_holds_the_checkpoints_weights_or_their_average(tmp_path, monkeypatch, ema, widths):
    torch.manual_seed(0)
    student = Student(body_morpher=BodyMorpher(levels_for_widths(widths)))   # any --body-widths
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[100:400, 50:450] = True
    student.set_region(region)
    config = DistillConfig(ema_decay=ema, body_widths=widths)
    face_opt, body_opt = optimizers(student, config, torch.device("cpu"))
    average = None
    if ema:
        average = WeightAverage(student.named_parameters(), ema, updates=123)
        for a in average.average:              # an average unlike the live weights, so the test can tell them apart
            a.add_(0.25)
    ckpt = tmp_path / "checkpoint.safetensors"
    save_checkpoint(ckpt, student, face_opt, body_opt, 123, config, torch.ones(1, 512, 512), 530.0,
                    region=region, average=average)
    out = tmp_path / "partial.kyara"
    monkeypatch.setattr(sys, "argv", ["checkpoint_to_kyara.py", str(SAMPLE_IMAGE), str(ckpt), "-o", str(out)])
    _script().main()

    character = load_character(out)
    assert character.poser.body_morpher.widths == widths
    expected = dict(student.named_parameters())
    for name, p in character.poser.named_parameters():
        want = expected[name].detach() + (0.25 if ema else 0.0)
        assert torch.equal(p.detach(), want), name     # stored as float32: exact
    assert torch.equal(character.poser.region.cpu().bool(), region)
    metrics = json.loads(character.metadata["metrics"])    # metadata values are stored as JSON text
    assert metrics["complete"] is False and metrics["steps"] == 123 and metrics["examples"] == 123 * config.batch_size
