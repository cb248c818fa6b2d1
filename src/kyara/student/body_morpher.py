"""Student body morpher: a multi-resolution SIREN that turns head and body by warping the image
with an appearance flow and blending in directly generated pixels (THA4 §4.1, facts §4.2).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kyara.nn import fused_siren
from kyara.nn.siren import SineLinear, conditioned_first_layer, linear_head, linear_nhwc, position_grid, sine
from kyara.nn.warp import apply_flow, apply_flow_at
from kyara.pose import NUM_PARAMETERS

from kyara.student.pixels import upsample_taps

if TYPE_CHECKING:
    from kyara.student.pixels import PixelSet

# (resolution, width, output width) per level; the last layer of a level emits the next level's width.
LEVELS: tuple[tuple[int, int, int], ...] = ((128, 360, 180), (256, 180, 90), (512, 90, 90))
WIDTHS: tuple[int, ...] = tuple(width for _, width, _ in LEVELS)   # (360, 180, 90): THA4's shape, the default
MAX_WIDTH = 1024   # widest layer a student file may ask for (a sanity bound: 1024 at 128² is already ~3 M parameters)


def levels_for_widths(widths: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """Hidden widths per level, coarse to fine (e.g. (360, 180, 90)) → LEVELS-style (resolution, width,
    output width): THA4's pattern, each level's last layer emitting the next level's width (the finest its
    own). Why only the widths vary: the resolutions 128 / 256 / 512 are what every pixel set, the CPU
    and browser renderers and the official THA4 layout assume."""
    widths = tuple(widths)
    if len(widths) != len(LEVELS) or not all(isinstance(w, int) and 1 <= w <= MAX_WIDTH for w in widths):
        raise ValueError(f"body widths must be {len(LEVELS)} integers in [1, {MAX_WIDTH}] (coarse to fine, "
                         f"e.g. {','.join(map(str, WIDTHS))}), got {widths}")
    outs = widths[1:] + widths[-1:]
    return tuple((res, w, out) for (res, _, _), w, out in zip(LEVELS, widths, outs))


def shape_from_state(state: dict[str, torch.Tensor]) -> tuple[tuple[tuple[int, int, int], ...], int]:
    """A body morpher's state dict (keys ``siren_layers.{level}.{j}.linear.*``) → (levels, layers_per_level)
    of the module it came from, read off the weights' shapes. The result only says what to build: loading
    into that module (strict, shape-checked) is what validates the rest."""
    layers: dict[int, set[int]] = {}
    for key in state:
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "siren_layers" and parts[1].isdigit() and parts[2].isdigit():
            layers.setdefault(int(parts[1]), set()).add(int(parts[2]))
    if sorted(layers) != list(range(len(LEVELS))):
        raise ValueError(f"body morpher weights have levels {sorted(layers)}, expected {list(range(len(LEVELS)))}")
    counts = {len(js) for js in layers.values()}
    if len(counts) != 1 or any(js != set(range(len(js))) for js in layers.values()):
        raise ValueError("body morpher weights: every level must have the same layers 0..L-1, "
                         f"got {[sorted(layers[i]) for i in sorted(layers)]}")
    per_level = counts.pop()
    try:
        widths = tuple(int(state[f"siren_layers.{i}.0.linear.weight"].shape[0]) for i in range(len(LEVELS)))
        outs = tuple(int(state[f"siren_layers.{i}.{per_level - 1}.linear.weight"].shape[0]) for i in range(len(LEVELS)))
    except (KeyError, AttributeError, IndexError):
        raise ValueError("body morpher weights: a level's weight tensor is missing or not a tensor") from None
    if not all(1 <= w <= MAX_WIDTH for w in widths + outs):
        raise ValueError(f"body morpher weights: widths {widths} / outputs {outs} outside [1, {MAX_WIDTH}]")
    return tuple((res, w, out) for (res, _, _), w, out in zip(LEVELS, widths, outs)), per_level


class BodyMorpherOutput(NamedTuple):
    """All (N, C, 512, 512) float, model space where images.

    image: blended result (N, 4); alpha: (N, 1) raw blend weight (no sigmoid, as THA4);
    color: directly generated RGBA (N, 4); warped: input warped by flow (N, 4);
    flow: (N, 2) offsets in normalized [-1, 1] coordinates (x then y), added to the identity grid.
    """
    image: torch.Tensor
    alpha: torch.Tensor
    color: torch.Tensor
    warped: torch.Tensor
    flow: torch.Tensor


class BodyMorpher(nn.Module):
    """(image (N, 4, 512, 512), pose (N, 45)) → BodyMorpherOutput. 331,567 parameters.

    Each level sees [upsampled features of the previous level, position, pose] (pose and
    position re-injected at every level); state-dict keys ``siren_layers.{level}.{j}.linear.*``,
    ``last_linear.*``.
    """

    def __init__(self, levels: tuple[tuple[int, int, int], ...] = LEVELS, layers_per_level: int = 3):
        super().__init__()
        self.levels = levels
        self.layers_per_level = layers_per_level
        cond = 2 + NUM_PARAMETERS
        blocks = []
        prev_out = 0
        for i, (_, width, out_width) in enumerate(levels):
            widths = [prev_out + cond] + [width] * (layers_per_level - 1) + [out_width]
            blocks.append(nn.ModuleList(
                SineLinear(a, b, is_first=(i == 0 and j == 0)) for j, (a, b) in enumerate(zip(widths[:-1], widths[1:]))
            ))
            prev_out = out_width
        self.siren_layers = nn.ModuleList(blocks)
        self.last_linear = linear_head(prev_out, 7)
        for i, (res, _, _) in enumerate(levels):
            self.register_buffer(f"position_{i}", position_grid(res, res), persistent=False)

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden width of each level, coarse to fine ((360, 180, 90) for THA4's shape)."""
        return tuple(width for _, width, _ in self.levels)

    def features(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (N, 45) → (N, 7, 512, 512) raw head outputs [flow(2), alpha(1), color(4)].

        Channels-last evaluation of exactly the official formulation (1×1 convs over concatenations;
        tests/reference_student.py).
        """
        x = None
        for i, layers in enumerate(self.siren_layers):
            position = getattr(self, f"position_{i}")[0].permute(1, 2, 0).to(pose.dtype)   # (H, W, 2)
            x = sine(conditioned_first_layer(layers[0].linear, position, pose, x))         # (N, H, W, C)
            for layer in layers[1:]:
                x = sine(linear_nhwc(x, layer.linear))
        return linear_nhwc(x, self.last_linear).permute(0, 3, 1, 2)                       # (N, 7, H, W)

    def features_at(self, pose: torch.Tensor, pixels: "PixelSet", pad: int = 1) -> torch.Tensor:
        """pose (N, 45) → (N, M, 7) raw head outputs at the M pixels of pixels.output (its index order).

        Exactly ``features`` restricted to a pixel subset (kyara.student.pixels.PixelSet with one
        level per SIREN level, on pose's device), differentiable: region-restricted training and
        rendering evaluate only the canvas a character can reach. Upsampling is a 4-tap gather of
        the previous level's output already projected by this level's first layer (W·up(f) = up(W·f)).
        pad > 1: every width rounded up to a multiple of pad by zero rows / columns (``padded_weights``;
        the same values, aligned GEMMs for tensor cores; gradients reach the real weights only).
        """
        if len(pixels.levels) != len(self.siren_layers):
            raise ValueError(f"pixel set has {len(pixels.levels)} levels, the body morpher {len(self.siren_layers)}")
        levels, (head_w, head_b) = self.padded_weights(pad)
        x = None
        for (w, b, hidden), level in zip(levels, pixels.levels):
            c_f = w.shape[1] - 2 - pose.shape[1]
            z = (F.linear(level.position.to(pose.dtype), w[:, c_f:c_f + 2]).unsqueeze(0)         # (1, M, C)
                 + F.linear(pose, w[:, c_f + 2:], b).unsqueeze(1))                              # (N, 1, C)
            if x is not None:
                z = z + upsample_taps(F.linear(x, w[:, :c_f]), level)                           # (N, M_prev, C) → (N, M, C)
            x = sine(z)
            for hw, hb in hidden:
                x = sine(F.linear(x, hw, hb))
        return F.linear(x, head_w, head_b)[..., :self.last_linear.out_channels]

    def padded_weights(self, pad: int = 1):
        """The layers' (weight (C_out, C_in), bias (C_out,)) with every width a multiple of pad (zero rows
        and columns; pad 1: the weights themselves, flattened). Returns ([(first weight, first bias,
        [(weight, bias) of the other layers]) per level], (head weight, head bias)); a first layer's
        columns are [previous level's features, position (2), pose], the features' block padded."""
        if pad == 1:   # no copies on the unpadded path (Student.pose on a GPU runs it every frame)
            return ([(layers[0].linear.weight.flatten(1), layers[0].linear.bias,
                      [(layer.linear.weight.flatten(1), layer.linear.bias) for layer in layers[1:]])
                     for layers in self.siren_layers], (self.last_linear.weight.flatten(1), self.last_linear.bias))
        up = lambda n: -(-n // pad) * pad                                                    # noqa: E731
        levels, prev, prev_padded = [], 0, 0
        for layers in self.siren_layers:
            w, b = layers[0].linear.weight.flatten(1), layers[0].linear.bias
            c = up(w.shape[0])
            w = torch.cat([F.pad(w[:, :prev], (0, prev_padded - prev)), w[:, prev:]], 1) if prev else w
            w, b = F.pad(w, (0, 0, 0, c - w.shape[0])), F.pad(b, (0, c - b.shape[0]))
            hidden, c_in = [], c
            for layer in layers[1:]:
                hw, hb = layer.linear.weight.flatten(1), layer.linear.bias
                c_out = up(hw.shape[0])
                hidden.append((F.pad(hw, (0, c_in - hw.shape[1], 0, c_out - hw.shape[0])), F.pad(hb, (0, c_out - hb.shape[0]))))
                c_in = c_out
            levels.append((w, b, hidden))
            prev, prev_padded = layers[-1].linear.weight.shape[0], c_in
        hw, hb = self.last_linear.weight.flatten(1), self.last_linear.bias
        out = up(hw.shape[0])
        return levels, (F.pad(hw, (0, prev_padded - hw.shape[1], 0, out - hw.shape[0])), F.pad(hb, (0, out - hb.shape[0])))

    def fused_features_at(self, pose: torch.Tensor, pixels: "PixelSet") -> torch.Tensor:
        """``features_at`` through the fused Triton kernels (kyara.nn.fused_siren): same maths, each
        level's first layer one gather + sine kernel, every other sine layer one matmul + sine kernel;
        differentiable. Without autograd, a level whose widths fit ``fused_siren.CHAIN_MAX_WIDTH`` (the
        512² level) runs as one kernel ending in the head (fused_siren.sine_chain). Needs a device where
        ``fused_siren.triton_available``; fp16 runs fp16 in and out."""
        if len(pixels.levels) != len(self.siren_layers):
            raise ValueError(f"pixel set has {len(pixels.levels)} levels, the body morpher {len(self.siren_layers)}")
        inference = not torch.is_grad_enabled() or not (pose.requires_grad or any(p.requires_grad for p in self.parameters()))
        # inference in fp16: the first layers' terms in fp32 (ω₀ = 30 would amplify their fp16 rounding)
        terms = torch.float32 if inference else pose.dtype
        x = low = None   # x: the previous level's features; low: them projected by this level's feature weights
        for i, (layers, level) in enumerate(zip(self.siren_layers, pixels.levels)):
            w = layers[0].linear.weight.flatten(1)
            c_f = w.shape[1] - 2 - pose.shape[1]
            pose_bias = F.linear(pose.to(terms), w[:, c_f + 2:].to(terms), layers[0].linear.bias.to(terms))  # (N, C)
            if x is not None:
                low = F.linear(x.to(terms), w[:, :c_f].to(terms))                              # (N, M_prev, C)
            hidden = [(layer.linear.weight.flatten(1), layer.linear.bias) for layer in layers[1:]]
            if inference and fused_siren.chain_fits(w.shape[0], hidden):
                # the whole level in one kernel, ending in the head or the next level's feature weights
                last = i == len(self.siren_layers) - 1
                nxt = None if last else self.siren_layers[i + 1][0].linear.weight.flatten(1)
                projection = (self.last_linear.weight.flatten(1), self.last_linear.bias) if last else (
                    nxt[:, :hidden[-1][0].shape[0] if hidden else w.shape[0]], None)
                try:
                    chain = self._chain(i, hidden, *projection, w.shape[0], pose.dtype)
                    out = fused_siren.sine_chain(level.position, w[:, c_f:c_f + 2], pose_bias, low, level.taps,
                                                 level.tap_weights, chain, len(hidden), out_dtype=pose.dtype)
                except Exception as e:   # noqa: BLE001 - e.g. out of on-chip memory on this GPU: layer by layer
                    fused_siren.disable_chains(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                else:
                    if last:
                        return out
                    x, low = None, out
                    continue
            x = fused_siren.sine_first_layer(level.position, w[:, c_f:c_f + 2], pose_bias, low,
                                             level.taps, level.tap_weights, out_dtype=pose.dtype)
            for weight, bias in hidden:
                x = fused_siren.sine_linear(x, weight, bias)
        return linear_nhwc(x, self.last_linear)

    def _chain(self, level: int, hidden, projection, projection_bias, first_width: int, dtype) -> "fused_siren.SineChain":
        """fused_siren.make_chain for a level, cached until a parameter changes (version counters)."""
        tensors = [t for pair in hidden for t in pair] + [projection] + ([projection_bias] if projection_bias is not None else [])
        key = (level, dtype, projection.device, tuple((t.data_ptr(), t._version) for t in tensors))
        cache = self.__dict__.setdefault("_chains", {})
        if cache.get(level, (None,))[0] != key:
            cache[level] = (key, fused_siren.make_chain(hidden, projection, projection_bias, first_width, dtype))
        return cache[level][1]

    def fused_features(self, pose: torch.Tensor) -> torch.Tensor:
        """``features`` (whole canvas, (N, 7, S, S)) through the fused kernels: the bilinear upsampling
        becomes the same 4-tap gather as in ``fused_features_at`` over every pixel."""
        from kyara.student.pixels import PixelSet

        key = ("full", pose.device)
        if getattr(self, "_full_pixels", (None, None))[0] != key:
            self._full_pixels = (key, PixelSet.full(self.levels[-1][0], len(self.levels)).to(pose.device))
        size = self.levels[-1][0]
        values = self.fused_features_at(pose, self._full_pixels[1])                          # (N, S·S, 7)
        return values.view(pose.shape[0], size, size, -1).permute(0, 3, 1, 2)

    def forward(self, image: torch.Tensor, pose: torch.Tensor) -> BodyMorpherOutput:
        return self.compose(image, self.features(pose))

    @staticmethod
    def compose(image: torch.Tensor, out: torch.Tensor) -> BodyMorpherOutput:
        """Warp image (N, 4, 512, 512) by the head outputs out (N, 7, 512, 512) = [flow, alpha, colour]
        and blend in the colour: the body morpher's last step, shared with the CPU evaluator."""
        flow, alpha, color = out[:, 0:2], out[:, 2:3], out[:, 3:7]
        warped = apply_flow(image, flow)
        blended = (1 - alpha) * warped + alpha * color
        return BodyMorpherOutput(blended, alpha, color, warped, flow)

    @staticmethod
    def compose_at(image: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> BodyMorpherOutput:
        """``compose`` at M pixels only (training on a pixel subset): image (N, 4, 512, 512), values (N, M, 7)
        the head outputs at those pixels (features_at), index (M,) their flat indices → a BodyMorpherOutput
        whose fields are (N, C, M): compose's output at those pixels."""
        out = values.transpose(1, 2)                                          # (N, 7, M)
        flow, alpha, color = out[:, 0:2], out[:, 2:3], out[:, 3:7]
        warped = apply_flow_at(image, flow, index)
        blended = (1 - alpha) * warped + alpha * color
        return BodyMorpherOutput(blended, alpha, color, warped, flow)
