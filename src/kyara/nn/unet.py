"""A conditioned U-Net with self-attention: the backbone of THA4's body morpher and upscaler.

The design is the Diffusion-Autoencoder U-Net (Preechakul et al. 2022) as THA4 uses it
(tha3-tha4-facts.md §4.1): every residual block is modulated twice ("two AdaIN units"), once by an
embedding of a time value and once by an embedding of a condition vector (the pose). THA4 always
feeds time 0, so the time embedding is a constant; it is kept because the trained weights contain it.

Attribute names follow the official checkpoints (``time_embed.1``, ``down_blocks.0.res_blocks.0.conv0``,
``middle_blocks.1.module.qkv``, ...) so that the official state dicts load without renaming.

Shapes: image (N, in_channels, S, S) with S divisible by 2**(levels-1); condition (N, condition_channels);
output (N, out_channels, S, S). Any float dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int
    out_channels: int
    model_channels: int                  # width at full resolution; also the time-embedding width
    channel_multipliers: tuple[int, ...]  # width of level i = model_channels · multiplier[i]; level i is at S / 2**i
    attention_levels: tuple[bool, ...]   # which levels get an attention block after each residual block
    condition_channels: int              # width of the condition vector (6 rotation parameters in THA4)
    embedding_channels: int = 256        # width of the time and condition embeddings
    res_blocks_per_level: int = 1
    middle_res_blocks: int = 4           # residual blocks in the middle, with an attention block between each two
    num_heads: int = 8

    @property
    def num_levels(self) -> int:
        return len(self.channel_multipliers)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when there are fewer channels), eps 1e-5, affine."""
    return nn.GroupNorm(min(32, channels), channels)


def zeroed(conv: nn.Conv2d) -> nn.Conv2d:
    """The conv with weight and bias set to zero: the block starts as the identity (training detail only)."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


def time_embedding(t: Tensor, channels: int) -> Tensor:
    """Sinusoidal embedding of t (N, 1) → (N, channels): cos terms then sin terms, frequencies
    10000^(-i/(channels/2 - 1)), i = 0 .. channels/2 - 1 (an odd width is zero-padded at both ends)."""
    half = channels // 2
    frequencies = torch.exp(torch.arange(half, device=t.device) * (-math.log(10000.0) / (half - 1)))
    angles = frequencies.reshape(1, half) * t
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (1, 1)) if channels % 2 else embedding


class TimeEmbedding(nn.Module):
    """Parameter-free sinusoidal embedding (module so that the checkpoint's ``time_embed.{1,3}`` indices hold)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, t: Tensor) -> Tensor:
        return time_embedding(t, self.channels).to(t.dtype)


class Resample(nn.Module):
    """×2 nearest upsampling, 2×2 average-pool downsampling, or nothing. No parameters."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode   # "up", "down" or "same"

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.mode == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x


class ResBlock(nn.Module):
    """x → skip(resample(x)) + h, where
    h = conv0(resample(SiLU(GN(x)))); h = GN(h)·(1+s_t)+b_t, then ·(1+s_c)+b_c; h = conv1(SiLU(h)).
    (s_t, b_t) = Linear(SiLU(time_emb)), (s_c, b_c) = Linear(SiLU(cond_emb)); skip is a 1×1 conv when
    the width changes. (N, in, H, W) → (N, out, H', W') with H' = 2H, H/2 or H by ``resample``."""

    def __init__(self, in_channels: int, out_channels: int, embedding_channels: int, resample: str = "same") -> None:
        super().__init__()
        self.resample = Resample(resample)
        self.norm0 = group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond0_layers = nn.Sequential(nn.SiLU(), nn.Linear(embedding_channels, 2 * out_channels))
        self.cond1_layers = nn.Sequential(nn.SiLU(), nn.Linear(embedding_channels, 2 * out_channels))
        self.norm1 = group_norm(out_channels)
        self.conv1 = zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, time_emb: Tensor, cond_emb: Tensor) -> Tensor:
        h = self.conv0(self.resample(F.silu(self.norm0(x))))
        h = self.norm1(h)
        h = scale_shift(h, self.cond0_layers(time_emb))
        h = scale_shift(h, self.cond1_layers(cond_emb))
        h = self.conv1(F.silu(h))   # dropout 0 in THA4: nothing to apply
        return self.skip(self.resample(x)) + h


def scale_shift(h: Tensor, params: Tensor) -> Tensor:
    """h (N, C, H, W)·(1 + scale) + shift, with params (N, 2C) = [scale, shift]."""
    scale, shift = params.reshape(params.shape[0], params.shape[1], 1, 1).chunk(2, dim=1)
    return h * (1 + scale) + shift


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all H·W positions, residual: x + proj(attn(qkv(GN(x)))).

    The 3C qkv channels split as [q | k | v] first, then each into heads (the "new" order);
    q and k are each scaled by head_channels^(-1/4). (N, C, H, W) → (N, C, H, W)."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"AttentionBlock: {channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.conv = zeroed(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, *_conditions: Tensor) -> Tensor:
        n, c, height, width = x.shape
        length, head_channels = height * width, c // self.num_heads
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3 * c, length).chunk(3, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(head_channels))
        q = (q * scale).reshape(n * self.num_heads, head_channels, length)
        k = (k * scale).reshape(n * self.num_heads, head_channels, length)
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)          # (N·heads, L query, L key)
        attended = torch.bmm(v.reshape(n * self.num_heads, head_channels, length), weights.transpose(1, 2))
        return x + self.conv(attended.reshape(n, c, height, width))


