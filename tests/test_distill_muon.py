"""distill.muon: Muon on the sine layers' hidden weights, Adam on the rest (DistillConfig.optimizer = "muon")."""
import dataclasses
import json

import pytest
import torch

from kyara.distill import DistillConfig, distill
from kyara.distill import muon as muon_module
from kyara.distill.checkpoint import CHECKPOINT_NAME, LOG_NAME
from kyara.distill.muon import RMS_MATCH, MuonWithAdam, muon_parameters, orthogonalize, orthogonalize_padded
from kyara.student import Student
from tests.test_distill import TINY, _image, _tiny_student, bit_exact_torch  # noqa: F401 (a fixture)
from tests.fakes import FakeTeacher


@pytest.mark.parametrize("shape", [(90, 137), (360, 47), (128, 128)])
def test_orthogonalize_sets_every_singular_value_near_one(shape):
    """Muon's quintic Newton–Schulz lands singular values in ~[0.68, 1.20] after 5 steps (Jordan et al.), whatever
    their spread before: here a gradient-like matrix whose singular values span two decades (measured: 0.68–1.20
    on all three shapes; at three decades the smallest, under 5 steps' reach, stay at 0.44–0.68)."""
    g = torch.Generator().manual_seed(1)
    u, _, v = torch.linalg.svd(torch.randn(*shape, generator=g), full_matrices=False)
    spread = torch.logspace(0, -2, min(shape))
    s = torch.linalg.svdvals(orthogonalize((u * spread) @ v))
    assert s.min() > 0.65 and s.max() < 1.22, (s.min().item(), s.max().item())
    assert torch.equal(orthogonalize(torch.zeros(*shape)), torch.zeros(*shape))


def test_the_padded_batch_is_the_same_maths_as_one_matrix_at_a_time():
    """The GPU's path (all of a network's matrices turned wide, zero-padded to one shape, one batch) against the
    CPU's (one matrix at a time), on the body morpher's eight shapes, tall and wide: 7e-7 apart at most measured
    (float32 rounding of the batched products, on entries of ~0.05); the bound leaves 10×."""
    student = Student()
    shapes = [p.shape[:2] for p in student.body_morpher.parameters() if id(p) in muon_parameters(student.body_morpher)]
    g = torch.Generator().manual_seed(3)
    matrices = [torch.randn(*shape, generator=g) for shape in shapes]
    for one, batched in zip([orthogonalize(m) for m in matrices], orthogonalize_padded(matrices)):
        assert one.shape == batched.shape
        torch.testing.assert_close(batched, one, rtol=0, atol=7e-6)


def test_the_face_morphers_one_shape_batches_without_padding():
    """The face morpher's matrices are all one shape, so orthogonalize_padded stacks them as they are. Measured
    here: 0 apart (seeds 4–6, 1 and 2 threads); the bound is the padded body's (7e-7 measured there, ×10), since
    another CPU's batched products may round differently from its single ones."""
    student = Student()
    shapes = [p.shape[:2] for p in student.face_morpher.parameters() if id(p) in muon_parameters(student.face_morpher)]
    assert len(set(shapes)) == 1
    g = torch.Generator().manual_seed(4)
    matrices = [torch.randn(*shape, generator=g) for shape in shapes]
    for one, batched in zip([orthogonalize(m) for m in matrices], orthogonalize_padded(matrices)):
        torch.testing.assert_close(batched, one, rtol=0, atol=7e-6)


def _textbook_muon_steps(weights: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float,
                         momentum: float = 0.95) -> None:
    """Muon as written in its paper, one matrix at a time, no fused products: the reference for MuonWithAdam."""
    a, b, c = 3.4445, -4.7750, 2.0315
    buffers = [torch.zeros(w.shape[0], w[0].numel()) for w in weights]
    for step_grads in grads:
        for w, g, buf in zip(weights, step_grads, buffers):
            g = g.reshape(buf.shape)
            buf.mul_(momentum).add_(g)
            x = g + momentum * buf
            tall = x.shape[0] > x.shape[1]
            x = x.T if tall else x
            x = x / (x.norm() + 1e-7)
            for _ in range(5):
                gram = x @ x.T
                x = a * x + (b * gram + c * gram @ gram) @ x
            update = x.T if tall else x
            w -= (lr * RMS_MATCH * max(update.shape) ** 0.5 * update).reshape(w.shape)


@pytest.mark.parametrize("batched", [False, True], ids=["one matrix at a time", "the GPU's padded batch"])
def test_muons_step_is_the_textbook_step(batched, monkeypatch):
    """MuonWithAdam (foreach momentum, the products fused with their scalings, one update a shape) against the
    paper's formulas one matrix at a time, three steps on the body morpher's eight shapes, on the CPU's path and
    on the GPU's (padded batch, updates from its slices). Measured: 3.3e-9 apart
    at most (seeds 5–7, 1 and 2 threads), about one float32 rounding of the weights, while the steps move entries
    up to 1.8e-3. The bound, 1e-7, leaves 30× for other CPUs' summation orders and is still 10⁴× under a step: a
    wrong scale, momentum or coefficient moves the weights by ~1e-4."""
    monkeypatch.setattr(muon_module, "one_batch", lambda parameter: batched)   # the GPU's control flow, here
    net = Student().body_morpher
    muon = [p for p in net.parameters() if id(p) in muon_parameters(net)]
    reference = [p.detach().clone() for p in muon]
    g = torch.Generator().manual_seed(5)
    grads = [[torch.randn(p.shape, generator=g) for p in muon] for _ in range(3)]
    optimizer = MuonWithAdam(net, lr=1e-3)
    for step_grads in grads:
        for p in net.parameters():
            p.grad = None
        for p, grad in zip(muon, step_grads):
            p.grad = grad.clone()
        optimizer.step()
    _textbook_muon_steps(reference, grads, lr=1e-3)
    for p, r in zip(muon, reference):
        torch.testing.assert_close(p.detach(), r, rtol=0, atol=1e-7)


