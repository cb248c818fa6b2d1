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

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from kyara.student import Student
from kyara.student.body_morpher import BodyMorpher
from kyara.student.pixels import PixelSet

__all__ = ["StudentStack"]


class _OneCharacter(nn.Module):
    """The per-character forward that vmap batches: weights come in through functional_call."""

    def __init__(self, student: Student, pixels: PixelSet | None):
        super().__init__()
        self.student = student
        self.pixels = pixels          # union of the regions (plain attribute: never batched), or None

    def forward(self, image: torch.Tensor, poses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        body_input = self.student.face_edit(image, poses)
        morpher = self.student.body_morpher
        if self.pixels is None:
            head = morpher.features(poses) * keep.view(1, 1, *keep.shape)               # (N, 7, S, S)
        else:
            values = morpher.features_at(poses, self.pixels) * keep.view(1, -1, 1)      # (N, M, 7)
            head = Student.to_canvas(values, self.pixels)
        return BodyMorpher.compose(body_input, head).image


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
        device = students[0].device
        if any(s.device != device for s in students):
            raise ValueError("StudentStack: all students must be on one device")
        size = students[0].body_morpher.levels[-1][0]
        regions = [s.region for s in students]
        bare = []
        for s in students:                        # weights only: the regions are handled below
            b = copy.copy(s)
            b._buffers = {k: v for k, v in s._buffers.items() if k != "region"}
            bare.append(b)
        try:
            self.params, self.buffers = stack_module_state(bare)
        except Exception as e:
            raise ValueError(f"StudentStack: students differ in architecture ({e})") from e
        ones = torch.ones(size, size, dtype=torch.bool, device=device)
        own = torch.stack([ones if r is None else r.to(device) for r in regions])     # (C, S, S)
        if all(r is not None for r in regions):
            union = own.any(dim=0)
            pixels = PixelSet.from_mask(union.cpu().numpy(), levels=len(students[0].body_morpher.levels)).to(device)
            self.keep = own.flatten(1)[:, pixels.output.index].to(students[0].dtype)   # (C, M)
        else:
            pixels = None                          # a whole-canvas student: evaluate everywhere
            self.keep = own.to(students[0].dtype)                                      # (C, S, S)
        skeleton = copy.deepcopy(students[0]).to("meta")
        skeleton.set_region(None)
        self._module = _OneCharacter(skeleton, pixels)
        self._batched = vmap(self._one)
        self.count = len(students)

    def _one(self, params, buffers, image, poses, keep):
        state = {**{f"student.{k}": v for k, v in params.items()}, **{f"student.{k}": v for k, v in buffers.items()}}
        return functional_call(self._module, state, (image, poses, keep))

    @torch.inference_mode()
    def pose(self, images: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[0] != self.count:
            raise ValueError(f"images must be ({self.count}, 4, H, W), got {tuple(images.shape)}")
        if poses.dim() != 3 or poses.shape[0] != self.count:
            raise ValueError(f"poses must be ({self.count}, N, 45), got {tuple(poses.shape)}")
        return self._batched(self.params, self.buffers, images, poses, self.keep)
