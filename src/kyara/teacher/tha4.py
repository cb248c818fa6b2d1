"""The THA4 teacher: the five networks of THA4's full poser and the ``Teacher`` that composes them.

THA4 (tha3-tha4-facts.md §4.1) keeps THA3's first three networks, in their *standard* (non-separable)
architecture with new weights, and replaces THA3's half-resolution rotator and editor by two
conditioned U-Nets with attention (``kyara.nn.unet``):

1. ``eyebrow_decomposer``, 2. ``eyebrow_combiner``, 3. ``face_morpher``: as in ``kyara.teacher.tha3``
   (the face morpher's iris/mouth flow is part of its output).
4. ``body_morpher`` poses the 256² downscale of the face-morphed image by pose[ROTATION]: the U-Net
   predicts a direct RGBA image, a flow and an alpha logit; merged = α·direct + (1−α)·warp(image, flow).
5. ``upscaler`` works at 512²: from the face-morphed image (the U-Net's input), and the body morpher's
   merged image and flow bilinearly upscaled (injected after the U-Net's first conv through the
   zero-initialised ``coarse_image_conv``), it predicts direct/flow/alpha again. Its flow is absolute:
   it warps the face-morphed image directly.

Image convention: the official THA4 poser is fed *premultiplied* colour (linear RGB multiplied by
alpha, then mapped to [-1, 1]); see docs/file-format.md "colour convention". This module works on
whatever tensor it is given; callers that start from a straight-alpha character premultiply first.

Weights: the five official files (``tha4-models.zip``, CC BY-NC 4.0: downloaded by hand, never
bundled) in one directory, read with ``torch.load(weights_only=True)`` and checked strictly.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from kyara.errors import WeightsError
from kyara.geometry import CANVAS
from kyara.nn.unet import ConditionedUNet, UNetConfig
from kyara.nn.warp import apply_color_change, apply_flow
from kyara.pose import ROTATION
from kyara.poser import pick_device, pick_dtype
from kyara.store import kyara_home
from kyara.teacher import weights as weight_io
from kyara.teacher.tha3 import (
    IMAGE_CHANNELS,
    NUM_ROTATION_PARAMS,
    EyebrowCombiner,
    EyebrowCombinerOutput,
    EyebrowDecomposer,
    EyebrowLayers,
    FaceMorpher,
    FaceMorpherOutput,
    PreparedImage,
    Teacher,
    resize,
)

NAME = "tha4"

# Network role (kyara name) → official file name in the weights directory (T4:README.md, data/tha4/).
FILE_NAMES: dict[str, str] = {
    "eyebrow_decomposer": "eyebrow_decomposer.pt",
    "eyebrow_combiner": "eyebrow_morphing_combiner.pt",
    "face_morpher": "face_morpher.pt",
    "body_morpher": "body_morpher.pt",
    "upscaler": "upscaler.pt",
}

# The U-Net outputs 7 channels: [0:4] direct RGBA (no squashing), [4:6] flow, [6] alpha logit.
UNET_OUT_CHANNELS = IMAGE_CHANNELS + 2 + 1

BODY_MORPHER_UNET = UNetConfig(
    in_channels=IMAGE_CHANNELS, out_channels=UNET_OUT_CHANNELS, model_channels=64,
    channel_multipliers=(1, 2, 4, 4, 4), attention_levels=(False, False, False, False, True),
    condition_channels=NUM_ROTATION_PARAMS)
UPSCALER_UNET = UNetConfig(
    in_channels=IMAGE_CHANNELS, out_channels=UNET_OUT_CHANNELS, model_channels=32,
    channel_multipliers=(1, 2, 4, 8, 8, 8), attention_levels=(False, False, False, False, False, True),
    condition_channels=NUM_ROTATION_PARAMS)


class MorphOutput(NamedTuple):
    """Body morpher (N, C, 256, 256) or upscaler (N, C, 512, 512) output, in the official order."""
    image: Tensor          # (N, 4) merged: alpha·direct_image + (1 − alpha)·warped_image
    alpha: Tensor          # (N, 1) in [0, 1]
    warped_image: Tensor   # (N, 4) the input warped by ``flow``
    flow: Tensor           # (N, 2) absolute flow of the input image, normalized coordinates
    direct_image: Tensor   # (N, 4) generated RGBA (unbounded)


def split_unet_output(raw: Tensor, image: Tensor) -> MorphOutput:
    """raw (N, 7, S, S) U-Net output, image (N, 4, S, S) the image it warps → MorphOutput."""
    direct = raw[:, 0:IMAGE_CHANNELS]
    flow = raw[:, IMAGE_CHANNELS:IMAGE_CHANNELS + 2]
    alpha = torch.sigmoid(raw[:, IMAGE_CHANNELS + 2:IMAGE_CHANNELS + 3])
    warped = apply_flow(image, flow)
    return MorphOutput(apply_color_change(alpha, direct, warped), alpha, warped, flow, direct)


class BodyMorpher(nn.Module):
    """Half-resolution poser (official class ``Morpher00``): image (N, 4, 256, 256), rotation_pose (N, 6) → MorphOutput."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ConditionedUNet(BODY_MORPHER_UNET)

    def forward(self, image: Tensor, rotation_pose: Tensor) -> MorphOutput:
        return split_unet_output(self.body(image, rotation_pose), image)


