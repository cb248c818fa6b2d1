"""Pixel subsets of a multi-resolution per-pixel SIREN: which pixels each level must evaluate.

The student's networks are per-pixel MLPs; the body morpher runs them at 128, 256 and 512, each
level reading the bilinearly ×2-upsampled features of the level below. So any subset of output
pixels can be computed exactly on its own: the finest level at those pixels, each coarser level at
the pixels the next one's bilinear taps read. Used by the CPU evaluator (kyara.student.inference),
by ``BodyMorpher.features_at`` (any device, autograd) and so by region-restricted students.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class PixelLevel:
    """The pixels one SIREN level evaluates, and how it reads the level below.

    size: the level's grid is size × size. index: (M,) int64 flat indices (row · size + col),
    ascending. position: (M, 2) float32 pixel centres (x, y) in (-1, 1), as ``position_grid``.
    taps: (M, 4) int64 rows of the previous level's pixel list that bilinear ×2 upsampling
    (align_corners=False) reads for each pixel, and tap_weights: (M, 4) float32 their weights;
    both None at the coarsest level.
    """
    size: int
    index: torch.Tensor
    position: torch.Tensor
    taps: torch.Tensor | None = None
    tap_weights: torch.Tensor | None = None
    readers: torch.Tensor | None = None
    reader_weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> "PixelLevel":
        move = lambda t: None if t is None else t.to(device)   # noqa: E731
        return replace(self, index=move(self.index), position=move(self.position), taps=move(self.taps),
                       tap_weights=move(self.tap_weights), readers=move(self.readers),
                       reader_weights=move(self.reader_weights))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor of the level (for marking dynamic shapes)."""
        return tuple(t for t in (self.index, self.position, self.taps, self.tap_weights, self.readers,
                                 self.reader_weights) if t is not None)


READERS = 16   # the readers table's width: bilinear ×2 reads a pixel from at most 4 × 4 finer pixels


