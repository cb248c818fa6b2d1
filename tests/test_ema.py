"""The weights' moving average (kyara.distill.ema, DistillConfig.ema_decay): its arithmetic, and that a run
with it resumes exactly and writes the average as its result."""
import json
from dataclasses import replace

import pytest
import torch

from kyara.distill import distill
from kyara.distill.checkpoint import CHECKPOINT_NAME, load_checkpoint
from kyara.distill.config import DistillConfig
from kyara.distill.ema import WARMUP, WeightAverage
from tests.fakes import FakeTeacher
from tests.test_distill import TINY, _image, _tiny_student, bit_exact_torch  # noqa: F401 (a fixture)


def test_the_average_follows_its_formula_and_applied_restores_the_weights():
    w = torch.nn.Parameter(torch.zeros(3))
    average = WeightAverage([("w", w)], decay=0.9)
    want = torch.zeros(3)
    for t, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0]):
        with torch.no_grad():
            w.fill_(value)                            # what an optimizer step does: in place
        average.update()
        beta = min(0.9, (1 + t) / (WARMUP + t))       # the warm-up: 0.1, 0.18, ... then 0.9
        want = beta * want + (1 - beta) * value
        torch.testing.assert_close(average.average[0], want)
    with average.applied():
        torch.testing.assert_close(w.detach(), want)
    assert torch.equal(w.detach(), torch.full((3,), 16.0))   # its own value again
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay must be in"):
            WeightAverage([("w", w)], decay=bad)


def test_config_checks_ema_decay_and_older_runs_have_none():
    with pytest.raises(ValueError, match="ema_decay must be 0"):
        replace(TINY, ema_decay=1.0)
    saved = {k: v for k, v in json.loads(replace(TINY, ema_decay=0.5).to_json()).items() if k != "ema_decay"}
    assert DistillConfig.from_json(json.dumps(saved)).ema_decay == 0.0


def test_a_run_with_the_average_resumes_exactly_and_writes_the_average(tmp_path, bit_exact_torch):  # noqa: F811
    config = replace(TINY, ema_decay=0.5)
    teacher = FakeTeacher()
    straight = distill(_image(), teacher, config, out_dir=tmp_path / "a", name="tiny", progress=False,
                       student=_tiny_student())
    tensors, _ = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    weights = straight.character.poser.state_dict()
    averaged = [k for k in tensors if k.startswith("average.")]
    assert len(averaged) == len(list(straight.character.poser.parameters())) > 0
    for key in averaged:
        name = key[len("average."):]
        assert torch.equal(weights[name], tensors[key])              # the result is the average ...
    assert any(not torch.equal(tensors["student." + k[len("average."):]], tensors[k]) for k in averaged)   # ... not the last weights

    half = tmp_path / "b"
    distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, max_minutes=1e-9,
            student=_tiny_student())
    resumed = distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, resume=True,
                      student=_tiny_student())
    for (k, x), (_, y) in zip(weights.items(), resumed.character.poser.state_dict().items()):
        assert torch.equal(x, y), f"resume diverged at {k}"
    # and without the average the same run ends at other weights (its last ones)
    plain = distill(_image(), teacher, TINY, out_dir=tmp_path / "c", name="tiny", progress=False,
                    student=_tiny_student())
    assert not torch.equal(plain.character.poser.body_morpher.last_linear.weight,
                           straight.character.poser.body_morpher.last_linear.weight)
