"""The distilled per-character student (THA4 §4): face morpher + body morpher, a Poser.

``Student`` is also the one student renderer. Everything that renders a student (``pose``, offline
tracks in kyara.produce.frames, scenes, ``kyara speak``, the live engine, evaluation) goes through
three methods, each with two backends chosen by device, dtype and autograd:

- ``face_rgba(face_poses)``: the face morpher's RGBA for the face box;
- ``body_features(poses, pixels)``: the body morpher's raw head outputs at a pixel set (by default
  the student's region, or the whole canvas for a student without one);
- ``compose(image, faces, features, pixels)``: paste the face, warp by the flow, blend the colour.

Backends: on the CPU in float32 without autograd, kyara.student.inference's chunked evaluator (ω₀
folded, cache-sized chunks, worker threads; ~3× faster on a small CPU, equal to ~1e-4); with
``Student.kernels`` "triton" on a CUDA GPU the fused Triton kernels (kyara.nn.fused_siren;
``FaceMorpher.fused_forward``, ``BodyMorpher.fused_features_at``); everywhere else the modules' torch
code (``FaceMorpher.forward``, ``BodyMorpher.features`` / ``features_at``).

The fast GPU path is ``renderer(compile=..., overlap=True)``: ``pose`` as a pure function over the batched
evaluator (ω₀ folded, widths padded for tensor cores), torch.compile'd, to be replayed from a CUDA graph
(on an H200: 0.33 ms a frame at batch 1, 4,700 frames/s batched, fp16; docs/benchmarks.md, session 10).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from kyara.geometry import STUDENT_FACE_BOX
from kyara.nn import fused_siren
from kyara.pose import FACE_ALL, NUM_PARAMETERS
from kyara.student.body_morpher import BodyMorpher, BodyMorpherOutput
from kyara.student.face_morpher import FaceMorpher

if TYPE_CHECKING:
    from kyara.student.inference import PreparedSiren
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
    # Off the CPU evaluator: "torch" = the modules' torch code; "triton" the fused kernels; "auto" = triton on
    # CUDA where it runs (kyara.nn.fused_siren.use_triton), else torch. Default torch: on an H200 the fused
    # kernels rendered 1.5× slower than torch fp16 under a CUDA graph (docs/benchmarks.md, "Fused SIREN kernels").
    kernels = "torch"
    # renderer()'s widths are padded to multiples of this for tensor-core GEMMs (pad_widths)
    BATCHED_PAD = 8

    def __init__(self, face_morpher: FaceMorpher | None = None, body_morpher: BodyMorpher | None = None,
                 region: torch.Tensor | None = None):
        super().__init__()
        self.face_morpher = face_morpher or FaceMorpher()
        self.body_morpher = body_morpher or BodyMorpher()
        self.register_buffer("region", None, persistent=False)   # not in the state dict: official keys only
        self._pixel_sets: dict = {}
        self._cpu_nets: tuple | None = None
        self._face_pixels: "PixelSet | None" = None
        self.set_region(region)

    @property
    def size(self) -> int:
        """Side of the output canvas (512)."""
        return self.body_morpher.levels[-1][0]

    def set_region(self, region: torch.Tensor | None) -> None:
        """Restrict the body morpher to region ((512, 512) bool, or None for the whole canvas)."""
        if region is not None:
            region = torch.as_tensor(region)
            if region.shape != (self.size, self.size):
                raise ValueError(f"student region must be ({self.size}, {self.size}), got {tuple(region.shape)}")
            if not bool(region.any()):
                raise ValueError("student region selects no pixel")
            region = region.to(device=self.device, dtype=torch.bool)
        self.region = region
        self._pixel_sets = {}

    def region_pixels(self) -> "PixelSet | None":
        """The region as a PixelSet on the student's device (built once per region and device)."""
        return None if self.region is None else self.body_pixels()

    def body_pixels(self) -> "PixelSet":
        """Where the body morpher runs by default: the region, or every canvas pixel (a PixelSet on
        the student's device, built once per region and device)."""
        from kyara.student.pixels import PixelSet

        key = (None if self.region is None else self.region.data_ptr(), self.device)
        if key not in self._pixel_sets:
            levels = len(self.body_morpher.levels)
            pixels = (PixelSet.full(self.size, levels) if self.region is None
                      else PixelSet.from_mask(self.region.cpu().numpy(), levels))
            self._pixel_sets = {key: pixels.to(self.device)}
        return self._pixel_sets[key]

    @property
    def device(self) -> torch.device:
        return self.body_morpher.last_linear.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.body_morpher.last_linear.weight.dtype

    # -- the renderer: face, body features, compose --------------------------------------------------
    def face_rgba(self, face_poses: torch.Tensor) -> torch.Tensor:
        """face_poses (N, 39) (pose[:, FACE_ALL]) → (N, 4, 128, 128) model-space RGBA for STUDENT_FACE_BOX."""
        nets = self._evaluator()
        if nets is None:
            return fused_siren.with_fallback(self.kernels, self.face_morpher.fused_forward, self.face_morpher,
                                             face_poses)
        from kyara.student.inference import evaluate_poses

        n, size = face_poses.shape[0], self.face_morpher.size
        return evaluate_poses(nets[0], face_poses, self.face_pixels()).view(n, size, size, -1).permute(0, 3, 1, 2)

    def face_pixels(self) -> "PixelSet":
        """Every pixel of the face box, one level (a PixelSet on the student's device)."""
        from kyara.student.pixels import PixelSet

        if self._face_pixels is None or self._face_pixels.output.index.device != self.device:
            self._face_pixels = PixelSet.full(self.face_morpher.size, levels=1).to(self.device)
        return self._face_pixels

    def body_features(self, poses: torch.Tensor, pixels: "PixelSet | None" = None) -> torch.Tensor:
        """poses (N, 45) → (N, M, 7) raw head outputs [flow (2), alpha (1), colour (4)] at the M pixels of
        pixels.output, in its index order. pixels: a PixelSet with one level per body level, on the
        student's device; default ``body_pixels()`` (the region, or the whole canvas row-major)."""
        whole_canvas = pixels is None and self.region is None
        pixels = pixels if pixels is not None else self.body_pixels()
        nets = self._evaluator()
        if nets is not None:
            from kyara.student.inference import evaluate_poses

            return evaluate_poses(nets[1], poses, pixels)
        if whole_canvas:   # the dense evaluation, as a (N, S·S, 7) view of (N, 7, S, S)
            return fused_siren.with_fallback(
                self.kernels, lambda p: self.body_morpher.fused_features_at(p, pixels),
                lambda p: self.body_morpher.features(p).permute(0, 2, 3, 1).flatten(1, 2), poses)
        return fused_siren.with_fallback(self.kernels, self.body_morpher.fused_features_at,
                                         self.body_morpher.features_at, poses, pixels)

    def compose(self, image: torch.Tensor, faces: torch.Tensor, features: torch.Tensor,
                pixels: "PixelSet | None" = None) -> BodyMorpherOutput:
        """The last step: paste faces (N, 4, 128, 128) into image ((4, S, S) or (N, 4, S, S)), warp it
        by the flow and blend in the colour of features (N, M, 7) at pixels (default body_pixels());
        everywhere else the face-edited image is kept (zero outputs: no flow, no blend)."""
        pixels = pixels if pixels is not None else self.body_pixels()
        return BodyMorpher.compose(self.paste_face(image, faces), self.to_canvas(features, pixels))

    @torch.inference_mode()
    def pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        image = image.to(self.device, self.dtype)
        poses = self._check_poses(poses.to(self.device, self.dtype))
        return self.compose(image, self.face_rgba(poses[:, FACE_ALL]), self.body_features(poses)).image

    def _evaluator(self) -> "tuple[PreparedSiren, PreparedSiren] | None":
        """The CPU evaluator's prepared (face, body) nets when it is the backend (CPU, float32, no
        autograd), else None. Prepared copies fold ω₀ into the weights: they are rebuilt whenever a
        parameter changed (optimizer steps and load_state_dict bump the tensors' version counters)."""
        if self.device.type != "cpu" or self.dtype != torch.float32 or torch.is_grad_enabled():
            return None
        from kyara.student.inference import prepare_body, prepare_face

        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if self._cpu_nets is None or self._cpu_nets[0] != key:
            self._cpu_nets = (key, (prepare_face(self.face_morpher), prepare_body(self.body_morpher)))
        return self._cpu_nets[1]

    def renderer(self, *, compile: str | None = None, overlap: bool = False) -> "Callable[[torch.Tensor, torch.Tensor], torch.Tensor]":
        """``pose`` as a pure function of (image (4, S, S) or (N, 4, S, S), poses (N, 45)) → (N, 4, S, S) in
        the student's device and dtype, with the weights as they are now (later changes are not seen): no
        caches to check, so it can be captured in a CUDA graph. The batched evaluator on any device (on
        the CPU too, where ``pose`` uses the chunked one).

        compile: a torch.compile mode ("default", "max-autotune-no-cudagraphs", ...) for its three parts
        (face network, body network, compose; fixed shapes: a new batch size compiles again); None: eager.
        overlap: on CUDA, the face network runs on a side stream beside the body network (small batches
        leave the GPU idle between a level's kernels; a captured CUDA graph keeps the two branches)."""
        from kyara.student.inference import evaluate_batched, pad_widths, prepare_body, prepare_face, prepared_to

        with torch.no_grad():
            face_net, body_net = (prepared_to(pad_widths(net, self.BATCHED_PAD), self.device, self.dtype)
                                  for net in (prepare_face(self.face_morpher), prepare_body(self.body_morpher)))
        face_pixels, body_pixels, size = self.face_pixels(), self.body_pixels(), self.face_morpher.size

        def faces(poses: torch.Tensor) -> torch.Tensor:
            n = poses.shape[0]
            return evaluate_batched(face_net, poses[:, FACE_ALL], face_pixels, 4).view(n, size, size, 4).permute(0, 3, 1, 2)

        def features(poses: torch.Tensor) -> torch.Tensor:
            return evaluate_batched(body_net, poses, body_pixels, 7)

        def compose(image: torch.Tensor, face: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            return self.compose(image, face, values, body_pixels).image

        if compile is not None:
            how = {} if compile == "default" else {"mode": compile}
            faces, features, compose = (torch.compile(fn, dynamic=False, fullgraph=True, **how)
                                        for fn in (faces, features, compose))
        side = torch.cuda.Stream(self.device) if overlap and self.device.type == "cuda" else None

        def render(image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
            if side is None:
                return compose(image, faces(poses), features(poses))
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                face = faces(poses)
            values = features(poses)
            torch.cuda.current_stream().wait_stream(side)
            face.record_stream(torch.cuda.current_stream())
            return compose(image, face, values)
        return render

    # -- training (torch, differentiable) ------------------------------------------------------------
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

    def body_outputs_at(self, body_input: torch.Tensor, poses: torch.Tensor, pixels: "PixelSet", *,
                        features_at=None) -> BodyMorpherOutput:
        """The body morpher at pixels.output only (training on a pixel subset of the region): body_input
        (N, 4, 512, 512), poses (N, 45) → a BodyMorpherOutput of (N, C, M) fields, body_outputs' values at
        those M pixels (pixels.output.index). features_at as in body_outputs."""
        values = (features_at or self.body_morpher.features_at)(poses, pixels)
        return BodyMorpher.compose_at(body_input, values, pixels.output.index)

    @staticmethod
    def to_canvas(values: torch.Tensor, pixels: "PixelSet") -> torch.Tensor:
        """(N, M, C) values at pixels.output → (N, C, S, S) with zeros elsewhere (differentiable; a view
        when pixels cover the whole canvas); zero head outputs mean no flow and no blend."""
        n, m, c = values.shape
        size = pixels.output.size
        if m == size * size:   # every pixel, row-major (PixelSet indices are ascending)
            return values.view(n, size, size, c).permute(0, 3, 1, 2)
        dense = values.new_zeros(n, size * size, c).index_copy(1, pixels.output.index, values)
        return dense.view(n, size, size, c).permute(0, 3, 1, 2)

    def face_edit(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Paste the face morpher's output into the face box of image: (N, 4, 512, 512)."""
        return self.paste_face(image, self.face_morpher(poses[:, FACE_ALL]))

    @staticmethod
    def paste_face(image: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """image (4, 512, 512) or (N, 4, 512, 512), face (N, 4, 128, 128) → (N, 4, 512, 512)."""
        if image.dim() == 3:
            image = image.unsqueeze(0)
        return STUDENT_FACE_BOX.paste(image.expand(face.shape[0], -1, -1, -1), face)

    @staticmethod
    def _check_poses(poses: torch.Tensor) -> torch.Tensor:
        if poses.dim() != 2 or poses.shape[1] != NUM_PARAMETERS:
            raise ValueError(f"poses must be (N, {NUM_PARAMETERS}), got {tuple(poses.shape)}")
        return poses

    def forward(self, image: torch.Tensor, poses: torch.Tensor) -> BodyMorpherOutput:
        """Differentiable torch forward (training, tests): the face edit, then body_outputs."""
        return self.body_outputs(self.face_edit(image, self._check_poses(poses)), poses)