def _readers(taps: np.ndarray, weights: np.ndarray, coarse_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The taps' transpose: for each of coarse_count pixels of the previous level, the rows of this level
    whose taps read it and with which weight, (coarse_count, T) each, T = READERS (16: at most 4 × 4 for
    bilinear ×2, once repeated taps are merged), padded with row 0 and weight 0."""
    src = taps.reshape(-1)
    rows = np.repeat(np.arange(taps.shape[0]), taps.shape[1])
    w = weights.reshape(-1)
    # merge a row's repeated taps of one pixel (clamped at the grid's edge) and drop zero weights: then
    # no pixel has more than 4 × 4 readers, and the table's width is the same for every pixel set
    pair, inverse = np.unique(src * taps.shape[0] + rows, return_inverse=True)
    w = np.bincount(inverse, weights=w).astype(np.float32)
    src, rows = pair // taps.shape[0], pair % taps.shape[0]
    keep = w != 0
    src, rows, w = src[keep], rows[keep], w[keep]
    counts = np.bincount(src, minlength=coarse_count)
    width = max(READERS, int(counts.max()))
    slot = np.arange(src.size) - np.repeat(np.cumsum(counts) - counts, counts)
    readers = np.zeros((coarse_count, width), dtype=np.int64)
    reader_weights = np.zeros((coarse_count, width), dtype=np.float32)
    readers[src, slot] = rows
    reader_weights[src, slot] = w
    return torch.from_numpy(readers), torch.from_numpy(reader_weights)


class _TapGather(torch.autograd.Function):
    """out[:, m] = Σ_k low[:, taps[m, k]] · tap_weights[m, k]; its backward gathers through the readers
    table (the taps' transpose) instead of scattering with atomic adds."""

    @staticmethod
    def forward(ctx, low, taps, tap_weights, readers, reader_weights):
        ctx.save_for_backward(taps, tap_weights, readers, reader_weights)
        return _weighted_gather(low, taps, tap_weights)

    @staticmethod
    def backward(ctx, grad):
        taps, tap_weights, readers, reader_weights = ctx.saved_tensors
        return _TapGather.apply(grad, readers, reader_weights, taps, tap_weights), None, None, None, None


def _weighted_gather(x: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x (N, R, C), rows / weights (M, K) → (N, M, C) = Σ_k x[:, rows[:, k]] · weights[:, k]."""
    weights = weights.to(x.dtype)
    out = x[:, rows[:, 0]] * weights[:, 0, None]
    for k in range(1, rows.shape[1]):
        out = out + x[:, rows[:, k]] * weights[:, k, None]
    return out


def upsample_taps(low: torch.Tensor, level: PixelLevel) -> torch.Tensor:
    """low (N, M_prev, C) values at the previous level's pixels → (N, M, C) their bilinear ×2 upsampling
    at level's pixels (its 4 taps). Differentiable; the backward is a gather through level.readers (no
    atomic adds: on a GPU those serialise where many fine pixels read one coarse pixel)."""
    if level.readers is None:
        return _weighted_gather(low, level.taps, level.tap_weights)
    return _TapGather.apply(low, level.taps, level.tap_weights, level.readers, level.reader_weights)


def _upsample_taps(out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear ×2 (align_corners=False, as F.interpolate) along one axis of length out_size:
    (lo, hi, w_lo, w_hi) source indices at out_size // 2 and weights per output index."""
    in_size = out_size // 2
    src = np.maximum((np.arange(out_size) + 0.5) * 0.5 - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    w_hi = (src - lo).astype(np.float32)
    return lo, hi, 1.0 - w_hi, w_hi


@dataclass(frozen=True)
class PixelSet:
    """Pixels to evaluate at each level of a multi-resolution SIREN, coarse to fine.

    ``levels[-1]`` lists the output pixels; each coarser level holds exactly the pixels whose
    features the next level's bilinear taps read.
    """
    levels: tuple[PixelLevel, ...]

    @property
    def output(self) -> PixelLevel:
        return self.levels[-1]

    def to(self, device: torch.device | str) -> "PixelSet":
        return PixelSet(tuple(level.to(device) for level in self.levels))

    def without_readers(self) -> "PixelSet":
        """The same pixels without the taps' transpose: upsample_taps' backward then scatters (atomic
        adds), as autograd does for plain indexing (benchmarks compare the two)."""
        return PixelSet(tuple(replace(level, readers=None, reader_weights=None) for level in self.levels))

    @property
    def fraction(self) -> float:
        """Share of the output grid that is evaluated."""
        return len(self.output) / self.output.size ** 2

    @classmethod
    def from_mask(cls, mask: np.ndarray, levels: int = 1) -> "PixelSet":
        """mask: (S, S) bool output pixels to compute → a PixelSet for `levels` resolutions
        S / 2^(levels-1) … S (each level twice the previous one)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"pixel mask must be square (S, S), got {mask.shape}")
        if not mask.any():
            raise ValueError("pixel mask selects no pixel")
        size = mask.shape[0]
        if size % (2 ** (levels - 1)):
            raise ValueError(f"mask size {size} is not divisible by 2^{levels - 1}")
        # Walk from the output down: each level needs the taps of the one above it.
        needed = [mask]
        for _ in range(levels - 1):
            fine = needed[0]
            s = fine.shape[0]
            lo, hi, _, _ = _upsample_taps(s)
            rows, cols = np.nonzero(fine)
            coarse = np.zeros((s // 2, s // 2), dtype=bool)
            for r in (lo[rows], hi[rows]):
                for c in (lo[cols], hi[cols]):
                    coarse[r, c] = True
            needed.insert(0, coarse)
        built: list[PixelLevel] = []
        for i, m in enumerate(needed):
            s = m.shape[0]
            flat = np.flatnonzero(m)
            rows, cols = np.divmod(flat, s)
            centre = lambda k: ((k * 2 + 1) / s - 1).astype(np.float32)   # noqa: E731 (as position_grid)
            position = torch.from_numpy(np.stack([centre(cols), centre(rows)], axis=1))
            taps = weights = readers = reader_weights = None
            if i > 0:
                prev = built[-1]
                row_of = np.full(prev.size * prev.size, -1, dtype=np.int64)
                row_of[prev.index.numpy()] = np.arange(len(prev))
                lo, hi, wl, wh = _upsample_taps(s)
                tap_list, weight_list = [], []
                for r, wr in ((lo[rows], wl[rows]), (hi[rows], wh[rows])):
                    for c, wc in ((lo[cols], wl[cols]), (hi[cols], wh[cols])):
                        tap_list.append(row_of[r * prev.size + c])
                        weight_list.append(wr * wc)
                taps = torch.from_numpy(np.ascontiguousarray(np.stack(tap_list, axis=1)))
                assert int(taps.min()) >= 0, "coarser level misses a tap"
                weights = torch.from_numpy(np.ascontiguousarray(np.stack(weight_list, axis=1), dtype=np.float32))
                readers, reader_weights = _readers(taps.numpy(), weights.numpy(), len(prev))
            built.append(PixelLevel(s, torch.from_numpy(flat), position, taps, weights, readers, reader_weights))
        return cls(tuple(built))

    @classmethod
    def full(cls, size: int, levels: int = 1) -> "PixelSet":
        return cls.from_mask(np.ones((size, size), dtype=bool), levels)


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    """(H, W) bool → the same grown by px pixels in every direction (square neighbourhood)."""
    if px <= 0:
        return mask
    # A square window is separable: rows then columns (~30× faster than one 2-D pool at px = 16).
    grown = mask[None, None].float()
    grown = torch.nn.functional.max_pool2d(grown, (1, 2 * px + 1), stride=1, padding=(0, px))
    grown = torch.nn.functional.max_pool2d(grown, (2 * px + 1, 1), stride=1, padding=(px, 0))
    return grown[0, 0] > 0
