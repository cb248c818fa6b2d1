"""kyara.distill.step.TrainStep: the training step the loop runs (and benchmarks/distill_step.py times).

The loop's numbers through it are checked by tests/test_distill.py (loss falls, exact resume, parts); here: the
order of its random draws, which checkpoints of earlier runs replay, and (on a GPU) that a step never waits for
the GPU.
"""
from dataclasses import replace

import pytest
import torch

from kyara.distill.pool import TeacherPool
from kyara.distill.step import TrainStep, optimizers, pixel_parts
from kyara.pose_sampler import sample_poses
from tests.test_distill import TINY, _image, _tiny_student


def _setup(device: torch.device, config, pool_size: int = 8):
    """A tiny student on a region, its optimizers, and a pool of stand-in teacher data on `device`."""
    student = _tiny_student().to(device)
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[64:448, 96:416] = True
    student.set_region(region)
    g = torch.Generator().manual_seed(5)
    pool = TeacherPool(None, None, pool_size, pool_size, 0, device)
    pool.final.copy_(torch.rand(pool.final.shape, generator=g) * 2 - 1)
    pool.flow.copy_(torch.randn(pool.flow.shape, generator=g) * 0.01)
    pool.face_crop.copy_(torch.rand(pool.face_crop.shape, generator=g) * 2 - 1)
    pool.poses.copy_(sample_poses(pool_size, g))
    pool.chunks_made = pool.num_slots
    opts = optimizers(student, config, device)
    mask = torch.ones(1, 1, 128, 128, device=device)
    return TrainStep(student, _image().to(device), mask, config, *opts), pool


