"""The distilled per-character student (THA4 §4): face morpher + body morpher, a Poser."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from kyara.geometry import STUDENT_FACE_BOX
from kyara.pose import FACE_ALL, NUM_PARAMETERS
from kyara.student.body_morpher import BodyMorpher, BodyMorpherOutput
from kyara.student.face_morpher import FaceMorpher

if TYPE_CHECKING:
    from kyara.student.pixels import PixelSet

__all__ = ["Student", "FaceMorpher", "BodyMorpher", "BodyMorpherOutput"]


class Student(nn.Module):
    """Character-specific poser: (image, poses) → posed images, like a teacher but ~100× cheaper.

    image: (4, 512, 512) or (N, 4, 512, 512) model space (the character it was distilled for);
    poses: (N, 45). pose() returns (N, 4, 512, 512) model space.

    region: optional (512, 512) bool buffer, the canvas the character can reach (its pixels in any
    pose, dilated). When set, the body morpher is evaluated (and was trained) only there; every other
    pixel is the face-edited input unchanged, which is transparent there. A region-trained student's
    body network is undefined outside its region, so the region travels with it (.kyara files).
    """

    name = "student"

    def __init__(self, face_morpher: FaceMorpher | None = None, body_morpher: BodyMorpher | None = None,
                 region: torch.Tensor | None = None):
        super().__init__()
        self.face_morpher = face_morpher or FaceMorpher()
        self.body_morpher = body_morpher or BodyMorpher()
        self.register_buffer("region", None, persistent=False)   # not in the state dict: official keys only
        self._region_pixels: tuple | None = None
        self.set_region(region)

    def set_region(self, region: torch.Tensor | None) -> None:
        """Restrict the body morpher to region ((512, 512) bool, or None for the whole canvas)."""
        if region is not None:
            region = torch.as_tensor(region)
            size = self.body_morpher.levels[-1][0]
            if region.shape != (size, size):
                raise ValueError(f"student region must be ({size}, {size}), got {tuple(region.shape)}")
            if not bool(region.any()):
                raise ValueError("student region selects no pixel")
            region = region.to(device=self.device, dtype=torch.bool)
        self.region = region
        self._region_pixels = None

    def region_pixels(self) -> "PixelSet | None":
        """The region as a PixelSet on the student's device (built once per region and device)."""
        if self.region is None:
            return None
        from kyara.student.pixels import PixelSet

        key = (self.region.data_ptr(), self.region.device)
        if self._region_pixels is None or self._region_pixels[0] != key:
            pixels = PixelSet.from_mask(self.region.cpu().numpy(), levels=len(self.body_morpher.levels))
            self._region_pixels = (key, pixels.to(self.region.device))
        return self._region_pixels[1]

    def body_outputs(self, body_input: torch.Tensor, poses: torch.Tensor, *, features=None,
                     features_at=None) -> BodyMorpherOutput:
        """The body morpher on body_input (N, 4, 512, 512) (the face-edited image), on the region only
        when one is set: outside it the head outputs are zero (no flow, no blend), i.e. identity.
        features / features_at replace the body morpher's methods of those names (same signatures),
        e.g. torch.compile'd copies for training."""
        pixels = self.region_pixels()
        if pixels is None:
            return BodyMorpher.compose(body_input, (features or self.body_morpher.features)(poses))
        values = (features_at or self.body_morpher.features_at)(poses, pixels)
        return BodyMorpher.compose(body_input, self.to_canvas(values, pixels))

    @staticmethod
    def to_canvas(values: torch.Tensor, pixels: "PixelSet") -> torch.Tensor:
        """(N, M, C) values at pixels.output → (N, C, S, S) with zeros elsewhere (differentiable);
        zero head outputs mean no flow and no blend, i.e. the input unchanged."""
        n, _, c = values.shape
        size = pixels.output.size
        dense = values.new_zeros(n, size * size, c).index_copy(1, pixels.output.index, values)
        return dense.view(n, size, size, c).permute(0, 3, 1, 2)

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
        return self.body_outputs(self.face_edit(image, poses), poses)

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
        pixels = self.region_pixels()
        if pixels is None:
            out = body_features(body_net, poses).view(n, 512, 512, -1).permute(0, 3, 1, 2)
        else:
            out = self.to_canvas(body_features(body_net, poses, pixels), pixels)
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
