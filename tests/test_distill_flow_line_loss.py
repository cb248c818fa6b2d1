"""The line-weighted flow term (DistillConfig.flow_line_weight, `kyara distill --flow-line-weight`; issue 16):
the flow term's pixels weighed 1 + L on the teacher image's lines, a weighted mean; with L at 0 the loss is
exactly the old one, a uniform flow error costs the same at any L, and the push moves onto the lines."""
import json

import pytest
import torch

from kyara.distill.config import DistillConfig, Phase
from kyara.distill.losses import body_loss, flow_weight, line_detail
from kyara.student import BodyMorpherOutput

H = W = 64  # the loss is size-agnostic; small images keep the test fast
PHASE = Phase(1.0, 1e-4, w_blended=10.0, w_warped=1.0, w_flow=2.0, w_color=0.5)
LINE_COL = 32   # the target's one line: a dark vertical stroke one pixel wide in a flat opaque square


def _target() -> torch.Tensor:
    """(1, 4, H, W) model space: a flat grey opaque square (rows and columns 8–55), a black line at LINE_COL."""
    image = torch.full((1, 4, H, W), -1.0)
    image[:, :3, 8:56, 8:56] = 0.4
    image[:, 3, 8:56, 8:56] = 1.0
    image[:, :3, 8:56, LINE_COL] = -1.0
    return image


def _student(flow: torch.Tensor) -> BodyMorpherOutput:
    g = torch.Generator().manual_seed(0)
    r = lambda c: torch.rand(1, c, H, W, generator=g) * 2 - 1   # noqa: E731
    return BodyMorpherOutput(r(4), r(1), r(4), r(4), flow)


def test_line_detail_is_one_on_the_line_and_zero_on_flat_colour():
    d = line_detail(_target())[0, 0]
    assert d.shape == (H, W)
    # central differences: the stroke's two neighbours see it (the stroke itself sees flat grey either side)
    assert torch.equal(d[20:44, LINE_COL - 1], torch.ones(24)) and torch.equal(d[20:44, LINE_COL + 1], torch.ones(24))
    assert torch.equal(d[20:44, 12:LINE_COL - 2], torch.zeros(24, LINE_COL - 14))      # flat grey inside
    assert torch.equal(d[:4], torch.zeros(4, W))                                          # empty background
    assert (d >= 0).all() and (d <= 1).all()


def test_flow_line_weight_zero_is_exactly_the_old_loss():
    target = _target()
    g = torch.Generator().manual_seed(1)
    flow = (torch.rand(1, 2, H, W, generator=g) * 0.1).requires_grad_(True)
    warped, target_flow = torch.rand(1, 4, H, W, generator=g), torch.rand(1, 2, H, W, generator=g) * 0.1
    out = _student(flow)
    old, old_terms = body_loss(out, target, warped, target_flow, PHASE, blended_l2=40.0)
    new, terms = body_loss(out, target, warped, target_flow, PHASE, blended_l2=40.0, flow_line_weight=0.0)
    assert terms.keys() == old_terms.keys()
    assert torch.equal(new, old)   # the same operations in the same order: bit-identical
    assert torch.equal(torch.autograd.grad(new, flow)[0], torch.autograd.grad(old, flow)[0])


def test_a_uniform_flow_error_costs_the_same_at_any_line_weight():
    """A weighted mean of a constant is the constant: the term keeps its size, so --flow-weight keeps its meaning."""
    target = _target()
    target_flow = torch.zeros(1, 2, H, W)
    out = _student(torch.full((1, 2, H, W), 0.01))
    terms = [body_loss(out, target, target, target_flow, PHASE, flow_line_weight=L)[1]["flow"] for L in (0.0, 8.0, 100.0)]
    # float32 sums of 64² products, normalised by another such sum: equal to a few ulps of 0.01
    for t in terms[1:]:
        torch.testing.assert_close(t, terms[0], rtol=1e-5, atol=0)


