"""Warm starts (DistillConfig.init_from / --init-from): a run begins at another student's weights, only when it
does not resume, and a bad donor is a clear error before any teacher work."""
import json
from dataclasses import replace

import pytest
import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.distill import distill
from kyara.distill.config import DistillConfig
from kyara.errors import KyaraError
from kyara.student import Student
from tests.fakes import FakeTeacher
from tests.test_distill import TINY, _image, _tiny_student

# One step of the official student (453k parameters) on this CPU; the lite plan written at the end costs
# more than the step. The learning rate is small so that one step stays near where it started.
ONE_STEP = replace(TINY, examples=1, lr_scale=1.0)
# Adam's first update of each weight is lr · m̂ / (√v̂ + ε) = lr · g / (|g| + ε), at most lr in size; phase 1's
# rate is 1e-4 for both networks (config.THA4_*_PHASES) × lr_scale 1. 1 % over it for float rounding.
FIRST_STEP_BOUND = 1e-4 * 1.01


class CountingTeacher(FakeTeacher):
    def __init__(self, colour: str = "straight"):
        self.colour = colour
        self.calls = 0

    def pose_all(self, prepared, poses):
        self.calls += 1
        return super().pose_all(prepared, poses)


def _largest_change(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> float:
    return max(float((v.float() - reference[k].float()).abs().max()) for k, v in module.state_dict().items())


@pytest.mark.parametrize("networks", ["both", "body"])
def test_a_warm_start_begins_at_the_donors_weights(tmp_path, networks):
    donor = load_character(SAMPLE_CHARACTER).poser
    result = distill(_image(), CountingTeacher(), replace(ONE_STEP, init_from="sample", init_networks=networks),
                     out_dir=tmp_path, name="warm", progress=False)
    student = result.character.poser
    assert _largest_change(student.body_morpher, donor.body_morpher.state_dict()) <= FIRST_STEP_BOUND
    face_change = _largest_change(student.face_morpher, donor.face_morpher.state_dict())
    if networks == "both":
        assert face_change <= FIRST_STEP_BOUND
    else:   # the face morpher started fresh: nowhere near the donor's trained weights
        assert face_change > 100 * FIRST_STEP_BOUND
    # the choice is recorded with the run's config in the file
    assert (result.character.metadata["distill"]["init_from"], result.character.metadata["distill"]["init_networks"]) \
        == ("sample", networks)


def test_a_resumed_warm_start_ignores_the_donor_file(tmp_path):
    """The checkpoint holds the weights: a resumed run must not re-read (or need) the donor, and goes on from
    where the first session stopped (two Adam steps from the donor's weights, not a fresh start)."""
    donor = tmp_path / "donor.kyara"
    donor.write_bytes(SAMPLE_CHARACTER.read_bytes())
    reference = load_character(donor).poser.body_morpher.state_dict()
    config = replace(ONE_STEP, examples=2, init_from=str(donor), init_networks="body")
    first = distill(_image(), CountingTeacher(), config, out_dir=tmp_path / "run", name="warm", progress=False,
                    max_minutes=1e-9)
    assert first.steps < 2
    donor.unlink()
    resumed = distill(_image(), CountingTeacher(), config, out_dir=tmp_path / "run", name="warm", progress=False,
                      resume=True)
    assert resumed.steps == 2
    # Adam's second update is also at most ~lr (1.0014 lr at t = 2 with betas 0.9 / 0.999, by Cauchy–Schwarz on
    # the bias-corrected moments), and the second step's rate is lower (a later phase): two bounds in all
    assert _largest_change(resumed.character.poser.body_morpher, reference) <= 2 * FIRST_STEP_BOUND


def test_bad_donors_fail_before_any_teacher_work(tmp_path):
    not_kyara = tmp_path / "notes.kyara"
    not_kyara.write_text("hello")
    cases = [
        (str(tmp_path / "missing.kyara"), "straight", r"--init-from .*missing\.kyara.*not found"),
        (str(not_kyara), "straight", r"--init-from .*notes\.kyara.*not a kyara character file"),
        ("sample", "premultiplied", r"--init-from sample: its student learned straight colour.*premultiplied"),
    ]
    for path, colour, message in cases:
        teacher = CountingTeacher(colour)
        with pytest.raises(KyaraError, match=message):
            distill(_image(), teacher, replace(ONE_STEP, init_from=path), out_dir=tmp_path / "run", progress=False)
        assert teacher.calls == 0


def test_a_donor_of_another_architecture_is_a_clear_error(tmp_path):
    with pytest.raises(KyaraError, match=r"--init-from sample \(face_morpher\): weight .* has shape .*another architecture"):
        distill(_image(), FakeTeacher(), replace(TINY, init_from="sample"), out_dir=tmp_path, progress=False,
                student=_tiny_student())


def test_config_checks_init_networks_and_older_runs_have_no_warm_start():
    with pytest.raises(ValueError, match="init_networks must be both or body"):
        replace(TINY, init_networks="face")
    saved = {k: v for k, v in json.loads(replace(TINY, init_from="x.kyara").to_json()).items()
             if k not in ("init_from", "init_networks")}
    old = DistillConfig.from_json(json.dumps(saved))
    assert (old.init_from, old.init_networks) == ("", "both")


def test_cli_passes_init_from_and_init_networks(tmp_path):
    import argparse

    from kyara.cli import distill as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["distill", "x.png", "-o", "x.kyara", "--init-from", "old.kyara",
                              "--init-networks", "body"])
    config = cli.checked_config(args)
    assert (config.init_from, config.init_networks) == ("old.kyara", "body")
    assert cli.checked_config(parser.parse_args(["distill", "x.png", "-o", "x.kyara"])).init_from == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["distill", "x.png", "--init-networks", "face"])


