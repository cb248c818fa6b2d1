"""Canvas sizes and every crop box used by THA3/THA4 and the student (tha3-tha4-facts.md §2).

Tensor indexing is [N, C, row=y, col=x]. No numeric image slice appears anywhere else in kyara:
boxes inside a crop are derived with ``Box.relative_to``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CANVAS = 512           # THA input/output size
HALF_CANVAS = 256      # THA3 rotator / THA4 body-morpher resolution


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    height: int
    width: int

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) → (..., C, height, width) view."""
        return image[..., self.rows, self.cols]

    def paste(self, into: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """Return a copy of `into` (..., C, H, W) with `patch` (..., C, height, width) written into this box."""
        out = into.clone()
        out[..., self.rows, self.cols] = patch
        return out

    def relative_to(self, outer: "Box") -> "Box":
        """This box in the local coordinates of `outer` (which must contain it)."""
        box = Box(self.top - outer.top, self.left - outer.left, self.height, self.width)
        if box.top < 0 or box.left < 0 or box.top + box.height > outer.height or box.left + box.width > outer.width:
            raise ValueError(f"{self} does not lie inside {outer}")
        return box


EYEBROW_BOX = Box(top=64, left=192, height=128, width=128)         # eyebrow decomposer input
FACE_MORPHER_BOX = Box(top=32, left=160, height=192, width=192)    # THA3 face morpher input/output
STUDENT_FACE_BOX = Box(top=80, left=192, height=128, width=128)    # THA4 student face morpher output
HEAD_BOX = EYEBROW_BOX                                              # where the head should fit in an input image
