"""benchmarks/flow_basis.py: the principal fields, the visible-pixel fit and the kernel regression it reports on
(docs/benchmarks.md, session 27)."""
from __future__ import annotations

import torch

from script_module import load_script


def _fields(seed: int, n: int, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed))


def test_principal_fields_span_a_rank_three_family_exactly():
    fb = load_script("benchmarks/flow_basis.py")
    mean, directions = _fields(0, 1)[0], _fields(1, 3)
    weights = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    flows = mean + torch.einsum("nk,kchw->nchw", weights, directions)
    got_mean, basis = fb.principal_fields(flows, 3)
    assert torch.allclose(got_mean, flows.mean(0), atol=1e-5)
    gram = basis.reshape(3, -1) @ basis.reshape(3, -1).T
    # measured 1e-7 off the identity (float32 rounding); 1e-4 leaves room and still fails a non-unit basis
    assert torch.allclose(gram, torch.eye(3), atol=1e-4)
    # a new member of the family is reproduced from 3 fields; with 2 it is not
    new = mean + torch.einsum("k,kchw->chw", torch.tensor([0.7, -1.3, 2.1]), directions)
    visible = torch.ones(16, 16, dtype=torch.bool)
    for k, close in ((3, True), (2, False)):
        fitted = got_mean + torch.einsum("k,kchw->chw", fb.fit_visible(new - got_mean, basis[:k], visible), basis[:k])
        assert torch.allclose(fitted, new, atol=1e-3) is close


def test_the_fit_uses_the_visible_pixels_only():
    fb = load_script("benchmarks/flow_basis.py")
    basis = _fields(3, 2)
    target = 0.5 * basis[0] - 2.0 * basis[1]
    visible = torch.zeros(16, 16, dtype=torch.bool)
    visible[:, :8] = True
    spoiled = target.clone()
    spoiled[:, ~visible] = 100.0            # garbage where nothing shows must not move the coefficients
    assert torch.allclose(fb.fit_visible(spoiled, basis, visible), torch.tensor([0.5, -2.0]), atol=1e-4)


def test_kernel_ridge_reproduces_its_training_points_and_resize_keeps_offsets():
    fb = load_script("benchmarks/flow_basis.py")
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(4)) * 2 - 1
    y = torch.stack([x[:, 0] * 2 + x[:, 1] ** 2, torch.sin(3 * x[:, 2])], 1)
    # a small ridge: the fit at the training points is off by 3e-4 at most (measured); 1e-2 fails a regression that
    # ignores its targets (the targets span ~±3)
    assert (fb.kernel_ridge(x, y, x, scale=0.5, ridge=1e-4) - y).abs().max() < 1e-2
    constant = torch.full((1, 2, 8, 8), 0.25)
    assert torch.allclose(fb.resize(constant, 32), torch.full((1, 2, 32, 32), 0.25))
    assert torch.allclose(fb.resize(torch.full((2, 32, 32), -0.5), 8), torch.full((2, 8, 8), -0.5))