def test_official_student_has_the_state_the_donor_check_expects():
    """donor_weights reads the official architecture (load_character), so the file's networks load into Student()."""
    from kyara.distill.checkpoint import donor_weights

    weights = donor_weights(replace(TINY, init_from="sample"), "straight")
    student = Student()
    for part, state in weights.items():
        getattr(student, part).load_state_dict(state, strict=True)
    assert set(weights) == {"face_morpher", "body_morpher"}


def test_lr_warmup_ramps_every_rate_then_leaves_the_schedule_alone(tmp_path):
    """DistillConfig.lr_warmup_steps: (step + 1) / N of the schedule's rate for the first N steps, then the schedule;
    the loop sets it every step (the last step's rate is in the final checkpoint)."""
    from kyara.distill.config import THA4_BODY_PHASES, lr_at, step_lr
    from kyara.distill.checkpoint import CHECKPOINT_NAME, load_checkpoint

    config = replace(TINY, lr_warmup_steps=8)
    base = lr_at(THA4_BODY_PHASES, 0.0) * config.lr_scale
    assert step_lr(THA4_BODY_PHASES, config, 0, 100) == pytest.approx(base / 8)
    assert step_lr(THA4_BODY_PHASES, config, 3, 100) == pytest.approx(base * 4 / 8)
    for step in (8, 50, 99):   # after the warm-up: exactly the schedule
        assert step_lr(THA4_BODY_PHASES, config, step, 100) == lr_at(THA4_BODY_PHASES, step / 100) * config.lr_scale
    assert step_lr(THA4_BODY_PHASES, TINY, 0, 100) == base   # 0 = off
    with pytest.raises(ValueError, match="lr_warmup_steps must be >= 0"):
        replace(TINY, lr_warmup_steps=-1)
    saved = {k: v for k, v in json.loads(config.to_json()).items() if k != "lr_warmup_steps"}
    assert DistillConfig.from_json(json.dumps(saved)).lr_warmup_steps == 0    # older runs had none

    distill(_image(), FakeTeacher(), config, out_dir=tmp_path, name="tiny", progress=False, student=_tiny_student())
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    for name, phases in (("face_opt", config.face_phases), ("body_opt", config.body_phases)):
        lr = json.loads(meta[name])["param_groups"][0]["lr"]          # 4 steps: the last is step 3, fraction ¾
        assert lr == pytest.approx(lr_at(phases, 3 / 4) * config.lr_scale * 4 / 8)


def test_cli_lr_warmup(tmp_path):
    import argparse

    from kyara.cli import distill as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    assert cli.checked_config(parser.parse_args(["distill", "x.png", "-o", "x.kyara", "--lr-warmup", "500"])).lr_warmup_steps == 500
    with pytest.raises(KyaraError, match="--lr-warmup must be >= 0"):
        cli.checked_config(parser.parse_args(["distill", "x.png", "-o", "x.kyara", "--lr-warmup", "-3"]))


def test_face_lr_scale_sets_the_face_rate_only(tmp_path):
    """DistillConfig.face_lr_scale: the face morpher's multiplier where set (0 = lr_scale's); the body keeps lr_scale.
    A run's last step carries both rates into its checkpoint."""
    import argparse

    from kyara.cli import distill as cli
    from kyara.distill.config import THA4_FACE_PHASES, lr_at, step_lr
    from kyara.distill.checkpoint import CHECKPOINT_NAME, load_checkpoint

    config = replace(TINY, lr_scale=6.0, face_lr_scale=3.0)
    assert step_lr(THA4_FACE_PHASES, config, 0, 100, "face") == pytest.approx(lr_at(THA4_FACE_PHASES, 0.0) * 3.0)
    assert step_lr(THA4_FACE_PHASES, replace(config, face_lr_scale=0.0), 0, 100, "face") == \
        pytest.approx(lr_at(THA4_FACE_PHASES, 0.0) * 6.0)
    distill(_image(), FakeTeacher(), config, out_dir=tmp_path, name="tiny", progress=False, student=_tiny_student())
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    for name, phases, scale in (("face_opt", config.face_phases, 3.0), ("body_opt", config.body_phases, 6.0)):
        assert json.loads(meta[name])["param_groups"][0]["lr"] == pytest.approx(lr_at(phases, 3 / 4) * scale)
    with pytest.raises(ValueError, match="face_lr_scale must be 0"):
        replace(TINY, face_lr_scale=-1.0)
    assert DistillConfig.from_json('{"seed": 0}').face_lr_scale == 0.0

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = ["distill", "x.png", "-o", "x.kyara"]
    assert cli.checked_config(parser.parse_args(args + ["--face-lr-scale", "2.5"])).face_lr_scale == 2.5
    assert cli.checked_config(parser.parse_args(args)).face_lr_scale == 3.0                     # the default recipe's
    assert cli.checked_config(parser.parse_args(args + ["--face-lr-scale", "0"])).face_lr_scale == 0.0   # = --lr-scale's
    with pytest.raises(KyaraError, match="--face-lr-scale must be 0"):
        cli.checked_config(parser.parse_args(args + ["--face-lr-scale", "-1"]))
    assert cli.checked_config(parser.parse_args(args + ["--divergence-check", "100"])).divergence_check_steps == 100
    with pytest.raises(KyaraError, match="--divergence-check must be >= 0"):
        cli.checked_config(parser.parse_args(args + ["--divergence-check", "-1"]))
