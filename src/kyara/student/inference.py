"""Fast inference of the student's per-pixel SIRENs, on every pixel or only on chosen ones: a chunked,
threaded CPU evaluator (``evaluate``) and a batched GPU form (``evaluate_batched``, for torch.compile; see
the end of this module), both on ``PreparedSiren`` weights (ω₀ folded in).

Both student networks are per-pixel MLPs (facts §4.2): the face morpher maps (x, y, face pose) to
RGBA for each pixel of the 128×128 face box; the body morpher runs three such MLPs at 128, 256 and
512, each fed the bilinearly upsampled features of the level below. So any subset of output pixels
can be computed exactly on its own: level 2 at those pixels, level 1 at the pixels their bilinear
taps read, level 0 at the pixels those read (``kyara.student.pixels.PixelSet``). Offline rendering uses this to skip
the empty canvas around the character.

The student's CPU backend: ``Student.face_rgba`` / ``Student.body_features`` run it on the CPU in
float32 without autograd (use it through them). Same mathematics as ``FaceMorpher.forward`` /
``BodyMorpher.features``, reorganised for CPU speed (results agree to float32 rounding, ~1e-5):
- ω₀ = 30 is folded into each sine layer's weights and bias once (``prepare_*``), sines run in place;
- pixels go through all layers of a level in cache-sized chunks (a chunk's activations stay in
  L2 instead of streaming ~100 MB tensors through memory once per layer);
- chunks are spread over worker threads that each run single-threaded torch ops: on a small shared
  CPU this beats torch's own intra-op threading, whose per-op barriers stall whenever another
  process holds a core.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kyara.nn.siren import OMEGA_0
from kyara.student.body_morpher import BodyMorpher
from kyara.student.face_morpher import FaceMorpher
from kyara.student.pixels import PixelLevel, PixelSet, upsample_taps

# Rows (pixels) per chunk ≈ this many floats of the widest activation (~1.5 MB: fits in L2).
CHUNK_FLOATS = 393_216


# -- prepared weights ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SineLevel:
    """One level's weights, transposed for x @ W and with ω₀ folded into every sine layer.

    position: (2, C); pose: (P, C); bias: (C,) of the first layer; features: (C_prev, C) the first
    layer's weights on the previous level's features (None at level 0); hidden: ((C_in, C_out)
    weight, (C_out,) bias) of the other sine layers.
    """
    position: torch.Tensor
    pose: torch.Tensor
    bias: torch.Tensor
    features: torch.Tensor | None
    hidden: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def width(self) -> int:
        return int(max([self.bias.numel()] + [b.numel() for _, b in self.hidden]))


@dataclass(frozen=True)
class PreparedSiren:
    """A (multi-resolution) per-pixel SIREN ready for ``evaluate``: levels coarse to fine, then a
    linear head (C_last, C_out) weight and (C_out,) bias (no ω₀, no activation)."""
    levels: tuple[SineLevel, ...]
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    pose_dim: int


def _sine_level(layers, pose_dim: int, features_dim: int) -> SineLevel:
    w0 = layers[0].linear.weight.detach().flatten(1).float() * OMEGA_0
    b0 = layers[0].linear.bias.detach().float() * OMEGA_0
    hidden = tuple(((l.linear.weight.detach().flatten(1).float() * OMEGA_0).t().contiguous(),
                    l.linear.bias.detach().float() * OMEGA_0) for l in layers[1:])
    f = features_dim
    return SineLevel(position=w0[:, f:f + 2].t().contiguous(), pose=w0[:, f + 2:f + 2 + pose_dim].t().contiguous(),
                     bias=b0, features=w0[:, :f].t().contiguous() if f else None, hidden=hidden)


def prepare_body(body: BodyMorpher) -> PreparedSiren:
    """BodyMorpher → PreparedSiren over pose (45,), 3 levels 128/256/512, 7 outputs
    [flow x, flow y, alpha, colour RGBA] (the raw head outputs of ``BodyMorpher.features``)."""
    pose_dim = body.siren_layers[0][0].linear.weight.shape[1] - 2
    levels, prev = [], 0
    for layers in body.siren_layers:
        levels.append(_sine_level(layers, pose_dim, prev))
        prev = layers[-1].linear.weight.shape[0]
    head = body.last_linear
    return PreparedSiren(tuple(levels), head.weight.detach().flatten(1).float().t().contiguous(),
                         head.bias.detach().float(), pose_dim)


def prepare_face(face: FaceMorpher) -> PreparedSiren:
    """FaceMorpher → single-level PreparedSiren over the face pose (39,), 4 outputs (RGBA)."""
    layers = face.siren.sine_layers
    pose_dim = layers[0].linear.weight.shape[1] - 2
    head = face.siren.last_linear
    return PreparedSiren((_sine_level(layers, pose_dim, 0),), head.weight.detach().flatten(1).float().t().contiguous(),
                         head.bias.detach().float(), pose_dim)


# -- evaluation --------------------------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="kyara-siren")
        return _POOL


def _level_chunk(level: SineLevel, pixels: PixelLevel, pose_bias: torch.Tensor, low: torch.Tensor | None,
                 project: torch.Tensor, project_bias: torch.Tensor | None, out: torch.Tensor, a: int, b: int) -> None:
    """Rows a:b of one level: first sine layer (position + pose + upsampled features), the other
    sine layers, then `project` (the next level's feature weights, or the head) into out[a:b]."""
    if low is None:
        z = torch.addmm(pose_bias, pixels.position[a:b], level.position)            # (m, C)
    else:
        # W·upsample(f) = upsample(W·f): `low` already holds W·f at the coarser level's pixels, so
        # upsampling is a 4-tap weighted gather (one fused embedding_bag).
        z = F.embedding_bag(pixels.taps[a:b], low, per_sample_weights=pixels.tap_weights[a:b], mode="sum")
        z.addmm_(pixels.position[a:b], level.position).add_(pose_bias)
    z.sin_()
    for weight, bias in level.hidden:
        z = torch.mm(z, weight).add_(bias).sin_()
    if project_bias is None:
        torch.mm(z, project, out=out[a:b])
    else:
        torch.addmm(project_bias, z, project, out=out[a:b])


def evaluate(net: PreparedSiren, pose: torch.Tensor, pixels: PixelSet, threads: int | None = None) -> torch.Tensor:
    """pose (P,) float32 → (M, C_out) float32 head outputs at pixels.output's M pixels (in its
    index order). pixels must have one level per net level. threads: worker threads (default
    torch.get_num_threads()); each runs single-threaded torch ops on its own chunks."""
    if len(pixels.levels) != len(net.levels):
        raise ValueError(f"pixel set has {len(pixels.levels)} levels, the network {len(net.levels)}")
    pose = pose.detach().float().reshape(-1)
    if pose.numel() != net.pose_dim:
        raise ValueError(f"pose must have {net.pose_dim} values, got {pose.numel()}")
    threads = max(1, threads or torch.get_num_threads())
    low = None
    with torch.inference_mode():
        for i, (level, pix) in enumerate(zip(net.levels, pixels.levels)):
            last = i == len(net.levels) - 1
            project = net.head_weight if last else net.levels[i + 1].features
            project_bias = net.head_bias if last else None
            out = torch.empty(len(pix), project.shape[1])
            pose_bias = torch.addmv(level.bias, level.pose.t(), pose)
            rows = max(256, CHUNK_FLOATS // level.width)
            spans = [(a, min(a + rows, len(pix))) for a in range(0, len(pix), rows)]
            if threads == 1 or len(spans) == 1:
                before = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    for a, b in spans:
                        _level_chunk(level, pix, pose_bias, low, project, project_bias, out, a, b)
                finally:
                    torch.set_num_threads(before)
            else:
                def work(span, level=level, pix=pix, pose_bias=pose_bias, low=low, project=project,
                         project_bias=project_bias, out=out):
                    torch.set_num_threads(1)   # this worker's ops run inline; parallelism comes from the pool
                    with torch.inference_mode():
                        _level_chunk(level, pix, pose_bias, low, project, project_bias, out, *span)
                before = torch.get_num_threads()
                try:
                    for future in [_pool(threads).submit(work, span) for span in spans]:
                        future.result()
                finally:
                    torch.set_num_threads(before)   # MKL's thread count is process-wide: restore it
            low = out
    return low


def evaluate_poses(net: PreparedSiren, poses: torch.Tensor, pixels: PixelSet, threads: int | None = None) -> torch.Tensor:
    """poses (N, P) → (N, M, C_out): ``evaluate`` for each pose (the student's CPU backend: it is what
    ``Student.face_rgba`` / ``Student.body_features`` run on the CPU)."""
    return torch.stack([evaluate(net, p, pixels, threads) for p in poses.reshape(-1, net.pose_dim)])


# -- the batched form (GPU) -------------------------------------------------------------------------
def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad(t: torch.Tensor | None, rows: int, cols: int | None = None) -> torch.Tensor | None:
    """t (R, C) or (C,) zero-padded to (rows, cols) or (rows,)."""
    if t is None:
        return None
    if t.dim() == 1:
        return F.pad(t, (0, rows - t.shape[0]))
    return F.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]))