def test_draws_come_in_the_order_earlier_runs_replay():
    """Face examples, face part, body examples, body part, from one generator: the order the loop drew them in
    before TrainStep existed, so a run resumed from an older checkpoint continues with the same batches."""
    config = replace(TINY, batch_size=3, face_batch_multiplier=2, pool_size=8, body_pixel_fraction=0.5,
                     face_pixel_fraction=0.25)
    step, pool = _setup(torch.device("cpu"), config)
    face_idx, face_part, body_idx, body_part = step.draw(pool, torch.Generator().manual_seed(11))

    g = torch.Generator().manual_seed(11)
    want_face = torch.randint(pool.size, (6,), generator=g)
    want_face_part = step.face_parts.sets[int(torch.randint(len(step.face_parts.sets), (1,), generator=g))]
    want_body = torch.randint(pool.size, (3,), generator=g)
    want_body_part = step.body_parts.sets[int(torch.randint(len(step.body_parts.sets), (1,), generator=g))]
    assert torch.equal(face_idx, want_face) and torch.equal(body_idx, want_body)
    assert face_part is want_face_part and body_part is want_body_part
    # every pixel: no part is drawn, and the examples' draws stay where they were
    whole, _ = _setup(torch.device("cpu"), replace(config, body_pixel_fraction=1.0, face_pixel_fraction=1.0))
    assert whole.body_parts is None and whole.face_parts is None
    f, fp, b, bp = whole.draw(pool, torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    assert torch.equal(f, torch.randint(pool.size, (6,), generator=g)) and fp is None and bp is None
    assert torch.equal(b, torch.randint(pool.size, (3,), generator=g))


def test_pixel_parts_follow_the_config():
    student = _tiny_student()
    assert pixel_parts(student, TINY, torch.device("cpu")) == (None, None)
    body, face = pixel_parts(student, replace(TINY, body_pixel_fraction=0.25, face_pixel_fraction=0.5),
                             torch.device("cpu"))
    assert body.parts_per_partition == 4 and face.parts_per_partition == 2


def test_optimizers_are_fused_only_where_fp16_loss_scaling_runs():
    student = _tiny_student()
    for opt in optimizers(student, replace(TINY, amp="fp16"), torch.device("cpu")):   # amp is off on a CPU
        assert not opt.defaults["fused"] and opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.999)
    face, body = optimizers(student, TINY, torch.device("cpu"))
    assert face.param_groups[0]["params"] == list(student.face_morpher.parameters())
    assert body.param_groups[0]["params"] == list(student.body_morpher.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("fraction", [1.0, 0.25], ids=["every pixel", "parts"])
@pytest.mark.parametrize("compile,amp,graphs", [(False, "", False), (True, "", False), (True, "fp16", False), (True, "", True)],
                         ids=["eager", "compiled", "compiled-fp16", "compiled-graphs"])
def test_a_step_never_waits_for_the_gpu(fraction, compile, amp, graphs):
    """A warmed-up step only queues work: torch's sync debug mode raises on any host-device synchronisation
    (a plain .to(device) of the indices, .item(), a pageable copy). Before session 11 the loop synchronised
    twice a step (and twice more with fp16 loss scaling, whose overflow check foreach Adam read back), so the
    CPU could never queue a step ahead of the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = replace(TINY, batch_size=4, face_batch_multiplier=2, pool_size=8, compile=compile, amp=amp,
                     body_pixel_fraction=fraction, face_pixel_fraction=fraction, cuda_graphs=graphs)
    step, pool = _setup(torch.device("cuda"), config)
    assert (step.graphs is not None) == graphs
    phase = config.body_phases[2]
    g = torch.Generator().manual_seed(0)
    # compiling (a recompile for a new part size too) and the caches' first fills may synchronise: warm up until
    # every part has been drawn (4·K parts; 40 draws miss one with probability ≈ 16·(15/16)⁴⁰ ≈ 1 %, and a miss only
    # matters if that part's size recompiles, which maybe_mark_dynamic prevents)
    for _ in range(3 if fraction == 1 else 40):
        step(pool, g, phase)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            losses = step(pool, g, phase)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(losses.body) and torch.isfinite(losses.face)


def test_cuda_graphs_fall_back_where_they_cannot_run():
    """config.cuda_graphs (on by default) is for one CUDA process in fp32: on a CPU the step runs as before."""
    config = replace(TINY, batch_size=2, face_batch_multiplier=2, pool_size=8)
    assert config.cuda_graphs
    step, pool = _setup(torch.device("cpu"), config)
    assert step.graphs is None
    losses = step(pool, torch.Generator().manual_seed(0), config.body_phases[0])
    assert torch.isfinite(losses.body) and torch.isfinite(losses.face)


def test_a_failed_capture_warns_and_trains_without_graphs(monkeypatch):
    """If capturing fails (out of memory, an op a capture refuses on some driver), the run goes on with the plain
    step and says so, instead of dying in its first step. On a CPU, with a capture that always fails: the
    step that follows is exactly the plain step's."""
    config = replace(TINY, batch_size=2, face_batch_multiplier=2, pool_size=8)

    class FailingGraphs:
        captured: dict = {}

        def capture(self, key, fn):
            fn()    # the warm-up pass runs (and leaves gradients behind), then the capture fails
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    plain, pool = _setup(torch.device("cpu"), config)
    want = plain(pool, torch.Generator().manual_seed(0), config.body_phases[0])
    step, pool = _setup(torch.device("cpu"), config)
    step.graphs = (FailingGraphs(), FailingGraphs())
    step._indices = torch.zeros(step.face_batch + config.batch_size, dtype=torch.int64)
    step._weights = torch.tensor([1.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr(step, "_load_weights", lambda phase: None)   # pinned memory needs CUDA
    with pytest.warns(RuntimeWarning, match="without CUDA graphs: .*RuntimeError: operation not permitted"):
        got = step(pool, torch.Generator().manual_seed(0), config.body_phases[0])
    assert step.graphs is None
    assert torch.equal(got.face, want.face) and torch.equal(got.body, want.body)
    for a, b in zip(plain.student.parameters(), step.student.parameters()):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("fraction", [1.0, 0.25], ids=["every pixel", "parts"])
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_graphs_train_as_the_plain_step_does(fraction, compile):
    """config.cuda_graphs replays captured passes: the same training as the plain step, step by step, across a
    phase change (the loss weights live in a tensor the graphs read) and with new examples every step (the
    indices live in a buffer the graphs read; a graph that kept its capture-time examples or weights would
    drift away at once)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    base = replace(TINY, batch_size=4, face_batch_multiplier=2, pool_size=8, compile=compile,
                   body_pixel_fraction=fraction, face_pixel_fraction=fraction)
    phases = base.body_phases
    runs = {}
    for graphs in (False, True):
        step, pool = _setup(torch.device("cuda"), replace(base, cuda_graphs=graphs))
        start = [p.detach().clone() for p in step.student.parameters()]
        g = torch.Generator().manual_seed(0)
        losses = []
        for i in range(60):
            out = step(pool, g, phases[2] if i < 30 else phases[4])
            losses.append((float(out.face), float(out.body)))   # valid until the next step under graphs
        runs[graphs] = ([p.detach().clone() for p in step.student.parameters()], losses, step)
    step = runs[True][2]
    assert step.graphs is not None    # every part's graph captured in the first call
    assert [len(pg.captured) for pg in step.graphs] == [len(parts.sets) if parts is not None else 1
                                                        for parts in (step.face_parts, step.body_parts)]
    # The replays run the eager run's kernels on the same data; what differs is the order of atomic adds in
    # some backward kernels (index_add of the parts' gathers; float rounding, not measured per step), which Adam carries
    # into the weights: the bound is 1 % of the largest update, per tensor. (On these random targets the
    # updates barely depend on which examples a step sees, so the losses below, read after every step, are the
    # sharper check: a graph that read stale examples, or whose outputs another graph overwrote, shows there.)
    # Measured on an H100 (session 14, torch 2.11+cu130): 0 in all four cases, weights and losses alike; the
    # bounds are headroom for GPUs and versions whose atomics add in another order.
    ratios = []
    for s, a, b in zip(start, runs[False][0], runs[True][0]):
        update = (a - s).abs().max()
        ratios.append(float((a - b).abs().max() / (update + 1e-12)))
        assert (a - b).abs().max() <= 0.01 * update + 1e-7, "graphed training drifted from the plain step"
    plain, replayed = torch.tensor(runs[False][1]), torch.tensor(runs[True][1])
    # Printed (pytest -s) so the bounds can be set against measured values.
    print(f"\ngraphs vs plain ({fraction=}, {compile=}): weights max |diff|/update {max(ratios):.2e}; "
          f"losses max rel diff {float(((replayed - plain).abs() / plain.abs().clamp_min(1e-12)).max()):.2e}")
    torch.testing.assert_close(replayed, plain, rtol=1e-3, atol=1e-6)
