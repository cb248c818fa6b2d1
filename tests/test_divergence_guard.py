"""The divergence guard (kyara.distill.guard, DistillConfig.divergence_check_steps): a network whose loss blows up
goes back to its last healthy weights, Adam state and weight average, and on at half its learning rate; healthy
training is left alone."""
import json
from dataclasses import replace

import pytest
import torch

from kyara.distill import distill
from kyara.distill.checkpoint import CHECKPOINT_NAME, LOG_NAME
from kyara.distill.config import DistillConfig
from kyara.distill.ema import WeightAverage
from kyara.distill.guard import DivergenceGuard
from tests.fakes import FakeTeacher
from tests.test_distill import TINY, _image, _tiny_student


def _two_networks():
    torch.manual_seed(0)
    face, body = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-2) for n, m in (("face", face), ("body", body))}
    average = WeightAverage([("face." + k, p) for k, p in face.named_parameters()]
                            + [("body." + k, p) for k, p in body.named_parameters()], 0.9)
    nets = {}
    for name, module in (("face", face), ("body", body)):
        nets[name] = (list(module.parameters()), opts[name],
                      [a for n, a in zip(average.names, average.average) if n.startswith(name + ".")])
    return face, body, opts, average, nets


def _train(module, opt, average):
    loss = module(torch.ones(1, module.in_features)).square().sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    average.update()


def _window(guard, face, body, steps=4):
    for _ in range(steps):
        guard.add({"face": torch.tensor(face), "body": torch.tensor(body)})


def test_a_blown_up_network_goes_back_to_its_older_healthy_state_at_half_the_rate():
    face, body, opts, average, nets = _two_networks()
    guard = DivergenceGuard(nets, every_steps=4)
    _train(face, opts["face"], average)
    _train(body, opts["body"], average)
    _window(guard, 1.0, 1.0)
    assert guard.check(4) == []                                        # the first window: a snapshot, nothing to compare
    healthy = {k: v.clone() for k, v in face.state_dict().items()}
    healthy_adam = [t.clone() for t in opts["face"].state[face.weight].values()]
    healthy_average = [a.clone() for a in nets["face"][2]]
    _train(face, opts["face"], average)                                # the blow-up may start inside a window
    _window(guard, 0.8, 0.9)                                           # that still looks healthy,
    assert guard.check(8) == []
    body_before = {k: v.clone() for k, v in body.state_dict().items()}
    for _ in range(3):
        _train(face, opts["face"], average)
    assert not torch.equal(face.weight, healthy["weight"])
    _window(guard, 0.8 * 2.5, 0.85)                                    # and shows in the next: 2.5× the best
    (rollback,) = guard.check(12)
    assert (rollback.network, rollback.step, rollback.restored_step, rollback.lr_factor) == ("face", 12, 4, 0.5)
    assert rollback.loss == pytest.approx(2.0) and rollback.best == pytest.approx(0.8)
    for k, v in face.state_dict().items():                             # so it goes back two checks, to step 4's
        assert torch.equal(v, healthy[k]), k
    for now, then in zip(opts["face"].state[face.weight].values(), healthy_adam):
        assert torch.equal(now, then)                                  # Adam's moments and step count too
    for now, then in zip(nets["face"][2], healthy_average):
        assert torch.equal(now, then)                                  # and the weight average's share
    for k, v in body.state_dict().items():
        assert torch.equal(v, body_before[k]), k                       # the healthy network is untouched
    assert (guard.lr_factor("face"), guard.lr_factor("body")) == (0.5, 1.0)
    assert guard.state() == {"lr_factors": {"face": 0.5, "body": 1.0},
                             "best": {"face": pytest.approx(0.8), "body": pytest.approx(0.85)},
                             "rollbacks": [rollback.__dict__]}
    # a second blow-up right after goes back to the same state (the newer snapshot, step 8's, was dropped)
    _train(face, opts["face"], average)
    _window(guard, 5.0, 0.85)
    (again,) = guard.check(16)
    assert (again.restored_step, again.lr_factor) == (4, 0.25)
    assert torch.equal(face.weight, healthy["weight"])