def pad_widths(net: PreparedSiren, multiple: int) -> PreparedSiren:
    """The same network with every hidden width (and the head's output) rounded up to a multiple of
    `multiple` by zero rows and columns: exact, since a padded channel's pre-activation is 0 and
    sin(0) = 0 feeds nothing. Why: fp16 / TF32 tensor-core GEMMs need widths that are multiples of
    8 / 4 (the body's 90 and 180 are not). The head's extra outputs are zeros (callers slice them off)."""
    if multiple <= 1:
        return net
    up = lambda t: _round_up(t.numel(), multiple)   # noqa: E731 - padded length of a bias
    levels, prev = [], 0   # prev: the padded width of the previous level's last layer (its output's rows)
    for level in net.levels:
        c = up(level.bias)
        hidden, c_in = [], c
        for weight, bias in level.hidden:
            hidden.append((_pad(weight, c_in, up(bias)), _pad(bias, up(bias))))
            c_in = up(bias)
        levels.append(SineLevel(position=_pad(level.position, 2, c), pose=_pad(level.pose, net.pose_dim, c),
                                bias=_pad(level.bias, c), features=_pad(level.features, prev, c), hidden=tuple(hidden)))
        prev = c_in
    out = up(net.head_bias)
    return PreparedSiren(tuple(levels), _pad(net.head_weight, prev, out), _pad(net.head_bias, out), net.pose_dim)


