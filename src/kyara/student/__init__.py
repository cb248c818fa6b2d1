"""The distilled per-character student (THA4 §4): face morpher + body morpher, a Poser."""
from __future__ import annotations

import torch
from torch import nn

from kyara.geometry import STUDENT_FACE_BOX
from kyara.pose import FACE_ALL, NUM_PARAMETERS
from kyara.student.body_morpher import BodyMorpher, BodyMorpherOutput
from kyara.student.face_morpher import FaceMorpher

__all__ = ["Student", "FaceMorpher", "BodyMorpher", "BodyMorpherOutput"]


class Student(nn.Module):
    """Character-specific poser: (image, poses) → posed images, like a teacher but ~100× cheaper.

    image: (4, 512, 512) or (N, 4, 512, 512) model space (the character it was distilled for);
    poses: (N, 45). pose() returns (N, 4, 512, 512) model space.
    """

    name = "student"

    def __init__(self, face_morpher: FaceMorpher | None = None, body_morpher: BodyMorpher | None = None):
        super().__init__()
        self.face_morpher = face_morpher or FaceMorpher()
        self.body_morpher = body_morpher or BodyMorpher()

    @property
    def device(self) -> torch.device:
        return self.body_morpher.last_linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.body_morpher.last_linear.weight.dtype

    def face_edit(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Paste the face morpher's output into the face box of image: (N, 4, 512, 512)."""
        n = poses.shape[0]
        if image.dim() == 3:
            image = image.unsqueeze(0)
        image = image.expand(n, -1, -1, -1)
        face = self.face_morpher(poses[:, FACE_ALL])
        return STUDENT_FACE_BOX.paste(image, face)

    def forward(self, image: torch.Tensor, poses: torch.Tensor) -> BodyMorpherOutput:
        if poses.dim() != 2 or poses.shape[1] != NUM_PARAMETERS:
            raise ValueError(f"poses must be (N, {NUM_PARAMETERS}), got {tuple(poses.shape)}")
        return self.body_morpher(self.face_edit(image, poses), poses)

    @torch.inference_mode()
    def pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        image = image.to(self.device, self.dtype)
        return self.forward(image, poses.to(self.device, self.dtype)).image
