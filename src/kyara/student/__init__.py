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
        return self._paste_face(image, self.face_morpher(poses[:, FACE_ALL]))

    @staticmethod
    def _paste_face(image: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """image (4, 512, 512) or (N, 4, 512, 512), face (N, 4, 128, 128) → (N, 4, 512, 512)."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        return STUDENT_FACE_BOX.paste(image.expand(face.shape[0], -1, -1, -1), face)

    def forward(self, image: torch.Tensor, poses: torch.Tensor) -> BodyMorpherOutput:
        if poses.dim() != 2 or poses.shape[1] != NUM_PARAMETERS:
            raise ValueError(f"poses must be (N, {NUM_PARAMETERS}), got {tuple(poses.shape)}")
        return self.body_morpher(self.face_edit(image, poses), poses)

    @torch.inference_mode()
    def pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        image = image.to(self.device, self.dtype)
        poses = poses.to(self.device, self.dtype)
        if self.device.type == "cpu" and self.dtype == torch.float32 and poses.dim() == 2:
            return self._pose_cpu(image, poses)
        return self.forward(image, poses).image

    def _pose_cpu(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """forward(...).image through kyara.student.inference's CPU evaluator (same maths, ω₀ folded,
        cache-sized chunks, worker threads): ~3× faster on a small CPU, equal to ~1e-4."""
        from kyara.student.inference import body_features, face_rgba

        if poses.shape[1] != NUM_PARAMETERS:
            raise ValueError(f"poses must be (N, {NUM_PARAMETERS}), got {tuple(poses.shape)}")
        face_net, body_net = self._prepared_cpu_nets()
        n = poses.shape[0]
        box = STUDENT_FACE_BOX
        face = face_rgba(face_net, poses[:, FACE_ALL]).view(n, box.height, box.width, 4).permute(0, 3, 1, 2)
        out = body_features(body_net, poses).view(n, 512, 512, -1).permute(0, 3, 1, 2)
        return BodyMorpher.compose(self._paste_face(image, face), out).image

    def _prepared_cpu_nets(self):
        # Prepared copies fold ω₀ into the weights; rebuild them whenever any parameter changed
        # (optimizer steps and load_state_dict bump the tensors' version counters).
        from kyara.student.inference import prepare_body, prepare_face

        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        cached = getattr(self, "_cpu_nets", None)
        if cached is None or cached[0] != key:
            cached = (key, (prepare_face(self.face_morpher), prepare_body(self.body_morpher)))
            self._cpu_nets = cached
        return cached[1]
