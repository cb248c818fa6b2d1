"""The edge-aware body loss (DistillConfig.edge_weight, `kyara distill --edge-weight`; issue 16 item 2):
it pushes only on the teacher's silhouette edges, and with the weight at 0 the loss is exactly the old one."""
import json

import pytest
import torch

from kyara.distill.config import DistillConfig, Phase
from kyara.distill.losses import EDGE_DILATE_PX, alpha_edges, body_loss, box_max, flow_weight, l1
from kyara.student import BodyMorpherOutput

H = W = 64  # the loss is size-agnostic; small images keep the test fast
SQUARE = (slice(16, 48), slice(16, 48))  # the opaque character in the target: a 32×32 square
PHASE = Phase(1.0, 1e-4, w_blended=10.0, w_warped=1.0, w_flow=2.0, w_color=0.5)


def _target() -> torch.Tensor:
    """(1, 4, H, W) model space: a grey opaque square on a transparent background."""
    image = torch.full((1, 4, H, W), -1.0)
    image[:, :3, SQUARE[0], SQUARE[1]] = 0.2
    image[:, 3, SQUARE[0], SQUARE[1]] = 1.0
    return image


def _student(image: torch.Tensor, seed: int = 0) -> BodyMorpherOutput:
    g = torch.Generator().manual_seed(seed)
    r = lambda c: torch.rand(1, c, H, W, generator=g) * 2 - 1   # noqa: E731
    return BodyMorpherOutput(image, r(1), r(4), r(4), r(2) * 0.1)


@pytest.mark.parametrize("radius", [0, 1, 2, 8])
def test_box_max_is_the_square_max_pool_exactly(radius):
    """The column-then-row maximum is max_pool2d's square window value for value (a maximum only picks one
    of its inputs, so there is no rounding to tolerate), at the image borders too (both pad with −inf)."""
    g = torch.Generator().manual_seed(radius)
    x = torch.randn(2, 3, 37, 50, generator=g)
    x[0, 0, 5:9, 7:30] = 1.0   # ties
    square = torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(box_max(x, radius), square)
    mask = (x > 1.5).float()   # the flow mask's use: a dilation of a 0/1 image
    assert torch.equal(box_max(mask, radius), torch.nn.functional.max_pool2d(mask, 2 * radius + 1, 1, radius))


def test_alpha_edges_mark_a_band_around_the_silhouette_only():
    edges = alpha_edges(_target())[0, 0]
    assert edges.shape == (H, W)
    band = torch.zeros(H, W, dtype=torch.bool)   # pixels within EDGE_DILATE_PX of the square's boundary
    lo, hi = SQUARE[0].start, SQUARE[0].stop
    band[lo - EDGE_DILATE_PX:hi + EDGE_DILATE_PX, lo - EDGE_DILATE_PX:hi + EDGE_DILATE_PX] = True
    band[lo + EDGE_DILATE_PX:hi - EDGE_DILATE_PX, lo + EDGE_DILATE_PX:hi - EDGE_DILATE_PX] = False
    assert torch.equal(edges[band], torch.ones(int(band.sum())))   # a hard edge: exactly 1 in the band
    assert torch.equal(edges[~band], torch.zeros(int((~band).sum())))  # flat alpha: exactly 0


def test_edge_weight_zero_is_exactly_the_old_loss():
    target = _target()
    g = torch.Generator().manual_seed(1)
    warped, flow = torch.rand(1, 4, H, W, generator=g), torch.rand(1, 2, H, W, generator=g) * 0.1
    pred = (target + 0.3 * torch.rand(1, 4, H, W, generator=g)).requires_grad_(True)
    out = _student(pred)
    loss, terms = body_loss(out, target, warped, flow, PHASE, blended_l2=40.0, edge_weight=0.0)
    assert "edge_mse" not in terms
    # the loss as it was before edge_weight existed, written out from its parts
    w = flow_weight(target)
    old = (PHASE.w_blended * (l1(pred, target) + 40.0 * (pred - target).square().mean())
           + PHASE.w_warped * l1(out.warped, warped)
           + PHASE.w_flow * ((out.flow - flow).abs() * w).mean() / w.mean().clamp_min(1e-6)
           + PHASE.w_color * l1(out.color, target))
    assert torch.equal(loss, old)   # the same operations in the same order: bit-identical
    grad, = torch.autograd.grad(loss, pred)
    grad_old, = torch.autograd.grad(old, pred)
    assert torch.equal(grad, grad_old)


@pytest.mark.parametrize("where", ["edge", "interior", "background"])
def test_edge_weight_adds_loss_only_for_errors_on_the_edge(where):
    target = _target()
    pred = target.clone()
    y, x = {"edge": (16, 30), "interior": (31, 31), "background": (4, 4)}[where]
    pred[:, :, y, x] += 0.5   # one wrong pixel, the same error wherever it is
    off, _ = body_loss(_student(pred), target, target, torch.zeros(1, 2, H, W), PHASE, blended_l2=40.0)
    on, terms = body_loss(_student(pred), target, target, torch.zeros(1, 2, H, W), PHASE, blended_l2=40.0,
                          edge_weight=8.0)
    # only the edge term differs: 4 channels × 0.25 squared error at one pixel, × edge map (1 or 0), / pixels
    expected = 4 * 0.25 / (4 * H * W) if where == "edge" else 0.0
    assert terms["edge_mse"].item() == pytest.approx(expected, rel=1e-6)   # float32 sums of a few terms
    assert (on - off).item() == pytest.approx(PHASE.w_blended * 8.0 * expected, rel=1e-5, abs=1e-9)


def test_edge_term_gradient_sits_on_the_edge_band():
    target = _target()
    pred = (target + 0.1).requires_grad_(True)   # the same error everywhere
    off, _ = body_loss(_student(pred), target, target, torch.zeros(1, 2, H, W), PHASE)
    on, _ = body_loss(_student(pred), target, target, torch.zeros(1, 2, H, W), PHASE, edge_weight=8.0)
    extra, = torch.autograd.grad(on - off, pred)
    edges = alpha_edges(target)[0, 0] > 0
    assert (extra[0].abs().sum(0)[edges] > 0).all()
    assert torch.count_nonzero(extra[0].abs().sum(0)[~edges]) == 0


def test_distill_loop_passes_the_edge_weight(tmp_path):
    """The loop hands DistillConfig.edge_weight to the body loss: the term shows in log.jsonl when on."""
    from dataclasses import replace

    from kyara.distill import distill
    from kyara.distill.checkpoint import LOG_NAME
    from kyara.student import BodyMorpher, FaceMorpher, Student
    from tests.fakes import FakeTeacher

    config = DistillConfig(teacher="fake", examples=2, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                           pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=0.0, checkpoint_every_examples=2,
                           mask_poses=2)
    image = torch.rand(4, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    image[3, :, :100] = -1   # a transparent band: the teacher's output has a silhouette edge
    logs = {}
    for weight in (0.0, 8.0):
        torch.manual_seed(0)
        student = Student(FaceMorpher(hidden=16, num_layers=3), BodyMorpher(levels=((128, 16, 8), (512, 8, 8))))
        out = tmp_path / str(weight)
        distill(image, FakeTeacher(), replace(config, edge_weight=weight), out_dir=out, name="tiny",
                progress=False, student=student)
        logs[weight] = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert all("edge_mse" not in line for line in logs[0.0])
    assert any(line.get("edge_mse", 0.0) > 0 for line in logs[8.0])
