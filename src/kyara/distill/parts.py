"""Random parts of a network's pixels, for training it on a fraction of them per step (issue 16: cheaper
steps; DistillConfig.body_pixel_fraction, face_pixel_fraction; docs/distill.md)."""
from __future__ import annotations

import numpy as np
import torch

from kyara.student.pixels import PixelSet


class PixelParts:
    """Random parts of a network's pixels, for training it on a fraction of them per step
    (DistillConfig.body_pixel_fraction / face_pixel_fraction < 1): the body morpher's region, the face box.

    The canvas is cut into tile × tile squares; the squares that touch the region are dealt at random into
    K = round(1 / fraction) parts, PARTITIONS times over, and a part is its squares' region pixels. A step
    draws one of the K · PARTITIONS parts: every region pixel lies in exactly one part of each partition, so
    it is trained with the same probability 1 / K. Why squares: a finer level's bilinear taps read a
    coarser level's pixels around it, so scattered single pixels (tile 1) still need nearly every pixel of
    the coarser levels, while squares need about their own share of them (docs/distill.md). Each part is a
    PixelSet (its pixels and the coarser levels' pixels their taps read), built once here (tens of ms each
    on the CPU), with its share = K · its pixels / canvas pixels: body_loss's pixel_share, which makes the
    loss on a part an unbiased estimate of the loss on the whole canvas (parts differ in size when squares
    cross the region's edge).
    """
    PARTITIONS = 4

    def __init__(self, region: torch.Tensor | None, size: int, levels: int, fraction: float, seed: int,
                 device: torch.device, tile: int = 1):
        if tile < 1 or size % tile:
            raise ValueError(f"pixel parts: the tile must divide the grid size {size}, got {tile}")
        base = np.ones((size, size), dtype=bool) if region is None else region.cpu().numpy().astype(bool)
        where = np.flatnonzero(base)
        per_side = size // tile
        square_of = (where // size // tile) * per_side + (where % size) // tile   # each region pixel's square
        squares = np.unique(square_of)
        self.parts_per_partition = k = max(1, min(round(1 / fraction), len(squares)))
        rng = np.random.default_rng(seed)
        self.sets: list[tuple[PixelSet, float]] = []
        for _ in range(self.PARTITIONS):
            part_of_square = np.zeros(per_side * per_side, dtype=np.int64)
            part_of_square[squares] = rng.permutation(len(squares)) % k   # equal square counts, random members
            part_of = part_of_square[square_of]
            for j in range(k):
                mask = np.zeros(size * size, dtype=bool)
                mask[where[part_of == j]] = True
                share = k * float(mask.sum()) / mask.size
                pixels = PixelSet.from_mask(mask.reshape(size, size), levels).to(device)
                for level in pixels.levels:   # parts differ in size: one dynamic-shape compile, not one per part
                    for t in level.tensors():
                        torch._dynamo.maybe_mark_dynamic(t, 0)
                self.sets.append((pixels, share))

    @property
    def fraction(self) -> float:
        """The share of the region each part holds on average (1 / K)."""
        return 1.0 / self.parts_per_partition

    def pick(self, generator: torch.Generator) -> tuple[PixelSet, float]:
        """A part drawn uniformly: its PixelSet and its pixel_share."""
        return self.sets[int(torch.randint(len(self.sets), (1,), generator=generator))]