@pytest.mark.parametrize("where", ["line", "flat"])
def test_the_line_weight_moves_the_flow_terms_push_onto_the_lines(where):
    """The same flow error, once beside the line and once on flat colour: with L > 0 the term grows for the
    first and shrinks for the second; its gradient stays where the error is, and is larger per pixel on the line."""
    target, target_flow = _target(), torch.zeros(1, 2, H, W)
    col = LINE_COL + 1 if where == "line" else 16
    flow = torch.zeros(1, 2, H, W)
    flow[:, :, 20:44, col] = 0.01
    values = {}
    for L in (0.0, 8.0):
        leaf = flow.clone().requires_grad_(True)
        loss, terms = body_loss(_student(leaf), target, target, target_flow, PHASE, flow_line_weight=L)
        values[L] = (terms["flow"], torch.autograd.grad(loss, leaf)[0])
    assert (values[8.0][0] > values[0.0][0]) if where == "line" else (values[8.0][0] < values[0.0][0])
    grad_at_error = values[8.0][1][0, :, 20:44, col].abs().mean() / values[0.0][1][0, :, 20:44, col].abs().mean()
    assert grad_at_error > 1 if where == "line" else grad_at_error < 1
    # the flow term's share of the gradient: w_flow · sign(error) · weight / Σ weight, on the visible pixels only
    visible = flow_weight(target)[0, 0] > 0
    assert torch.count_nonzero(values[8.0][1][0, :, ~visible]) == 0


def test_the_subset_path_passes_the_line_weights():
    """step.subset_body_loss on the whole region, with the line weight on, has the full loss's gradients (the
    line detail is taken from the whole image and gathered, like the flow mask)."""
    from tests.test_distill_pixel_subsets import _scene, assert_subset_grads_match_full

    image, _, flow, region = _scene()
    image[:, :3] = 0.2                     # flat colour with a few lines, so the weights differ across pixels
    image[:, :3, :, 190:330:20] = -0.8
    final = image.roll(shifts=(6, -4), dims=(2, 3)).clone()
    flow_only = Phase(1.0, 1e-4, w_blended=0.0, w_warped=0.0, w_flow=1.0, w_color=0.0)   # the term under test alone
    assert_subset_grads_match_full(image, final, flow, region, flow_only, DistillConfig(flow_line_weight=8.0))


def test_flow_line_weight_is_checked_and_off_for_old_configs():
    with pytest.raises(ValueError, match="flow_line_weight must be a number >= 0"):
        DistillConfig(flow_line_weight=-1.0)
    with pytest.raises(ValueError, match="needs masked_flow"):
        DistillConfig(flow_line_weight=4.0, masked_flow=False)
    with pytest.raises(ValueError, match="needs masked_flow"):
        body_loss(_student(torch.zeros(1, 2, H, W)), _target(), _target(), torch.zeros(1, 2, H, W), PHASE,
                  masked_flow=False, flow_line_weight=4.0)
    saved = json.loads(DistillConfig().to_json())
    del saved["flow_line_weight"]
    assert DistillConfig.from_json(json.dumps(saved)).flow_line_weight == 0.0


def test_the_cli_option_reaches_the_config():
    import argparse

    from kyara.cli import distill as cli_distill
    from kyara.errors import KyaraError

    parser = argparse.ArgumentParser()
    cli_distill.register(parser.add_subparsers())
    args = parser.parse_args(["distill", "x.png", "-o", "x.kyara", "--flow-line-weight", "8"])
    assert cli_distill.checked_config(args).flow_line_weight == 8.0
    assert cli_distill.checked_config(parser.parse_args(["distill", "x.png", "-o", "x.kyara"])).flow_line_weight == 0.0
    args = parser.parse_args(["distill", "x.png", "-o", "x.kyara", "--flow-line-weight", "-1"])
    with pytest.raises(KyaraError, match="--flow-line-weight"):
        cli_distill.checked_config(args)
