"""benchmarks/flow_bands.py: the blur its band split rests on (docs/benchmarks.md, session 38)."""
from __future__ import annotations

import torch

from script_module import load_script


def test_the_blur_keeps_a_constant_and_a_ramp_and_removes_a_checkerboard():
    fb = load_script("benchmarks/flow_bands.py")
    constant = torch.full((1, 2, 32, 32), 0.3)
    assert torch.allclose(fb.gaussian_blur(constant, 2.0), constant, atol=1e-6)
    # a linear ramp is kept away from the edges (a symmetric kernel's mean shift is zero)
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64).contiguous()
    inner = (slice(None), slice(None), slice(10, -10), slice(10, -10))
    assert torch.allclose(fb.gaussian_blur(ramp, 1.5)[inner], ramp[inner], atol=1e-5)
    # the finest pattern (±1 alternating) is what a σ = 2 blur removes: its detail is the whole signal
    checker = ((torch.arange(32).view(-1, 1) + torch.arange(32)) % 2 * 2 - 1).float().view(1, 1, 32, 32)
    assert fb.gaussian_blur(checker, 2.0)[inner].abs().max() < 1e-3
    # the blur mixes no channels: each flow component is blurred alone
    two = torch.cat([constant[:, :1], checker], 1)
    blurred = fb.gaussian_blur(two, 2.0)
    assert torch.allclose(blurred[:, :1], constant[:, :1], atol=1e-6)