def test_a_non_finite_loss_is_divergence_and_steady_noise_is_not():
    face, body, opts, average, nets = _two_networks()
    guard = DivergenceGuard(nets, every_steps=4)
    # losses that wander up to 1.9× their best (under the 2× line) are left alone
    for step, (f, b) in enumerate([(1.0, 1.0), (0.6, 0.9), (1.1, 1.7), (0.7, 1.0)]):
        _window(guard, f, b)
        assert guard.check(4 * (step + 1)) == []
    _window(guard, float("nan"), 1.0)
    (rollback,) = guard.check(20)
    assert rollback.network == "face" and guard.lr_factor("face") == 0.5
    # decide: every rank does what the main rank decided (here: body too, though its own loss is fine)
    _window(guard, 0.6, 1.0)
    assert [r.network for r in guard.check(24, decide=lambda mask: mask | 2)] == ["body"]


def test_the_guard_checks_its_arguments():
    _, _, _, _, nets = _two_networks()
    with pytest.raises(ValueError, match="every_steps >= 1 and ratio > 1"):
        DivergenceGuard(nets, every_steps=0)
    with pytest.raises(ValueError, match="every_steps >= 1 and ratio > 1"):
        DivergenceGuard(nets, every_steps=4, ratio=1.0)
    with pytest.raises(ValueError, match="divergence_check_steps must be >= 0"):
        DistillConfig(divergence_check_steps=-1)
    # runs saved before the guard existed resume without one
    assert DistillConfig.from_json(json.dumps({"seed": 0})).divergence_check_steps == 0
    assert DistillConfig().divergence_check_steps == 500


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_distillation_logs_its_rollbacks_halves_the_rate_and_keeps_them_in_its_files(tmp_path, monkeypatch, device):
    """In the loop: a blow-up is forced by a 10⁴-fold face learning rate at step 3 only. The check of step 4
    still sees healthy losses (step 3's loss came before its update), the check of step 6 sees the damage; the
    guard restores the face morpher of step 2 (the check before: step 4's snapshot holds the bad update),
    logs it, halves the face's rate for the rest of the run, and writes the factor into the checkpoint and the
    rollback into the character's metrics. The body morpher is left alone. On CUDA with the default CUDA graphs
    of the training passes (pixel parts), whose captured weights the rollback must change in place."""
    import kyara.distill.loop as loop

    config = replace(TINY, examples=8, checkpoint_every_examples=4, divergence_check_steps=2)
    teacher = FakeTeacher()
    if device == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        config = replace(config, compile=False, body_pixel_fraction=0.5, face_pixel_fraction=0.5)
        teacher.device = torch.device("cuda")
    real_step_lr = loop.step_lr

    def step_lr(phases, cfg, step, total, network="body"):
        lr = real_step_lr(phases, cfg, step, total, network)
        return lr * 1e4 if phases is cfg.face_phases and step == 3 else lr

    monkeypatch.setattr(loop, "step_lr", step_lr)
    result = distill(_image(), teacher, config, out_dir=tmp_path, name="tiny", progress=False,
                     student=_tiny_student())
    log = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    events = [r for r in log if r.get("event") == "rollback"]
    assert [(e["network"], e["step"], e["restored_step"], e["lr_factor"]) for e in events] == [("face", 6, 2, 0.5)]
    assert events[0]["loss"] > 2 * events[0]["best"]
    assert result.character.metadata["metrics"]["rollbacks"] == [{k: v for k, v in events[0].items() if k != "event"}]
    from safetensors import safe_open
    with safe_open(str(tmp_path / CHECKPOINT_NAME), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["guard"])["lr_factors"] == {"face": 0.5, "body": 1.0}
    # the last step (7 of 8) ran at half the schedule's face rate and the whole body rate
    face_lr = json.loads(meta["face_opt"])["param_groups"][0]["lr"]
    body_lr = json.loads(meta["body_opt"])["param_groups"][0]["lr"]
    assert face_lr == pytest.approx(0.5 * real_step_lr(config.face_phases, config, 7, 8, "face"))
    assert body_lr == pytest.approx(real_step_lr(config.body_phases, config, 7, 8))
    # a guard rebuilt from that state (a resumed run) keeps the halved rate, the bests and the record
    _, _, _, _, nets = _two_networks()
    saved = json.loads(meta["guard"])
    again = DivergenceGuard(nets, 2, lr_factors=saved["lr_factors"], best=saved["best"], rollbacks=saved["rollbacks"])
    assert again.state() == saved
    assert all(torch.isfinite(p).all() for p in result.character.poser.parameters())