def test_muon_takes_the_hidden_sine_weights_and_adam_the_rest():
    student = Student()
    for net in (student.face_morpher, student.body_morpher):
        chosen = muon_parameters(net)
        names = {n for n, p in net.named_parameters() if id(p) in chosen}
        assert names and all(n.endswith("linear.weight") and "last_linear" not in n for n in names)
        first = next(n for n, _ in net.named_parameters())   # the layer reading raw position and pose
        assert first not in names
        opt = MuonWithAdam(net)
        assert [g["muon"] for g in opt.param_groups] == [True, False]
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_the_adam_part_is_torchs_adam_and_a_muon_step_has_the_matched_size():
    net = _tiny_student().body_morpher
    twin = _tiny_student().body_morpher     # the same weights (_tiny_student seeds itself)
    ours = MuonWithAdam(net, lr=1e-3)
    theirs = torch.optim.Adam([p for p in twin.parameters() if id(p) not in muon_parameters(twin)],
                              lr=1e-3, betas=(0.9, 0.999))
    muon = [p for p in net.parameters() if id(p) in muon_parameters(net)]
    step_rms = []
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        before = [p.detach().clone() for p in muon]
        for p, q in zip(net.parameters(), twin.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
        step_rms += [(p.detach() - b).pow(2).mean().sqrt().item() for p, b in zip(muon, before)]
    for p, q in zip(net.parameters(), twin.parameters()):
        if all(p is not m for m in muon):
            assert torch.equal(p, q)   # torch's own Adam code, on the same gradients
    # a Muon step of lr 1e-3 moves the entries by RMS_MATCH · lr · (the update's singular values' RMS, 0.68–1.20)
    assert all(0.65 * RMS_MATCH * 1e-3 < r < 1.22 * RMS_MATCH * 1e-3 for r in step_rms), step_rms

def test_a_muon_distillation_learns_and_resumes_exactly(tmp_path, bit_exact_torch):  # noqa: F811
    config = dataclasses.replace(TINY, optimizer="muon", examples=8)
    teacher = FakeTeacher()
    straight = distill(_image(), teacher, config, out_dir=tmp_path / "a", name="tiny", progress=False,
                       student=_tiny_student())
    log = [json.loads(line) for line in (tmp_path / "a" / LOG_NAME).read_text().splitlines()]
    assert log[-1]["blended"] < log[0]["blended"] and log[-1]["loss_face"] < log[0]["loss_face"]
    half = tmp_path / "b"
    distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, max_minutes=1e-9,
            student=_tiny_student())
    resumed = distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, resume=True,
                      student=_tiny_student())
    for (k, x), (_, y) in zip(straight.character.poser.state_dict().items(),
                              resumed.character.poser.state_dict().items()):
        assert torch.equal(x, y), f"a resumed Muon run diverged at {k}"
    # and Muon is another run than Adam
    adam = distill(_image(), teacher, dataclasses.replace(config, optimizer="adam"), out_dir=tmp_path / "c",
                   name="tiny", progress=False, student=_tiny_student())
    assert not torch.equal(adam.character.poser.body_morpher.siren_layers[1][0].linear.weight,
                           straight.character.poser.body_morpher.siren_layers[1][0].linear.weight)
    assert (half / CHECKPOINT_NAME).exists()


def test_the_optimizer_is_checked_and_old_runs_resume_with_adam():
    with pytest.raises(ValueError, match="optimizer must be adam or muon"):
        DistillConfig(optimizer="sgd")
    saved = json.loads(DistillConfig().to_json())
    del saved["optimizer"]
    assert DistillConfig.from_json(json.dumps(saved)).optimizer == "adam"


@pytest.mark.gpu
def test_the_gpu_step_matches_the_cpu_step():
    """On a GPU the Muon matrices go through orthogonalize_padded in one batch and Adam through torch's foreach
    kernels; three steps of the body morpher's optimizer on the same gradients end where the CPU's do, to the
    rounding of TF32-free float32 products (bound: 1 % of the largest update of each tensor, as the CUDA-graphs
    test of tests/test_distill.py)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu_net, gpu_net = Student().body_morpher, Student().body_morpher
    gpu_net.load_state_dict(cpu_net.state_dict())
    gpu_net.cuda()
    start = {k: v.clone() for k, v in cpu_net.state_dict().items()}
    opts = MuonWithAdam(cpu_net, lr=1e-3), MuonWithAdam(gpu_net, lr=1e-3)
    g = torch.Generator().manual_seed(4)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for _ in range(3):
            for p, q in zip(cpu_net.parameters(), gpu_net.parameters()):
                p.grad = torch.randn(p.shape, generator=g)
                q.grad = p.grad.cuda()
            for opt in opts:
                opt.step()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    gpu_state = gpu_net.state_dict()
    for k, v in cpu_net.state_dict().items():
        update = (v - start[k]).abs().max()
        assert (gpu_state[k].cpu() - v).abs().max() <= 0.01 * update + 1e-7, k
