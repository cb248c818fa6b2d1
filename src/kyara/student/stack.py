"""Several characters' students in one batched pass (a scene or a server with several avatars).

The students share an architecture, so their weights stack along a new leading axis and one
torch.func.vmap'd forward renders all characters at once: one launch per layer instead of one per
character, which is what makes many avatars cheap on a GPU.

Region-trained students (each evaluated only on its own reachable canvas) need one extra step:
vmap cannot batch pixel sets of different sizes, so the body morpher runs on the *union* of the
regions and each character's head outputs are zeroed outside its own region. Zero outputs mean no
flow and no blend, exactly what a separate call produces there, so the result equals C separate
calls up to float rounding.
"""
from __future__ import annotations

import copy
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, vmap

from kyara.student import Student

__all__ = ["StudentStack"]


class _OneCharacter(nn.Module):
    """The per-character forward that vmap batches: weights come in through functional_call, and the
    student's own body_outputs does the region dispatch, with the head outputs masked by keep."""

    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, image: torch.Tensor, poses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        morpher = self.student.body_morpher
        return self.student.body_outputs(
            self.student.face_edit(image, poses), poses,
            features=lambda p: morpher.features(p) * keep.view(1, 1, *keep.shape),          # (N, 7, S, S)
            features_at=lambda p, px: morpher.features_at(p, px) * keep.view(1, -1, 1),     # (N, M, 7)
        ).image


class StudentStack:
    """C students evaluated together.

    students: C Students of the same architecture, on one device (each with or without a region).
    pose(images (C, 4, 512, 512), poses (C, N, 45)) → (C, N, 4, 512, 512), model space, equal to
    ``students[c].pose(images[c], poses[c])`` for every c. For GPUs: on a CPU, separate
    ``Student.pose`` calls (its fast evaluator) are several times faster than this vmapped pass.
    """

    def __init__(self, students: list[Student]):
        if not students:
            raise ValueError("StudentStack needs at least one student")
        device, dtype = students[0].device, students[0].dtype
        if any(s.device != device for s in students):
            raise ValueError("StudentStack: all students must be on one device")
        # The state dicts hold the weights only (the region is not persistent): stack them key by key.
        states = [s.state_dict() for s in students]
        self.state = {}
        for key in states[0]:
            try:
                self.state[f"student.{key}"] = torch.stack([st[key] for st in states])
            except (KeyError, RuntimeError) as e:
                raise ValueError(f"StudentStack: students differ in architecture at {key!r}") from e
        size = students[0].body_morpher.levels[-1][0]
        ones = torch.ones(size, size, dtype=torch.bool, device=device)
        own = torch.stack([ones if s.region is None else s.region for s in students])      # (C, S, S)
        union = own.any(dim=0) if all(s.region is not None for s in students) else None
        # The skeleton carries the union as its region (a real tensor, never batched) and the shared
        # position grids; functional_call replaces its weights with each character's.
        skeleton = copy.deepcopy(students[0])
        skeleton.set_region(union)
        pixels = skeleton.region_pixels()
        # Each character's own region: (C, S, S) on the whole canvas, or (C, M) at the union's pixels.
        self.keep = (own if pixels is None else own.flatten(1)[:, pixels.output.index]).to(dtype)
        self.body_share = 1.0 if pixels is None else pixels.fraction     # share of the canvas evaluated
        self._batched = vmap(partial(functional_call, _OneCharacter(skeleton)))
        self.count = len(students)

    @torch.inference_mode()
    def pose(self, images: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[0] != self.count:
            raise ValueError(f"images must be ({self.count}, 4, H, W), got {tuple(images.shape)}")
        if poses.dim() != 3 or poses.shape[0] != self.count:
            raise ValueError(f"poses must be ({self.count}, N, 45), got {tuple(poses.shape)}")
        return self._batched(self.state, (images, poses, self.keep))
