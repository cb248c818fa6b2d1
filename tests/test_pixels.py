"""kyara.student.pixels: the bilinear taps between levels and their transpose (the readers table)."""
import numpy as np
import pytest
import torch

from kyara.student.pixels import READERS, PixelSet, _weighted_gather, upsample_taps


def _mask():
    mask = np.zeros((64, 64), bool)
    mask[5:40, 20:50] = True
    mask[60:, :3] = True          # touches the grid's edge: clamped taps
    return mask


@pytest.mark.parametrize("mask", [_mask(), np.ones((32, 32), bool)], ids=["region", "full"])
def test_readers_are_the_taps_transpose(mask):
    """For each coarser pixel, readers × reader_weights sum to exactly the taps that read it (dense
    upsampling matrices compared), in a table of fixed width READERS."""
    for level in PixelSet.from_mask(mask, levels=3).levels[1:]:
        coarse = level.readers.shape[0]
        dense = torch.zeros(len(level), coarse, dtype=torch.float64)
        for k in range(level.taps.shape[1]):
            dense.index_put_((torch.arange(len(level)), level.taps[:, k]), level.tap_weights[:, k].double(), accumulate=True)
        transposed = torch.zeros(coarse, len(level), dtype=torch.float64)
        for j in range(level.readers.shape[1]):
            transposed.index_put_((torch.arange(coarse), level.readers[:, j]), level.reader_weights[:, j].double(),
                                  accumulate=True)
        assert level.readers.shape[1] == READERS
        assert torch.allclose(transposed, dense.t(), atol=1e-7)


def test_upsample_taps_gradient_is_the_scatter_gradient():
    """The gather backward equals autograd's scatter backward of plain indexing, and passes gradcheck
    (first and second order: the backward is the same function on the transposed tables)."""
    level = PixelSet.from_mask(_mask(), levels=2).levels[1]
    low = torch.randn(2, level.readers.shape[0], 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, len(level), 3, dtype=torch.float64)
    ours = torch.autograd.grad(upsample_taps(low, level), low, grad)[0]
    plain = torch.autograd.grad(_weighted_gather(low, level.taps, level.tap_weights), low, grad)[0]
    assert torch.allclose(ours, plain, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: upsample_taps(x, level), (low,))
    assert torch.autograd.gradgradcheck(lambda x: upsample_taps(x, level), (low,))


def test_without_readers_keeps_the_values():
    pixels = PixelSet.from_mask(_mask(), levels=2)
    level, plain = pixels.levels[1], pixels.without_readers().levels[1]
    assert plain.readers is None and torch.equal(plain.taps, level.taps)
    low = torch.randn(1, level.readers.shape[0], 2)
    assert torch.equal(upsample_taps(low, level), upsample_taps(low, plain))