class Upscaler(nn.Module):
    """Full-resolution poser (official class ``Upscaler02``).

    rest_image: (N, 4, 512, 512) face-morphed image; coarse_image, coarse_flow: the body morpher's
    merged image (N, 4) and flow (N, 2) upscaled to 512; rotation_pose (N, 6) → MorphOutput.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = ConditionedUNet(UPSCALER_UNET)
        self.coarse_image_conv = nn.Conv2d(2 * IMAGE_CHANNELS + 2, UPSCALER_UNET.model_channels, 3, padding=1)

    def forward(self, rest_image: Tensor, coarse_image: Tensor, coarse_flow: Tensor, rotation_pose: Tensor) -> MorphOutput:
        coarse_warped = apply_flow(rest_image, coarse_flow)
        addition = self.coarse_image_conv(torch.cat([coarse_image, coarse_warped, coarse_flow], dim=1))
        return split_unet_output(self.body(rest_image, rotation_pose, addition), rest_image)


class THA4(nn.Module):
    """The five THA4 networks."""

    def __init__(self) -> None:
        super().__init__()
        self.eyebrow_decomposer = EyebrowDecomposer(separable=False)
        self.eyebrow_combiner = EyebrowCombiner(separable=False)
        self.face_morpher = FaceMorpher(separable=False)
        self.body_morpher = BodyMorpher()
        self.upscaler = Upscaler()

    def networks(self) -> dict[str, nn.Module]:
        """Role → network; the roles are the keys of ``FILE_NAMES``."""
        return {role: getattr(self, role) for role in FILE_NAMES}


class THA4Outputs(NamedTuple):
    """Everything ``THA4Teacher.pose_all`` computes for N poses (official output list: ``official_order``)."""
    image: Tensor                     # (N, 4, 512, 512) final image, the same tensor as upscaler.image
    face_morphed_full: Tensor         # (N, 4, 512, 512) input image with the morphed face pasted in
    face_morphed_half: Tensor         # (N, 4, 256, 256) its bilinear downscale, the body morpher's input
    upscaler: MorphOutput
    body_morpher: MorphOutput
    face_morpher: FaceMorpherOutput
    eyebrow_combiner: EyebrowCombinerOutput
    eyebrow_layers: EyebrowLayers

    @property
    def editor(self) -> MorphOutput:
        """The network in THA3's editor role (final image, absolute flow): lets code written for
        THA3's outputs (e.g. the distiller's ``out.editor.flow``) read a THA4 teacher unchanged."""
        return self.upscaler

    def official_order(self) -> tuple[Tensor, ...]:
        """The 33 tensors of the official mode_07 output list: upscaler (5), face_morphed_full,
        body morpher (5), face morpher (8), eyebrow combiner (8), eyebrow decomposer (6)."""
        f, c = self.face_morpher, self.eyebrow_combiner
        return (*self.upscaler, self.face_morphed_full, *self.body_morpher,
                f.image, f.eye_alpha, f.eye_color_change, f.iris_mouth_image, f.iris_mouth_alpha,
                f.iris_mouth_color_change, f.iris_mouth_warped, f.iris_mouth_flow,
                c.eyebrow_image_combine_alpha, c.combine_alpha, c.eyebrow_image, c.morphed_eyebrow_layer,
                c.morphed_eyebrow_layer_alpha, c.morphed_eyebrow_layer_color_change, c.warped_eyebrow_layer,
                c.eyebrow_flow,
                *self.eyebrow_layers)


class THA4Teacher(Teacher):
    """The THA4 full poser as a ``kyara.poser.Poser``; same interface as the THA3 ``Teacher``
    (``prepare``, ``pose``, ``pose_all``, ``cuda_graph``). Images are model space as the official
    poser takes them: premultiplied colour (see the module docstring)."""

    colour = "premultiplied"   # the image convention of its inputs and outputs (kyara.character.COLOUR_KEY)

    def __init__(self, networks: THA4, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(networks, "full", device, dtype)   # type: ignore[arg-type]
        self.name = NAME

    def _forward(self, prepared: PreparedImage, poses: Tensor, complete: bool) -> THA4Outputs:
        nets = self.networks
        layers, eyebrow, face, face_morphed_full, face_morphed_half = self._face_stage(prepared, poses, complete)
        rotation_pose = poses[:, ROTATION]
        body = nets.body_morpher(face_morphed_half, rotation_pose)
        upscaler = nets.upscaler(face_morphed_full, resize(body.image, CANVAS), resize(body.flow, CANVAS), rotation_pose)
        return THA4Outputs(upscaler.image, face_morphed_full, face_morphed_half, upscaler, body, face, eyebrow, layers)


def build_tha4(device: torch.device | str = "meta") -> THA4:
    """The five networks with random weights (``meta`` device: shapes only, no memory)."""
    with torch.device(device):
        return THA4()


def default_weights_dir() -> Path:
    """$KYARA_HOME/models/tha4: where a user may unpack the official files (kyara never downloads them)."""
    return kyara_home() / "models" / "tha4"


def weight_files(directory: Path) -> dict[str, Path]:
    """Role → path of each of the five files; one-line WeightsError naming every missing file."""
    directory = Path(directory)
    paths = {role: directory / name for role, name in FILE_NAMES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        where = "does not exist" if not directory.is_dir() else f"lacks {', '.join(missing)}"
        tha3_hint = (" (it looks like a THA3 weights directory: use --teacher tha3/...)"
                     if (directory / "editor.pt").is_file() or (directory / "two_algo_face_body_rotator.pt").is_file()
                     else "")
        raise WeightsError(
            f"THA4 weights not found: {directory} {where}{tha3_hint}. Download tha4-models.zip by hand "
            f"(CC BY-NC 4.0) and pass --weights DIR, a directory with {', '.join(FILE_NAMES.values())}.")
    return paths


def load_tha4(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
              dtype: str | torch.dtype | None = None) -> THA4Teacher:
    """Build THA4 and fill it strictly from the five official files in ``weights_dir``
    (None → ``default_weights_dir()``). dtype: None → float32 (THA4 ships float32 only)."""
    directory = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    paths = weight_files(directory)
    device = pick_device(device if not isinstance(device, torch.device) else str(device))
    dtype = torch.float32 if dtype is None else pick_dtype(dtype)
    networks = build_tha4("meta")
    for role, network in networks.networks().items():
        state = weight_io.read_state_dict(paths[role])
        weight_io.check_state_dict(network, state, paths[role])
        network.load_state_dict(state, strict=True, assign=True)
    networks = networks.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return THA4Teacher(networks, device, dtype)
