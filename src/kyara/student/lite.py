"""The CPU-lite student (issue 15): the same student, evaluated on fewer pixels. No retraining.

``LiteStudent`` wraps a trained ``Student`` (sharing its weights) and keeps its render API
(``face_rgba``, ``body_features``, ``compose``, ``pose``), so every caller (``Character.render``,
kyara.produce.frames, the live engine) can use either. What it skips, and why that is safe:

- Body: the multi-resolution body SIREN's raw head outputs (flow, alpha, colour) are smooth almost
  everywhere, so they are evaluated on coarse grids (``LiteConfig``: 8/24/G instead of 128/256/512;
  the same continuous network sampled more sparsely), only at the coarse pixels the student's region
  needs, then bilinearly upsampled to the region's 512 pixels. G is chosen per student when its plan
  is made (``choose_body_grid``: the smallest of 128/160/192/256 that keeps the lite path within
  1.25 dB of the full student against the teacher; a sharper student needs a finer grid). The
  original image is still warped at full resolution: only flow, alpha and the generated colour are
  coarse (differences sit on silhouette edges).
- Face: most of the 128×128 face box (hair, skin, outline) barely changes with the face pose. A
  per-character mask of "movable" pixels is found once by sampling poses with the full face morpher
  (99th percentile of each pixel's deviation from the median face, in 8-bit premultiplied sRGB,
  above ``face_threshold``, dilated); only those pixels are evaluated per frame, the rest is the
  median face (a constant). The plan (these pixels and the body grid) can be stored in the .kyara
  file (kyara.character; written by ``kyara distill`` and ``kyara distill --lite-from``), so loading
  skips the analysis.
- Per frame (``pose_rgba_u8``): networks bound to their fixed pixels (``BoundSiren``: the first
  layer's position term precomputed), the face not evaluated again while its 39 parameters do not
  change, two lanes of single-threaded torch ops (body + part of the face | rest of the face, then
  half the compositing each), and 8-bit conversion by one lookup into a packed-RGBA table on the region
  only (``LiteCompositor``) instead of the float sRGB curve on the whole canvas.

Only the CPU float32 no-autograd backend is replaced; on a GPU, in float16 or under autograd a
LiteStudent renders exactly as its Student (``reference_pose`` computes the lite frames there, for
quality checks). ``use_student`` applies the ``--student lite|full|auto`` choice of the CLI to a
loaded Character.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from kyara.errors import KyaraError
from kyara.pose import FACE_ALL
from kyara.student import Student
from kyara.student.pixels import PixelLevel, PixelSet, dilate

STUDENT_MODES = ("auto", "lite", "full")


@dataclass(frozen=True)
class LiteConfig:
    """body_grid: side of the grid the body network's finest level is evaluated on; None (the default):
    the grid stored in the student's lite plan (chosen per student by choose_body_grid when the plan was
    made), else DEFAULT_BODY_GRID. body_low: the grids of its coarser levels (None: body_grid/4, /2, the
    network's own ×2 chain; body_grid 512 with None reproduces the full student). 8/24/128: body network
    work ~230 MMAC a frame instead of 493 at 32/64/128 (~8 GMAC for the full student) for the same error
    (44.3 vs 44.6 dB from the full student's body on the sample; the last upsampling is what costs:
    8/24/96 gave 41.4 dB; docs/benchmarks.md). face_threshold: a face pixel is evaluated
    per frame when the face_quantile of its deviation from the median face over face_poses sampled
    poses exceeds this many 8-bit levels (premultiplied sRGB, any channel); the mask is then grown by
    face_dilate_px. seed: the sampled poses (kyara.pose_sampler, the distillation distribution).
    body_grids, max_gap_db, grid_poses: choose_body_grid's candidates (ascending), the most dB the lite
    path may lose against the teacher, and how many poses (seed + 1) measure it."""
    body_grid: int | None = None
    body_low: tuple[int, ...] | None = (8, 24)
    face_threshold: float = 64.0   # 32 marked 35 % of the sample's face box, 64 22 %: both as close to the teacher
    face_quantile: float = 0.99
    face_dilate_px: int = 1
    face_poses: int = 48
    seed: int = 15
    body_grids: tuple[int, ...] = (128, 160, 192, 256)
    # Issue 15 bounds the lite path's loss at 1.5 dB; 0.25 dB of margin is ~5× the estimate's error
    # (16 poses against 100: within 0.05 dB on the sample, docs/benchmarks.md "Issue 16, session 45").
    max_gap_db: float = 1.25
    grid_poses: int = 16


DEFAULT_BODY_GRID = 128   # a plan made without a measure of the full student's error (lazily, at load)


# -- coarse pixel sets ------------------------------------------------------------------------------
def _axis_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resampling (align_corners=False, as F.interpolate) of an axis of in_size samples to
    out_size: (lo, hi) source indices and (w_lo, w_hi) weights per output index (any ratio)."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    w_hi = np.where(hi == lo, 0.0, src - lo).astype(np.float32)
    return lo, hi, (1.0 - w_hi).astype(np.float32), w_hi


def bilinear_taps(flat: np.ndarray, out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels flat (M,) (row · out_size + col) of an out_size² grid → (M, 4) flat indices into an
    in_size² grid and (M, 4) float32 weights of bilinear resampling (align_corners=False)."""
    rows, cols = np.divmod(np.asarray(flat, dtype=np.int64), out_size)
    lo, hi, w_lo, w_hi = _axis_taps(out_size, in_size)
    taps, weights = [], []
    for r, wr in ((lo[rows], w_lo[rows]), (hi[rows], w_hi[rows])):
        for c, wc in ((lo[cols], w_lo[cols]), (hi[cols], w_hi[cols])):
            taps.append(r * in_size + c)
            weights.append(wr * wc)
    return np.stack(taps, axis=1), np.stack(weights, axis=1).astype(np.float32)


def _centres(flat: np.ndarray, size: int) -> torch.Tensor:
    rows, cols = np.divmod(flat, size)
    centre = lambda k: ((k * 2 + 1) / size - 1).astype(np.float32)   # noqa: E731 (as position_grid)
    return torch.from_numpy(np.stack([centre(cols), centre(rows)], axis=1))


def _rows(flat_of_set: np.ndarray, size: int, taps: np.ndarray) -> torch.Tensor:
    """Flat grid indices taps → rows of the ascending pixel list flat_of_set."""
    row_of = np.full(size * size, -1, dtype=np.int64)
    row_of[flat_of_set] = np.arange(len(flat_of_set))
    rows = row_of[taps]
    assert rows.min() >= 0, "coarse pixel set misses a tap"
    return torch.from_numpy(np.ascontiguousarray(rows))


@dataclass(frozen=True)
class CoarseBody:
    """Where the lite body network runs for a set of output pixels. pixels: a PixelSet over grids
    sizes (coarse to fine; each level holds exactly the pixels its successor's bilinear taps read);
    taps (M, 4) rows of pixels.output and weights (M, 4) resample its outputs to the M output pixels."""
    pixels: PixelSet
    taps: torch.Tensor
    weights: torch.Tensor


def coarse_body(output: PixelLevel, sizes: tuple[int, ...]) -> CoarseBody:
    """The coarse pixel sets (one per size) that bilinear upsampling to output's pixels needs."""
    chain = [np.asarray(output.index.cpu().numpy(), dtype=np.int64)]
    size_chain = [output.size]
    for size in reversed(sizes):     # walk down: each grid holds the taps of the one above it
        taps, _ = bilinear_taps(chain[0], size_chain[0], size)
        chain.insert(0, np.unique(taps))
        size_chain.insert(0, size)
    levels: list[PixelLevel] = []
    for i, size in enumerate(sizes):
        flat = chain[i]
        taps = weights = None
        if i > 0:
            t, w = bilinear_taps(flat, size, sizes[i - 1])
            taps, weights = _rows(chain[i - 1], sizes[i - 1], t), torch.from_numpy(w)
        levels.append(PixelLevel(size, torch.from_numpy(flat), _centres(flat, size), taps, weights))
    t, w = bilinear_taps(chain[-1], output.size, sizes[-1])
    return CoarseBody(PixelSet(tuple(levels)), _rows(chain[-2], sizes[-1], t), torch.from_numpy(w))


# -- the movable face pixels -----------------------------------------------------------------------
FACE_FIELDS = ("face_threshold", "face_quantile", "face_dilate_px", "face_poses", "seed")   # what a FacePlan depends on


@dataclass(frozen=True)
class FacePlan:
    """The lite plan of one student. pixels: the movable face pixels (a one-level PixelSet on the 128
    face grid); constant: (4, 128, 128) float32 model-space face used everywhere else (the median over
    the sampled poses); seconds: how long finding them took (0 when read from a file); config: the
    LiteConfig it was made with; weights: face_weights_sha256 of the face morpher it was made from;
    body_grid: the body grid chosen for this student (choose_body_grid), None when none was measured."""
    pixels: PixelSet
    constant: torch.Tensor
    seconds: float
    config: LiteConfig = LiteConfig()
    weights: str = ""
    body_grid: int | None = None

    @property
    def share(self) -> float:
        return self.pixels.fraction

    @property
    def mask(self) -> torch.Tensor:
        """(128, 128) bool: the movable pixels."""
        size = self.constant.shape[-1]
        mask = torch.zeros(size * size, dtype=torch.bool)
        mask[self.pixels.output.index] = True
        return mask.view(size, size)

    def fits(self, student: Student, config: LiteConfig) -> bool:
        """True when this plan was made for student's face weights with config's face settings."""
        return (all(getattr(self.config, f) == getattr(config, f) for f in FACE_FIELDS)
                and self.weights == face_weights_sha256(student))


def face_weights_sha256(student: Student) -> str:
    """sha256 (hex) of the face morpher's float32 weights in state-dict order: which face a stored plan fits."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in student.face_morpher.state_dict().items():
        digest.update(name.encode() + b"\0" + tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def movable_face(student: Student, config: LiteConfig = LiteConfig()) -> FacePlan:
    """Sample config.face_poses poses with the full face morpher → FacePlan (see LiteConfig)."""
    from kyara.image import display_space
    from kyara.pose import FACE_ALL
    from kyara.pose_sampler import sample_poses

    start = time.perf_counter()
    poses = sample_poses(config.face_poses, torch.Generator().manual_seed(config.seed))[:, FACE_ALL]
    with torch.inference_mode():
        faces = torch.cat([Student.face_rgba(student, p.to(student.device, student.dtype)).float().cpu()
                           for p in poses.split(8)])                                  # (P, 4, S, S)
        display = display_space(faces) * 255.0                                          # 8-bit premultiplied sRGB
        deviation = (display - display.median(0).values).abs().amax(1)              # (P, S, S)
        spread = torch.quantile(deviation.flatten(1).t(), config.face_quantile, dim=1).view(deviation.shape[1:])
        mask = dilate(spread > config.face_threshold, config.face_dilate_px)
        if not bool(mask.any()):
            mask[0, 0] = True   # a face that never moves: one evaluated pixel keeps the PixelSet valid
        constant = faces.median(0).values.contiguous()
    return FacePlan(PixelSet.from_mask(mask.numpy(), levels=1), constant, time.perf_counter() - start, config,
                    face_weights_sha256(student))


# -- the face plan in a .kyara file (kyara.character reads and writes these) ------------------------------
FACE_MASK_KEY = "lite_face_mask"           # tensor: np.packbits of the (128, 128) bool movable mask, row-major
FACE_CONSTANT_KEY = "lite_face_constant"   # tensor: (4, 128, 128) float32 model-space constant face
PLAN_META_KEY = "lite"                     # metadata: JSON {LiteConfig face fields, "face_weights_sha256", "body_grid"?}


def plan_to_file(plan: FacePlan) -> tuple[dict[str, torch.Tensor], str]:
    """A FacePlan → (tensors, metadata JSON string) for a .kyara file."""
    import json

    packed = torch.from_numpy(np.packbits(plan.mask.numpy().reshape(-1)))
    meta = {**{f: getattr(plan.config, f) for f in FACE_FIELDS}, "face_weights_sha256": plan.weights}
    if plan.body_grid is not None:
        meta["body_grid"] = plan.body_grid
    return {FACE_MASK_KEY: packed, FACE_CONSTANT_KEY: plan.constant.detach().float().cpu().contiguous()}, json.dumps(meta)


def stored_plan(student) -> FacePlan | None:
    """The face plan to store with student in a .kyara file: a LiteStudent's own (once computed) or the
    one loaded with the student (``lite_face_plan``), when it fits the student's face weights."""
    plan = getattr(student, "_face_plan", None) or getattr(student, "lite_face_plan", None)
    return plan if plan is not None and plan.weights == face_weights_sha256(student) else None


def plan_from_file(tensors: dict[str, torch.Tensor], meta: str | None, source: str) -> FacePlan | None:
    """The stored FacePlan of a .kyara file (tensors and the metadata string), or None if it carries
    none. Raises ValueError naming source and the entry when one is malformed."""
    import json

    if FACE_MASK_KEY not in tensors and FACE_CONSTANT_KEY not in tensors:
        return None
    if meta is None or FACE_MASK_KEY not in tensors or FACE_CONSTANT_KEY not in tensors:
        raise ValueError(f"{source}: a lite face plan needs {FACE_MASK_KEY}, {FACE_CONSTANT_KEY} and metadata "
                         f"{PLAN_META_KEY!r}; this file has only part of it")
    size = 128
    packed, constant = tensors[FACE_MASK_KEY], tensors[FACE_CONSTANT_KEY]
    if packed.dtype != torch.uint8 or packed.numel() != size * size // 8:
        raise ValueError(f"{source}: {FACE_MASK_KEY} must be {size * size // 8} uint8 bytes, got "
                         f"{packed.numel()} {packed.dtype}")
    if constant.dtype != torch.float32 or tuple(constant.shape) != (4, size, size):
        raise ValueError(f"{source}: {FACE_CONSTANT_KEY} must be float32 (4, {size}, {size}), got "
                         f"{constant.dtype} {tuple(constant.shape)}")
    try:
        fields = json.loads(meta)
        weights = fields.pop("face_weights_sha256")
        body_grid = fields.pop("body_grid", None)   # files before the grid was chosen per student have none
        if body_grid is not None and not (isinstance(body_grid, int) and _grid_ok(body_grid)):
            raise ValueError(f"body_grid {body_grid!r} is not a multiple of 4 in [32, 512]")
        if set(fields) != set(FACE_FIELDS):
            raise KeyError(f"fields {sorted(fields)}, expected {sorted(FACE_FIELDS)}")
        config = LiteConfig(**fields)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{source}: metadata {PLAN_META_KEY!r} is not a lite plan description ({e})") from None
    mask = np.unpackbits(packed.numpy()).reshape(size, size).astype(bool)
    if not mask.any():
        raise ValueError(f"{source}: {FACE_MASK_KEY} selects no pixel")
    return FacePlan(PixelSet.from_mask(mask, levels=1), constant.contiguous(), 0.0, config, str(weights), body_grid)


# -- per-frame evaluation: networks bound to fixed pixel sets, and the 8-bit compositor ---------------
CHUNK_ROWS = 1024   # pixels per chunk: a chunk's widest activation (1024 × 360 floats) stays in L2


@dataclass(frozen=True)
class _BoundLevel:
    """One level of a PreparedSiren at fixed pixels. fixed: (M, C) the first layer's pose-independent
    part (position term + bias, ω₀ folded); pose: (P, C); taps/weights: (M, 4) reads of the previous
    level's projected outputs (None at the first level); hidden: the other sine layers; project: the
    next level's feature weights or the head, project_bias: the head's bias (None between levels)."""
    fixed: torch.Tensor
    pose: torch.Tensor
    taps: torch.Tensor | None
    weights: torch.Tensor | None
    hidden: tuple
    project: torch.Tensor
    project_bias: torch.Tensor | None


class BoundSiren:
    """A PreparedSiren (kyara.student.inference) bound to one PixelSet, for one pose at a time on one
    thread: the first layer's position term is precomputed (it does not depend on the pose), every
    layer writes into a reused chunk buffer (``addmm(out=)``, sine in place) instead of allocating.
    Same mathematics as kyara.student.inference.evaluate (equal to float32 rounding)."""

    def __init__(self, net, pixels: PixelSet):
        if len(pixels.levels) != len(net.levels):
            raise ValueError(f"pixel set has {len(pixels.levels)} levels, the network {len(net.levels)}")
        self.pose_dim = net.pose_dim
        self.size = len(pixels.output)
        levels = []
        for i, (level, pix) in enumerate(zip(net.levels, pixels.levels)):
            last = i == len(net.levels) - 1
            levels.append(_BoundLevel(
                fixed=torch.addmm(level.bias, pix.position.float(), level.position),
                pose=level.pose, taps=pix.taps, weights=pix.tap_weights, hidden=level.hidden,
                project=net.head_weight if last else net.levels[i + 1].features,
                project_bias=net.head_bias if last else None))
        self.levels = tuple(levels)

    def __call__(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (P,) → (M, C_out) head outputs at the pixel set's output pixels (index order)."""
        pose = pose.detach().float().reshape(1, -1)
        if pose.shape[1] != self.pose_dim:
            raise ValueError(f"pose must have {self.pose_dim} values, got {pose.shape[1]}")
        low = None
        for level in self.levels:
            m = level.fixed.shape[0]
            out = torch.empty(m, level.project.shape[1])
            pose_term = torch.mm(pose, level.pose)                                   # (1, C)
            rows = min(m, CHUNK_ROWS)
            buffers = [torch.empty(rows, level.fixed.shape[1])] + [torch.empty(rows, b.numel()) for _, b in level.hidden]
            for a in range(0, m, rows):
                b = min(a + rows, m)
                z = buffers[0][: b - a]
                torch.add(level.fixed[a:b], pose_term, out=z)
                if low is not None:
                    # W·upsample(f) = upsample(W·f): a 4-tap weighted gather of the projected outputs.
                    z.add_(F.embedding_bag(level.taps[a:b], low, per_sample_weights=level.weights[a:b], mode="sum"))
                z.sin_()
                for (weight, bias), buffer in zip(level.hidden, buffers[1:]):
                    nxt = buffer[: b - a]
                    torch.addmm(bias, z, weight, out=nxt)
                    z = nxt.sin_()
                if level.project_bias is None:
                    torch.mm(z, level.project, out=out[a:b])
                else:
                    torch.addmm(level.project_bias, z, level.project, out=out[a:b])
            low = out
        return low


def _packed_tables() -> tuple[torch.Tensor, int]:
    """A lookup table to RGBA packed in one little-endian int32 per pixel (byte 0 red … byte 3 alpha):
    (4 · (SRGB_LUT_CELLS + 1),) int32, row c · (cells + 1) + i = the 8-bit value of channel c at
    model-space value -1 + 2i/cells (kyara.image.tensor_to_rgba_u8's sRGB curve for colour, its
    rint(clip((a + 1) / 2, 0, 1) · 255) for alpha) shifted by 8·c. The fields never overlap, so the
    sum of a pixel's four entries is the pixel. Also the first cell whose alpha is not 0."""
    from kyara.student.compose import SRGB_LUT_CELLS, srgb_lut

    srgb = srgb_lut().to(torch.int64)
    values = torch.linspace(-1.0, 1.0, SRGB_LUT_CELLS + 1, dtype=torch.float64).float()
    alpha = torch.from_numpy(np.rint(np.clip((values.numpy() + 1.0) / 2.0, 0.0, 1.0) * 255.0)).to(torch.int64)
    table = torch.cat([srgb, srgb << 8, srgb << 16, alpha << 24])
    table = (table - ((table >> 31) << 32)).to(torch.int32)   # alpha ≥ 128 sets the sign bit: two's complement
    return table, int(torch.nonzero(alpha > 0)[0])


class LiteCompositor:
    """The lite frame's last step on a character's region pixels, in independent spans (one per
    lane): upsample the coarse body outputs, warp the face-edited image, blend, 8-bit sRGB by lookup
    tables, written as packed int32 pixels into a uint8 RGBA frame whose other pixels are the image.

    image: (4, 512, 512) model space; region: the output PixelLevel (512 grid); coarse: its
    CoarseBody; face: the FacePlan (its constant face is pasted once; only movable pixels change).
    """

    def __init__(self, image: torch.Tensor, region: PixelLevel, coarse: CoarseBody, face: FacePlan, spans: int = 2):
        from kyara.geometry import STUDENT_FACE_BOX
        from kyara.image import tensor_to_rgba_u8
        from kyara.student.compose import SRGB_LUT_CELLS

        size = region.size
        self.edited = image.detach().float().cpu().clone().unsqueeze(0)                # (1, 4, S, S)
        STUDENT_FACE_BOX.crop(self.edited)[0].copy_(face.constant)
        rows, cols = np.divmod(face.pixels.output.index.numpy(), face.constant.shape[-1])
        self.face_index = torch.from_numpy((rows + STUDENT_FACE_BOX.top) * size + cols + STUDENT_FACE_BOX.left)
        still = tensor_to_rgba_u8(image.detach().float().cpu())
        still[still[..., 3] == 0] = 0
        self.template = torch.from_numpy(np.ascontiguousarray(still)).view(torch.int32).view(-1)   # (S·S,) packed
        self.cells = SRGB_LUT_CELLS
        self.table, self.first_visible = _packed_tables()
        self.channel_offset = (torch.arange(4, dtype=torch.int32) * (SRGB_LUT_CELLS + 1)).view(4, 1)
        m = len(region)
        bounds = np.linspace(0, m, spans + 1).round().astype(int)
        self.spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self.index = region.index
        self.grid = region.position
        self.taps, self.weights = coarse.taps, coarse.weights

    def set_face(self, values: torch.Tensor, rows: slice = slice(None)) -> None:
        """values (m, 4): the face network at the movable face pixels `rows` (of the plan's pixel
        list) → into the edited image."""
        self.edited.view(4, -1).index_copy_(1, self.face_index[rows], values.t())

    def fill(self, frame: torch.Tensor, coarse: torch.Tensor, span: int) -> None:
        """Span `span` of the region: coarse (M_coarse, 7) body outputs → packed pixels of frame (S·S,)
        int32 (a view of the uint8 frame)."""
        a, b = self.spans[span]
        features = F.embedding_bag(self.taps[a:b], coarse, per_sample_weights=self.weights[a:b], mode="sum")
        grid = (self.grid[a:b] + features[:, 0:2]).view(1, 1, -1, 2)
        warped = F.grid_sample(self.edited, grid, mode="bilinear", padding_mode="border",
                               align_corners=False).view(4, -1)                    # (4, m)
        blended = torch.lerp(warped, features[:, 3:7].t(), features[:, 2])
        # Nearest table cell (x + 1) · cells / 2, rounded half up by truncating after + 0.5.
        index = blended.add_(1.0).mul_(self.cells / 2).clamp_(0, self.cells).add_(0.5).int()       # (4, m)
        visible = index[3] >= self.first_visible          # fully transparent pixels come out (0, 0, 0, 0)
        packed = self.table.index_select(0, index.add_(self.channel_offset).view(-1)).view(4, -1).sum(0, dtype=torch.int32)
        frame.index_copy_(0, self.index[a:b], torch.where(visible, packed, 0))

    def new_frame(self) -> torch.Tensor:
        return self.template.clone()


class _FaceSplit:
    """The face network over the movable pixels in two parts, one per lane: part 1 goes with the body
    network, so the parts are sized by multiply-adds for both lanes to carry the same work."""

    def __init__(self, net, plan: FacePlan, body: BoundSiren):
        def macs(bound: BoundSiren) -> int:
            return sum(level.fixed.shape[0] * (sum(w.numel() for w, _ in level.hidden) + level.project.numel())
                       for level in bound.levels)

        pixels = plan.pixels.output
        whole = BoundSiren(net, plan.pixels)
        per_pixel = macs(whole) / max(1, len(pixels))
        # lane 0: face[:cut]; lane 1: body + face[cut:]; equal work when cut·c = body + (M − cut)·c.
        cut = int(round(min(len(pixels), max(0.0, (len(pixels) + macs(body) / per_pixel) / 2))))
        self.rows = (slice(0, cut), slice(cut, len(pixels)))
        self.nets = tuple(BoundSiren(net, PixelSet((PixelLevel(pixels.size, pixels.index[r], pixels.position[r]),)))
                          if r.stop > r.start else None for r in self.rows)

    def index(self, part: int) -> slice:
        return self.rows[part]

    def values(self, part: int, face_pose: torch.Tensor) -> torch.Tensor:
        """(m, 4) the face network at part `part` of the movable pixels."""
        net = self.nets[part]
        return net(face_pose) if net is not None else torch.empty(0, 4)


# -- the lite student ---------------------------------------------------------------------------------
class LiteStudent(Student):
    """A Student's weights (shared, not copied) with the lite CPU evaluation plan (module docstring).

    Same API and shapes as Student. The face plan is read from the .kyara file when it carries one
    for these weights (kyara.character: ``lite_face_*``), else computed on first use
    (``face_plan()``: 48 full face evaluations, ~3 s on an idle 2-core CPU, 8–19 s measured on the
    shared one at load 7–10); the coarse pixel sets and bound networks once per output pixel set.
    """

    name = "student-lite"

    def __init__(self, student: Student, config: LiteConfig = LiteConfig(), face_plan: FacePlan | None = None):
        if not isinstance(student, Student):
            raise TypeError(f"LiteStudent wraps a Student, got {type(student).__name__}")
        super().__init__(student.face_morpher, student.body_morpher, student.region)
        self.config = config
        if config.body_grid is not None:
            self._body_sizes(config.body_grid)   # a ValueError now, not at the first frame
        if face_plan is None:   # a plan stored in the .kyara file (kyara.character), if it fits these weights
            stored = getattr(student, "lite_face_plan", None)
            face_plan = stored if stored is not None and stored.fits(student, config) else None
        self._face_plan: FacePlan | None = face_plan
        self._coarse: dict = {}
        self._bound: dict = {}
        self._reference: tuple | None = None   # (device, the plan's tensors there) for reference_pose
        self._compositors: dict = {}
        self._last_face: tuple | None = None    # (face pose (39,), values (M, 4)) of the last face_rgba pose
        self._frame_lock = threading.Lock()

    def face_plan(self) -> FacePlan:
        if self._face_plan is None:
            self._face_plan = movable_face(self, self.config)
        return self._face_plan

    def _bound_net(self, which: int, nets, pixels: PixelSet) -> BoundSiren:
        """nets[which] (0 face, 1 body) bound to pixels, cached while the prepared nets are current."""
        key = (which, id(nets), pixels.output.index.data_ptr(), len(pixels.output))
        if key not in self._bound:
            if any(k[1] != id(nets) for k in self._bound):
                self._bound = {}    # weights changed: the prepared nets were rebuilt
            self._bound[key] = (nets, pixels, BoundSiren(nets[which], pixels))   # keep both alive: the key holds pointers
        return self._bound[key][2]

    def _face_values(self, nets, face_pose: torch.Tensor) -> torch.Tensor:
        """face_pose (39,) → (M, 4) at the movable pixels; the previous pose's values when the 39 face
        parameters did not change (live idle, held expressions)."""
        last = self._last_face
        if last is not None and torch.equal(last[0], face_pose):
            return last[1]
        values = self._bound_net(0, nets, self.face_plan().pixels)(face_pose)
        self._last_face = (face_pose.clone(), values)
        return values

    def face_rgba(self, face_poses: torch.Tensor) -> torch.Tensor:
        """face_poses (N, 39) → (N, 4, 128, 128): the face morpher on the movable pixels, the constant
        face elsewhere (the full morpher off the CPU float32 backend)."""
        nets = self._evaluator()
        if nets is None:
            return super().face_rgba(face_poses)
        plan = self.face_plan()
        with _single_threaded():
            values = torch.stack([self._face_values(nets, p) for p in face_poses.detach().float().cpu()])  # (N, M, 4)
        n = values.shape[0]
        faces = plan.constant.expand(n, -1, -1, -1).clone()
        faces.view(n, 4, -1).index_copy_(2, plan.pixels.output.index, values.transpose(1, 2))
        return faces

    @property
    def body_grid(self) -> int:
        """The body's finest grid: the config's, else the one chosen for this student in its plan, else
        DEFAULT_BODY_GRID."""
        if self.config.body_grid is not None:
            return self.config.body_grid
        chosen = self.face_plan().body_grid
        return chosen if chosen is not None else DEFAULT_BODY_GRID

    def _body_sizes(self, grid: int) -> tuple[int, ...]:
        """The body levels' grids (coarse to fine) for a finest grid; ValueError when they make no plan."""
        levels = len(self.body_morpher.levels)
        if self.config.body_low is None:
            if grid % 4 or not 4 <= grid <= self.size:
                raise ValueError(f"body_grid must be a multiple of 4 in [4, {self.size}], got {grid}")
            return tuple(grid // 2 ** (levels - 1 - i) for i in range(levels))
        sizes = (*self.config.body_low, grid)
        if len(sizes) != levels or any(not 1 <= a <= b for a, b in zip(sizes, sizes[1:])) or sizes[-1] > self.size:
            raise ValueError(f"body grids {sizes} must be {levels} ascending sizes in [1, {self.size}]")
        return sizes

    def coarse(self, pixels: PixelSet) -> CoarseBody:
        """The CoarseBody for pixels.output at this student's body grid (built once per pixel set)."""
        key = (pixels.output.index.data_ptr(), len(pixels.output))
        if key not in self._coarse:
            sizes = self._body_sizes(self.body_grid)
            self._coarse[key] = (pixels, coarse_body(pixels.output.to("cpu"), sizes))   # keep pixels alive: key is a pointer
        return self._coarse[key][1]

    def body_features(self, poses: torch.Tensor, pixels: PixelSet | None = None) -> torch.Tensor:
        """poses (N, 45) → (N, M, 7) raw head outputs at pixels.output (default body_pixels()), from
        the coarse grid bilinearly upsampled (the full network off the CPU float32 backend)."""
        nets = self._evaluator()
        if nets is None:
            return super().body_features(poses, pixels)
        plan = self.coarse(pixels if pixels is not None else self.body_pixels())
        body = self._bound_net(1, nets, plan.pixels)
        with _single_threaded():
            return torch.stack([F.embedding_bag(plan.taps, body(p), per_sample_weights=plan.weights, mode="sum")
                                for p in poses.detach().float().cpu()])

    def pose_rgba_u8(self, image: torch.Tensor, poses: torch.Tensor) -> np.ndarray:
        """image (4, 512, 512) model space, poses (N, 45) → (N, 512, 512, 4) uint8 sRGB straight RGBA,
        composited and converted on the body pixels only (LiteCompositor; equal to
        tensor_to_rgba_u8(pose(...)) to one 8-bit level, fully transparent pixels (0, 0, 0, 0))."""
        from kyara.geometry import STUDENT_FACE_BOX
        from kyara.image import tensor_to_rgba_u8
        from kyara.pose import FACE_ALL

        poses = self._check_poses(poses)
        nets = self._evaluator_on_cpu()
        if nets is None or (self.region is not None and not bool(STUDENT_FACE_BOX.crop(self.region).all())):
            # Not the CPU backend (GPU, float16: the full student), or the face box reaches outside the
            # region (the compositor keeps the input image there): the float path.
            with torch.inference_mode():
                frames = self.pose(image.to(self.device, self.dtype), poses.to(self.device, self.dtype))
                return np.stack([tensor_to_rgba_u8(x.float().cpu()) for x in frames])
        image = image.detach().float().cpu()
        poses = poses.detach().float().cpu()
        with self._frame_lock, torch.inference_mode():
            pixels = self.body_pixels()
            coarse = self.coarse(pixels)
            plan = self.face_plan()
            body_net = self._bound_net(1, nets, coarse.pixels)
            key = (image.data_ptr(), image._version, pixels.output.index.data_ptr(), id(plan), id(nets))
            if key not in self._compositors:
                self._compositors = {key: (image, LiteCompositor(image, pixels.output, coarse, plan),
                                           _FaceSplit(nets[0], plan, body_net), [None])}
            compositor, faces, shown = self._compositors[key][1:]
            lanes = torch.get_num_threads() > 1
            out = np.empty((len(poses), self.size, self.size, 4), dtype=np.uint8)
            with _single_threaded():
                for i, pose in enumerate(poses):
                    frame = torch.from_numpy(out[i]).view(-1, 4).view(torch.int32).view(-1)
                    face_pose = pose[FACE_ALL]
                    new_face = shown[0] is None or not torch.equal(shown[0], face_pose)
                    # Two lanes of single-threaded torch ops: lane 1 the body network then its share of the
                    # face pixels, this thread the rest of the face (split by multiply-adds so both finish
                    # together), then one half of the compositing each. For work this small this beat
                    # torch's intra-op threads and the evaluator's per-level worker pool several times over
                    # on the shared 2-core CPU (their barriers stall whenever another process holds a core).
                    # An unchanged face (live idle, held expressions) is not evaluated again.
                    def lane_one(pose=pose, face_pose=face_pose, new_face=new_face):
                        body = body_net(pose)
                        if new_face:
                            compositor.set_face(faces.values(1, face_pose), faces.index(1))
                        return body

                    job = _lane().submit(_in_lane, lane_one) if lanes else None
                    if new_face:
                        compositor.set_face(faces.values(0, face_pose), faces.index(0))
                    body = job.result() if job is not None else lane_one()
                    shown[0] = face_pose.clone()
                    frame.copy_(compositor.template)
                    if lanes:
                        fill_job = _lane().submit(_in_lane, compositor.fill, frame, body, 1)
                        compositor.fill(frame, body, 0)
                        fill_job.result()
                    else:
                        compositor.fill(frame, body, 0)
                        compositor.fill(frame, body, 1)
            return out

    @torch.inference_mode()
    def reference_pose(self, image: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """The lite plan's frames with batched torch ops on any device (a GPU for quality checks; the
        CPU path above computes the same to float32 rounding): image (4, 512, 512), poses (N, 45) →
        (N, 4, 512, 512) model space. The full face morpher masked by the face plan, the body network
        on the coarse grid (Student.body_features' backend for the device), bilinear upsampling."""
        device = self.device
        image = image.to(device, self.dtype)
        poses = self._check_poses(poses.to(device, self.dtype))
        plan = self.face_plan()
        pixels = self.body_pixels()
        coarse = self.coarse(pixels)
        if self._reference is None or self._reference[0] != device:
            self._reference = (device, coarse.pixels.to(device), coarse.taps.to(device), coarse.weights.to(device, self.dtype),
                                plan.mask.to(device), plan.constant.to(device, self.dtype))
        coarse_pixels, taps, weights, mask, constant = self._reference[1:]
        faces = torch.where(mask, Student.face_rgba(self, poses[:, FACE_ALL]), constant)
        values = Student.body_features(self, poses, coarse_pixels)                        # (N, M_coarse, 7)
        features = (values[:, taps] * weights[None, :, :, None]).sum(2)                     # (N, M, 7)
        return self.compose(image, faces, features, pixels).image

    def _evaluator_on_cpu(self):
        with torch.inference_mode():
            return self._evaluator()


class _single_threaded:
    """Context: torch ops of this thread single-threaded, the thread count restored afterwards
    (MKL's / some OpenMP runtimes' count is process-wide)."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.before != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.before != 1:
            torch.set_num_threads(self.before)


def _in_lane(fn, *args):
    """Run fn(*args) on the lane thread: single-threaded torch ops, no autograd. The caller has set
    one thread already (``_single_threaded``); where the OpenMP runtime keeps that count per thread the
    lane sets its own. It never sets it otherwise: with libgomp a thread outside any parallel region
    sets the process-wide count, which would leave the caller at one thread after the frame."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    with torch.inference_mode():
        return fn(*args)


_LANE: ThreadPoolExecutor | None = None


def _lane() -> ThreadPoolExecutor:
    """The second lane of pose_rgba_u8 (one worker thread, created on first use)."""
    global _LANE
    if _LANE is None:
        _LANE = ThreadPoolExecutor(1, thread_name_prefix="kyara-lite")
    return _LANE


# -- the body grid per student ----------------------------------------------------------------------
def _grid_ok(grid: int) -> bool:
    return grid % 4 == 0 and 32 <= grid <= 512


def predicted_gap_db(full_psnr_db: float, lite_vs_full_mse: float) -> float:
    """dB the lite path loses against the teacher, from the full student's PSNR against it (display
    space, peak 1) and the lite frames' mean squared difference from the full student's: the two errors
    add, being independent (on the bundled sample this predicted 1.03 / 0.53 / 0.31 dB at body grids
    128 / 160 / 192 where the teacher measured 1.02 / 0.53 / 0.29, 100 poses; docs/benchmarks.md)."""
    return 10.0 * math.log10(1.0 + lite_vs_full_mse / 10.0 ** (-full_psnr_db / 10.0))


def choose_body_grid(student: Student, image: torch.Tensor, full_psnr_db: float, face_plan: FacePlan,
                     config: LiteConfig = LiteConfig()) -> tuple[int, dict[int, float]]:
    """The smallest of config.body_grids whose lite frames lose at most config.max_gap_db against the
    teacher (predicted_gap_db), measured against the full student on config.grid_poses sampled poses
    (seed config.seed + 1); the largest grid when none does. A sharper student needs a finer grid: the
    coarse grid smooths exactly the detail a better flow adds. image: (4, 512, 512) model space;
    full_psnr_db: the full student's mean PSNR against its teacher (a distillation's held-out figure).
    Any device (the lite frames by reference_pose). Returns (grid, {grid: predicted gap dB} for the
    grids measured, in order)."""
    from kyara.image import display_space
    from kyara.pose_sampler import sample_poses

    full_student = Student(student.face_morpher, student.body_morpher, student.region)   # never the lite path
    device, dtype = student.device, student.dtype
    image = image.to(device, dtype)
    batches = sample_poses(config.grid_poses, torch.Generator().manual_seed(config.seed + 1)).to(device, dtype).split(4)
    gaps: dict[int, float] = {}
    with torch.inference_mode():
        full = [display_space(full_student.pose(image, poses).double()) for poses in batches]
        for grid in config.body_grids:
            lite = LiteStudent(student, replace(config, body_grid=grid), face_plan)
            squares = torch.cat([(display_space(lite.reference_pose(image, poses).double()) - target)
                                 .pow(2).mean(dim=(1, 2, 3)) for poses, target in zip(batches, full)])
            gaps[grid] = predicted_gap_db(full_psnr_db, float(squares.mean()))
            if gaps[grid] <= config.max_gap_db:
                return grid, gaps
    return config.body_grids[-1], gaps


def make_plan(student: Student, image: torch.Tensor | None = None, full_psnr_db: float | None = None,
              config: LiteConfig = LiteConfig()) -> FacePlan:
    """A student's lite plan: its movable face (movable_face) and, given its image and its full PSNR
    against the teacher (finite), the body grid chosen for it (choose_body_grid); without them the
    plan has no grid of its own and the lite student uses DEFAULT_BODY_GRID."""
    plan = movable_face(student, config)
    if image is None or full_psnr_db is None or not math.isfinite(full_psnr_db):
        return plan
    if config.body_low is not None and len(config.body_low) + 1 != len(student.body_morpher.levels):
        return plan   # a body of another depth than the config's coarse grids (small test students): no lite body
    start = time.perf_counter()
    grid, _ = choose_body_grid(student, image, full_psnr_db, plan, config)
    return replace(plan, body_grid=grid, seconds=plan.seconds + time.perf_counter() - start)


# auto picks lite only for jobs long enough to repay the one-time face analysis (movable_face).
LITE_MIN_FRAMES = 60


def use_student(character, mode: str, frames: int | None = None):
    """Apply the CLI's ``--student`` choice to a loaded kyara.character.Character, in place; returns it.

    full: unchanged. lite: the student is wrapped in a LiteStudent (an error for a teacher-backed
    character). auto: lite for a student on the CPU when its file carries a fitting face plan or the
    job renders at least LITE_MIN_FRAMES frames (frames None: an open-ended or long job), else unchanged.
    """
    if mode not in STUDENT_MODES:
        raise KyaraError(f"--student must be one of {', '.join(STUDENT_MODES)}, got {mode!r}")
    if mode == "full" or isinstance(character.poser, LiteStudent):
        return character
    if not character.is_student:
        if mode == "lite":
            raise KyaraError("--student lite needs a distilled character (.kyara); this one is posed by its teacher")
        return character
    if mode == "auto" and character.device.type != "cpu":
        return character
    lite = LiteStudent(character.poser)
    if mode == "auto" and lite._face_plan is None and frames is not None and frames < LITE_MIN_FRAMES:
        return character   # too short to repay the face analysis
    character.poser = lite
    return character