def prepared_to(net: PreparedSiren, device: torch.device | str, dtype: torch.dtype) -> PreparedSiren:
    """The network's matrices in dtype on device; the first layers' position / pose / bias terms stay
    float32 (ω₀ = 30 multiplies their rounding, and they are tiny)."""
    mat = lambda t: None if t is None else t.to(device=device, dtype=dtype)              # noqa: E731
    f32 = lambda t: t.to(device=device, dtype=torch.float32)                              # noqa: E731
    levels = tuple(SineLevel(position=f32(l.position), pose=f32(l.pose), bias=f32(l.bias), features=mat(l.features),
                             hidden=tuple((mat(w), mat(b)) for w, b in l.hidden)) for l in net.levels)
    return PreparedSiren(levels, mat(net.head_weight), mat(net.head_bias), net.pose_dim)


def evaluate_batched(net: PreparedSiren, poses: torch.Tensor, pixels: PixelSet, outputs: int | None = None) -> torch.Tensor:
    """poses (N, P) → (N, M, outputs) head outputs at pixels.output, in the dtype of net's matrices
    (``prepared_to``): the same maths as ``evaluate`` as whole-batch tensor ops (a GPU runs every pixel
    at once) that torch.compile can fuse: each level's first layer (position + pose + 4-tap upsampling
    gather, then sine) is elementwise, each hidden layer one GEMM then a sine. outputs: keep the first
    `outputs` head channels (padding, ``pad_widths``); default all."""
    if len(pixels.levels) != len(net.levels):
        raise ValueError(f"pixel set has {len(pixels.levels)} levels, the network {len(net.levels)}")
    if poses.dim() != 2 or poses.shape[1] != net.pose_dim:
        raise ValueError(f"poses must be (N, {net.pose_dim}), got {tuple(poses.shape)}")
    dtype = net.head_weight.dtype
    n = poses.shape[0]
    low = None
    for i, (level, pix) in enumerate(zip(net.levels, pixels.levels)):
        pose_bias = torch.addmm(level.bias, poses.float(), level.pose)                    # (N, C) float32
        z = (pix.position @ level.position).unsqueeze(0) + pose_bias.unsqueeze(1)          # (N, M, C) float32
        if low is not None:
            z = z + upsample_taps(low.float(), pix)
        x = torch.sin(z).to(dtype)
        for weight, bias in level.hidden:
            x = torch.sin(torch.addmm(bias, x.flatten(0, 1), weight)).view(n, -1, weight.shape[1])
        last = i == len(net.levels) - 1
        if last:
            low = torch.addmm(net.head_bias, x.flatten(0, 1), net.head_weight).view(n, -1, net.head_weight.shape[1])
        else:
            low = (x.flatten(0, 1) @ net.levels[i + 1].features).view(n, -1, net.levels[i + 1].features.shape[1])
    return low if outputs is None else low[..., :outputs]
