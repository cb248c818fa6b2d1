"""Small deterministic stand-ins for slow components, for fast tests of the machinery around them."""
from __future__ import annotations

from typing import NamedTuple

import torch

from kyara.geometry import FACE_MORPHER_BOX


class FakeEditorOutput(NamedTuple):
    flow: torch.Tensor


class FakeTeacherOutputs(NamedTuple):
    """The fields of kyara.teacher.TeacherOutputs that the distiller reads."""
    image: torch.Tensor
    face_morphed_full: torch.Tensor
    editor: FakeEditorOutput


class FakeTeacher:
    """A cheap analytic 'teacher': the face box darkens with mouth_aaa, the image shifts with head_y.

    Same interface as kyara.teacher.Teacher for what the distiller uses (prepare, pose, pose_all).
    """

    name = "fake"
    device = torch.device("cpu")
    dtype = torch.float32

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return image if image.dim() == 4 else image.unsqueeze(0)

    def pose_all(self, prepared: torch.Tensor, poses: torch.Tensor) -> FakeTeacherOutputs:
        from kyara.nn.warp import apply_flow

        n = poses.shape[0]
        image = prepared.expand(n, -1, -1, -1)
        face = FACE_MORPHER_BOX.crop(image) * (1 - 0.5 * poses[:, 26, None, None, None])
        face_full = FACE_MORPHER_BOX.paste(image, face)
        flow = torch.zeros(n, 2, 512, 512, device=poses.device)
        flow[:, 0] = 0.05 * poses[:, 40, None, None]
        return FakeTeacherOutputs(apply_flow(face_full, flow), face_full, FakeEditorOutput(flow))

    def pose(self, prepared: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        return self.pose_all(prepared, poses).image
