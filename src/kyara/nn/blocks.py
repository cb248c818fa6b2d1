"""Convolution building blocks and the three backbones the THA networks are made of.

Nothing here knows about THA: the modules are plain conv / instance-norm / activation stacks. Their
child layout (``nn.Sequential`` indices, attribute names ``downsample_blocks``, ``bottleneck_blocks``,
``upsample_blocks``, ``resnet_path``) is chosen so that a module's ``state_dict`` keys are the
conventional ones of these layer stacks, which lets pretrained checkpoints load with a strict
``load_state_dict`` and no key renaming.

Every block is "conv (no bias) → InstanceNorm2d(affine) → activation". A *separable* conv is a
depthwise k×k conv (groups = in_channels, no bias) followed by a pointwise 1×1 conv; a separable
block flattens both convs into the same ``Sequential`` ahead of the norm, so its keys are
``0.weight`` (depthwise), ``1.weight`` (pointwise), ``2.weight/bias`` (norm).

Feature maps are (N, C, H, W) in whatever float dtype the module was cast to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Activation:
    """ReLU when ``negative_slope`` is 0, otherwise LeakyReLU with that slope.

    The activation always follows a norm layer whose output nothing else reads, so it runs in place.
    """
    negative_slope: float = 0.0

    def module(self) -> nn.Module:
        if self.negative_slope == 0.0:
            return nn.ReLU(inplace=True)
        return nn.LeakyReLU(self.negative_slope, inplace=True)


RELU = Activation()


def channels_at(size: int, image_size: int, start_channels: int, max_channels: int) -> int:
    """Channel schedule of the encoder-decoders: start_channels doubles each time the size halves, capped."""
    return min(start_channels * (image_size // size), max_channels)


# -- single convolutions -------------------------------------------------------------------------
def conv_layers(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int | None = None,
                bias: bool = False, separable: bool = False, transposed: bool = False) -> list[nn.Module]:
    """The layers of one (possibly separable, possibly transposed) convolution, in order.

    Plain: [Conv2d]. Separable: [depthwise Conv2d/ConvTranspose2d k×k (no bias), pointwise Conv2d 1×1].
    ``padding`` defaults to kernel_size // 2 (same size for odd kernels at stride 1).
    """
    if padding is None:
        padding = kernel_size // 2
    spatial = nn.ConvTranspose2d if transposed else nn.Conv2d
    if not separable:
        return [spatial(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)]
    depthwise = spatial(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                        groups=in_channels, bias=False)
    pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
    return [depthwise, pointwise]


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = False,
         separable: bool = False) -> nn.Module:
    """A stride-1 same-size conv: ``Conv2d``, or ``Sequential(depthwise, pointwise)`` when separable."""
    layers = conv_layers(in_channels, out_channels, kernel_size, bias=bias, separable=separable)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


# -- conv → norm → activation blocks ---------------------------------------------------------------
def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 3, *, activation: Activation = RELU,
                  separable: bool = False) -> nn.Sequential:
    """Same-size conv k×k (no bias) → InstanceNorm2d(affine) → activation. (N, in, H, W) → (N, out, H, W)."""
    return nn.Sequential(*conv_layers(in_channels, out_channels, kernel_size, separable=separable),
                         nn.InstanceNorm2d(out_channels, affine=True), activation.module())


def downsample_block(in_channels: int, out_channels: int, *, activation: Activation = RELU,
                     separable: bool = False) -> nn.Sequential:
    """Conv 4×4 stride 2 pad 1 → IN → act. (N, in, H, W) → (N, out, H/2, W/2)."""
    return nn.Sequential(*conv_layers(in_channels, out_channels, 4, stride=2, padding=1, separable=separable),
                         nn.InstanceNorm2d(out_channels, affine=True), activation.module())


def upsample_block(in_channels: int, out_channels: int, *, activation: Activation = RELU,
                   separable: bool = False) -> nn.Sequential:
    """ConvTranspose 4×4 stride 2 pad 1 → IN → act. (N, in, H, W) → (N, out, 2H, 2W)."""
    return nn.Sequential(*conv_layers(in_channels, out_channels, 4, stride=2, padding=1, separable=separable,
                                      transposed=True),
                         nn.InstanceNorm2d(out_channels, affine=True), activation.module())


class ResnetBlock(nn.Module):
    """x + [conv3 → IN → act → conv3 → IN](x); no activation after the sum. Shape-preserving."""

    def __init__(self, channels: int, *, activation: Activation = RELU, separable: bool = False) -> None:
        super().__init__()
        self.resnet_path = nn.Sequential(
            conv(channels, channels, 3, separable=separable),
            nn.InstanceNorm2d(channels, affine=True),
            activation.module(),
            conv(channels, channels, 3, separable=separable),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.resnet_path(x)


def broadcast_condition(feature: torch.Tensor | Sequence[torch.Tensor], condition: torch.Tensor) -> torch.Tensor:
    """Append a per-sample vector as constant channels.

    feature (N, C, H, W) or a list of (N, C_i, H, W) maps, condition (N, K) → (N, ΣC + K, H, W), the
    condition repeated over H×W (one concatenation, no intermediate copies).
    """
    features = [feature] if isinstance(feature, torch.Tensor) else list(feature)
    n, _, h, w = features[0].shape
    return torch.cat([*features, condition[:, :, None, None].expand(n, -1, h, w)], dim=1)


# -- backbones -------------------------------------------------------------------------------------
def _encoder(in_channels: int, channels: int, image_size: int, bottleneck_size: int, first_kernel: int,
             next_channels, activation: Activation, downsample_activation: Activation,
             separable: bool) -> tuple[nn.ModuleList, list[int]]:
    """First conv block at full size, then 4×4/2 downsample blocks down to ``bottleneck_size``.

    ``next_channels(size, channels)`` gives a level's width. Returns the blocks and the channel
    count after each of them (the last is the bottleneck's).
    """
    blocks = nn.ModuleList([conv_norm_act(in_channels, channels, first_kernel, activation=activation,
                                          separable=separable)])
    widths, size = [channels], image_size
    while size > bottleneck_size:
        size //= 2
        out = next_channels(size, channels)
        blocks.append(downsample_block(channels, out, activation=downsample_activation, separable=separable))
        channels = out
        widths.append(channels)
    return blocks, widths


def _decoder(channels: int, bottleneck_size: int, image_size: int, start_channels: int, max_channels: int,
             make_block) -> nn.ModuleList:
    """One ``make_block(in, out)`` per ×2 level from ``bottleneck_size`` back to ``image_size``."""
    blocks, size = nn.ModuleList(), bottleneck_size
    while size < image_size:
        size *= 2
        out = channels_at(size, image_size, start_channels, max_channels)
        blocks.append(make_block(channels, out))
        channels = out
    return blocks


@dataclass(frozen=True)
class EncoderDecoderConfig:
    """Strided-conv encoder, residual bottleneck, transposed-conv decoder (no skips)."""
    image_size: int
    in_channels: int
    start_channels: int
    bottleneck_size: int
    num_bottleneck_blocks: int       # the first is a conv block that absorbs the condition, the rest ResnetBlocks
    condition_channels: int = 0      # a per-sample vector concatenated at the bottleneck
    max_channels: int = 512
    separable: bool = False
    activation: Activation = RELU


class EncoderDecoder(nn.Module):
    """(N, in_channels, S, S) [+ condition (N, K)] → (N, start_channels, S, S) feature.

    Encoder: conv3 block in→start @S, then 4×4/2 downsample blocks until ``bottleneck_size``.
    Bottleneck: conv3 block (C + K → C), then ``num_bottleneck_blocks - 1`` ResnetBlocks.
    Decoder: transposed-conv upsample blocks back to S.
    """

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        act, sep = c.activation, c.separable
        self.downsample_blocks, widths = _encoder(
            c.in_channels, c.start_channels, c.image_size, c.bottleneck_size, 3,
            lambda size, _: channels_at(size, c.image_size, c.start_channels, c.max_channels), act, act, sep)
        channels = widths[-1]
        self.bottleneck_blocks = nn.ModuleList(
            [conv_norm_act(channels + c.condition_channels, channels, 3, activation=act, separable=sep)])
        for _ in range(1, c.num_bottleneck_blocks):
            self.bottleneck_blocks.append(ResnetBlock(channels, activation=act, separable=sep))
        self.upsample_blocks = _decoder(
            channels, c.bottleneck_size, c.image_size, c.start_channels, c.max_channels,
            lambda i, o: upsample_block(i, o, activation=act, separable=sep))

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return run_encoder_decoder(self.downsample_blocks, self.bottleneck_blocks, self.upsample_blocks,
                                   image, condition)


def run_encoder_decoder(downsample_blocks: nn.ModuleList, bottleneck_blocks: nn.ModuleList,
                        upsample_blocks: nn.ModuleList, image: torch.Tensor,
                        condition: torch.Tensor | None = None) -> torch.Tensor:
    """The EncoderDecoder forward pass on its three block lists.

    A free function so that a network whose checkpoint stores these lists at its own top level (no
    wrapping ``body.`` module) can run them without a second copy of the loop.
    """
    feature = image
    for block in downsample_blocks:
        feature = block(feature)
    if condition is not None:
        feature = broadcast_condition(feature, condition)
    for block in bottleneck_blocks:
        feature = block(feature)
    for block in upsample_blocks:
        feature = block(feature)
    return feature


@dataclass(frozen=True)
class ResizeConvConfig:
    """Shared by the resize-conv encoder-decoder and the resize-conv U-Net.

    ``downsample_activation`` overrides ``activation`` in the strided downsample blocks only (None: same).
    """
    image_size: int
    in_channels: int
    start_channels: int
    bottleneck_size: int
    num_bottleneck_blocks: int
    max_channels: int = 512
    separable: bool = False
    activation: Activation = RELU
    downsample_activation: Activation | None = None


def upsample_nearest(feature: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, 2H, 2W), each value repeated 2×2."""
    return F.interpolate(feature, scale_factor=2, mode="nearest")


class Upsample2x(nn.Module):
    """Nearest-neighbour ×2 upsampling as a parameter-free module (keeps Sequential indices aligned)."""

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return upsample_nearest(feature)


class ResizeConvEncoderDecoder(nn.Module):
    """(N, in_channels, S, S) → (N, start_channels, S, S) feature; no skip connections.

    Encoder: conv7 block in→start @S, 4×4/2 downsample blocks to ``bottleneck_size``; then
    ``num_bottleneck_blocks`` ResnetBlocks; decoder: [nearest ×2, conv3 block] per level
    (``upsample_blocks[i]`` is ``Sequential(Upsample2x, block)``).
    """

    def __init__(self, config: ResizeConvConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        act, sep = c.activation, c.separable
        down_act = act if c.downsample_activation is None else c.downsample_activation
        self.downsample_blocks, widths = _encoder(
            c.in_channels, c.start_channels, c.image_size, c.bottleneck_size, 7,
            lambda size, _: channels_at(size, c.image_size, c.start_channels, c.max_channels), act, down_act, sep)
        channels = widths[-1]
        self.bottleneck_blocks = nn.ModuleList(
            [ResnetBlock(channels, activation=act, separable=sep) for _ in range(c.num_bottleneck_blocks)])
        self.upsample_blocks = _decoder(
            channels, c.bottleneck_size, c.image_size, c.start_channels, c.max_channels,
            lambda i, o: nn.Sequential(Upsample2x(), conv_norm_act(i, o, 3, activation=act, separable=sep)))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        for block in self.downsample_blocks:
            feature = block(feature)
        for block in self.bottleneck_blocks:
            feature = block(feature)
        for block in self.upsample_blocks:
            feature = block(feature)
        return feature


class ResizeConvUNet(nn.Module):
    """(N, in_channels, S, S) → (N, start_channels, S, S) feature, with skip connections.

    Encoder: conv3 block in→start @S, 4×4/2 downsample blocks doubling the channels (capped) to
    ``bottleneck_size``; ``num_bottleneck_blocks`` ResnetBlocks; decoder per level: nearest ×2,
    concatenate the encoder feature of that size, conv3 block (C + C_skip → C_skip).
    """

    def __init__(self, config: ResizeConvConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        act, sep = c.activation, c.separable
        down_act = act if c.downsample_activation is None else c.downsample_activation
        self.downsample_blocks, skip_channels = _encoder(
            c.in_channels, c.start_channels, c.image_size, c.bottleneck_size, 3,
            lambda _, channels: min(c.max_channels, channels * 2), act, down_act, sep)
        channels = skip_channels[-1]
        self.bottleneck_blocks = nn.ModuleList(
            [ResnetBlock(channels, activation=act, separable=sep) for _ in range(c.num_bottleneck_blocks)])
        self.upsample_blocks = nn.ModuleList()
        for skip in reversed(skip_channels[:-1]):
            self.upsample_blocks.append(conv_norm_act(channels + skip, skip, 3, activation=act, separable=sep))
            channels = skip

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.downsample_blocks:
            feature = block(feature)
            skips.append(feature)
        for block in self.bottleneck_blocks:
            feature = block(feature)
        for i, block in enumerate(self.upsample_blocks):
            feature = torch.cat([upsample_nearest(feature), skips[-i - 2]], dim=1)
            feature = block(feature)
        return feature
