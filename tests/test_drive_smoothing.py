"""One-euro filter: reduces jitter at rest, follows fast moves, works on arrays."""
import numpy as np
import pytest

from kyara.drive.smoothing import OneEuroFilter


def _run(f, xs, dt=1 / 60):
    return np.array([f(x, i * dt) for i, x in enumerate(xs)])


def test_reduces_jitter_at_rest():
    rng = np.random.default_rng(0)
    noisy = 0.3 + rng.normal(0, 0.02, 600)
    out = _run(OneEuroFilter(min_cutoff=1.0, beta=0.5), noisy)
    assert out[60:].std() < 0.35 * noisy[60:].std()
    assert abs(out[60:].mean() - 0.3) < 0.01


def test_beta_cuts_lag_on_fast_moves():
    step = np.r_[np.zeros(30), np.ones(30)]
    slow = _run(OneEuroFilter(min_cutoff=1.0, beta=0.0), step)
    fast = _run(OneEuroFilter(min_cutoff=1.0, beta=5.0), step)
    assert fast[36] > 0.9 > slow[36]  # 100 ms after the step
    assert slow[-1] > 0.8  # still converges


def test_array_scalar_and_time_rules():
    f = OneEuroFilter(2.0, 1.0)
    a = f(np.array([0.0, 1.0]), 0.0)
    assert isinstance(a, np.ndarray) and a.tolist() == [0.0, 1.0]
    b = f(np.array([1.0, 1.0]), 0.1)
    assert 0.0 < b[0] < 1.0 and b[1] == pytest.approx(1.0)
    assert f(np.array([5.0, 5.0]), 0.1).tolist() == b.tolist()  # same time: previous output
    g = OneEuroFilter()
    assert isinstance(g(0.5, 0.0), float) and g(0.5, 1.0) == pytest.approx(0.5)
    g.reset()
    assert g(0.9, 2.0) == 0.9
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