class MiddleAttention(nn.Module):
    """Holder that puts a middle attention block under ``.module`` (the checkpoint's key layout)."""

    def __init__(self, block: AttentionBlock) -> None:
        super().__init__()
        self.module = block

    def forward(self, x: Tensor, *_conditions: Tensor) -> Tensor:
        return self.module(x)


class DownLevel(nn.Module):
    """One encoder level: residual (+attention) blocks, then a downsampling ResBlock unless it is the last level."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, attention: bool, downsample: bool) -> None:
        super().__init__()
        e = config.embedding_channels
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if j == 0 else out_channels, out_channels, e) for j in range(config.res_blocks_per_level))
        self.attention_blocks = nn.ModuleList(
            AttentionBlock(out_channels, config.num_heads) for _ in range(config.res_blocks_per_level) if attention)
        if downsample:
            self.downsample = ResBlock(out_channels, out_channels, e, resample="down")
        self.has_downsample = downsample

    def output_widths(self) -> list[int]:
        """Widths of the skip tensors this level hands to the decoder, in order."""
        width = self.res_blocks[0].conv0.out_channels
        return [width] * (len(self.res_blocks) + int(self.has_downsample))

    def forward(self, h: Tensor, time_emb: Tensor, cond_emb: Tensor) -> list[Tensor]:
        skips = []
        for j, block in enumerate(self.res_blocks):
            h = block(h, time_emb, cond_emb)
            if len(self.attention_blocks):
                h = self.attention_blocks[j](h)
            skips.append(h)
        if self.has_downsample:
            skips.append(self.downsample(h, time_emb, cond_emb))
        return skips


class UpLevel(nn.Module):
    """One decoder level: res_blocks_per_level + 1 residual (+attention) blocks, each on
    cat(h, one skip), then an upsampling ResBlock unless it is level 0."""

    def __init__(self, in_channels: int, out_channels: int, skip_widths: list[int], config: UNetConfig,
                 attention: bool, upsample: bool) -> None:
        super().__init__()
        e = config.embedding_channels
        self.resnet_blocks = nn.ModuleList(
            ResBlock((in_channels if j == 0 else out_channels) + skip_widths[j], out_channels, e)
            for j in range(len(skip_widths)))
        self.attention_blocks = nn.ModuleList(
            AttentionBlock(out_channels, config.num_heads) for _ in skip_widths if attention)
        if upsample:
            self.upsample = ResBlock(out_channels, out_channels, e, resample="up")
        self.has_upsample = upsample

    def forward(self, h: Tensor, skips: list[Tensor], time_emb: Tensor, cond_emb: Tensor) -> Tensor:
        for j, block in enumerate(self.resnet_blocks):
            h = block(torch.cat([h, skips[j]], dim=1), time_emb, cond_emb)
            if len(self.attention_blocks):
                h = self.attention_blocks[j](h)
        return self.upsample(h, time_emb, cond_emb) if self.has_upsample else h


class ConditionedUNet(nn.Module):
    """The U-Net. ``forward(x, condition, first_conv_addition=None)``: x (N, in, S, S), condition
    (N, condition_channels), optional first_conv_addition (N, model_channels, S, S) added to the first
    conv's output (THA4's upscaler injects its coarse inputs there) → (N, out_channels, S, S)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if len(config.attention_levels) != config.num_levels:
            raise ValueError("UNetConfig: one attention flag per level")
        self.config = config
        mc, e = config.model_channels, config.embedding_channels
        self.time_embed = nn.Sequential(TimeEmbedding(mc), nn.Linear(mc, e), nn.SiLU(), nn.Linear(e, e))
        self.cond_embed = nn.Sequential(nn.Linear(config.condition_channels, e), nn.SiLU(), nn.Linear(e, e))
        self.first_conv = nn.Conv2d(config.in_channels, mc, 3, padding=1)

        widths = [mc]          # widths of the skip tensors, in the order the encoder makes them
        current = mc
        self.down_blocks = nn.ModuleList()
        for i, multiplier in enumerate(config.channel_multipliers):
            level = DownLevel(current, mc * multiplier, config, config.attention_levels[i], i < config.num_levels - 1)
            self.down_blocks.append(level)
            widths += level.output_widths()
            current = mc * multiplier

        self.middle_blocks = nn.ModuleList()
        for i in range(config.middle_res_blocks):
            if i:
                self.middle_blocks.append(MiddleAttention(AttentionBlock(current, config.num_heads)))
            self.middle_blocks.append(ResBlock(current, current, e))

        self.up_blocks = nn.ModuleList()
        for i in reversed(range(config.num_levels)):
            skip_widths = [widths.pop() for _ in range(config.res_blocks_per_level + 1)]
            out = mc * config.channel_multipliers[i]
            self.up_blocks.append(UpLevel(current, out, skip_widths, config, config.attention_levels[i], i > 0))
            current = out

        self.last = nn.Sequential(group_norm(current), nn.SiLU(), zeroed(nn.Conv2d(current, config.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, condition: Tensor, first_conv_addition: Tensor | None = None) -> Tensor:
        # THA4 always runs at time 0.
        time_emb = self.time_embed(torch.zeros(x.shape[0], 1, device=x.device, dtype=x.dtype))
        cond_emb = self.cond_embed(condition)
        h = self.first_conv(x)
        if first_conv_addition is not None:
            h = h + first_conv_addition
        skips = [h]
        for level in self.down_blocks:
            skips += level(skips[-1], time_emb, cond_emb)
        h = skips[-1]
        for block in self.middle_blocks:
            h = block(h, time_emb, cond_emb)
        for level in self.up_blocks:
            level_skips = [skips.pop() for _ in range(self.config.res_blocks_per_level + 1)]
            h = level(h, level_skips, time_emb, cond_emb)
        return self.last(h)
