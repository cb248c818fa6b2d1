"""The browser renderer's pass list and packed weights, built from .kyw tensors (Python mirror of
server/static/render/plan.js; the WGSL host kyara.web.wgsl runs it natively).

The student forward (kyara.student.Student.pose, one pose) as shader passes, step for step the
student renderer's three methods (Student.face_rgba, body_features on the region, compose):
  face SIREN on the 128×128 face box: first (position + face pose), 7 dense sine layers, linear head (4);
  body SIREN, levels 128 / 256 / 512: first (position + pose [+ upsampled projection of the level
  below]), 2 dense sine layers, then the next level's feature projection (dense, no bias, no sine)
  or, at 512, the linear head (7 = flow x, flow y, alpha, colour RGBA);
  compose: warp the face-edited image by the flow, blend in the colour, convert to 8-bit sRGB.
Channel groups of 4, weights as 4×4 blocks with ω₀ = 30 folded in (see student.wgsl's header).

The lite plan (``lite=True``: kyara.student.lite.LiteStudent, from the .kyw's "lite" entry) is the
same pass list on less work: the face passes run only on the movable face pixels (mask "face"; the
FACE buffer starts as the constant face, ``Plan.face_init``, and keeps it elsewhere), the body
levels run on the lite grids (header "body_sizes", coarse to fine: LiteConfig's, e.g. 8, 24, 128;
any ratio between levels) on the coarse pixels whose bilinear taps the region reads, and compose
upsamples the G×G head outputs (G the finest lite grid) bilinearly (align_corners=False) at the
region's pixels (compose's ``prev_size`` = G; 0 in the full plan: head outputs at 512).
Masks, in this order: one per body level, then (lite only) the region at 512 and the face mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OMEGA_0 = 30.0
CANVAS = 512
NO_MASK = 0xFFFFFFFF
K = 4                                             # output groups per invocation (student.wgsl)


@dataclass(frozen=True)
class Pass:
    """One dispatch / draw. kind: "first" | "dense" | "compose"; buffers: "A", "B", "FACE", "OUT"
    (src, dst); mask: body level 0..2 or None; pb: index of the first layer (0 face, 1..3 body levels)."""
    kind: str
    size: int
    g_in: int
    g_out: int
    w_off: int = 0
    b_off: int = 0
    act: int = 0
    mask: int | None = None
    pb: int | None = None
    prev_size: int = 0
    src: str = "A"
    dst: str = "B"


@dataclass(frozen=True)
class FirstLayer:
    """The per-frame part of a first layer: pose weights (C, P) and bias (C,) scaled by ω₀, the
    static position columns (C, 2), and where its blocks go in the frame buffer (block index)."""
    pose_weight: np.ndarray
    bias: np.ndarray
    position: np.ndarray
    pose_slice: slice
    pb_off: int


@dataclass(frozen=True)
class Plan:
    passes: tuple[Pass, ...]
    weights: np.ndarray         # (n_blocks, 16) float32
    biases: np.ndarray          # (n_groups, 4) float32
    firsts: tuple[FirstLayer, ...]
    frame_blocks: int
    masks: np.ndarray           # (128² + 256² + 512²,) uint32 level masks, coarse to fine
    mask_offsets: tuple[int, ...]
    image: np.ndarray           # (512, 512, 4) float32 model space
    face_box: dict
    face_init: np.ndarray | None = None   # lite: (S·S, 4) float32 constant face the FACE buffer starts as
    lite: bool = False

    def frame(self, pose: np.ndarray) -> np.ndarray:
        """pose (45,) → (frame_blocks, 16) float32 first-layer blocks [pos x, pos y, pose bias, 0]."""
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        out = np.zeros((self.frame_blocks, 4, 4), np.float64)     # [block, column, row]
        for f in self.firsts:
            c = f.bias.shape[0]
            cols = np.zeros((4 * ((c + 3) // 4), 4))
            cols[:c, 0] = f.position[:, 0]
            cols[:c, 1] = f.position[:, 1]
            cols[:c, 2] = f.pose_weight @ pose[f.pose_slice] + f.bias
            g = cols.shape[0] // 4
            out[f.pb_off:f.pb_off + g] = cols.reshape(g, 4, 4).transpose(0, 2, 1)
        return out.reshape(-1, 16).astype(np.float32)


def groups(c: int) -> int:
    return (c + 3) // 4


def padded_groups(c: int) -> int:
    """Output groups rounded up to the shaders' K = 4 groups per invocation (zero blocks, never stored)."""
    return (groups(c) + K - 1) // K * K


def pack_blocks(w: np.ndarray, scale: float) -> np.ndarray:
    """(C_out, C_in) → (G_out·G_in, 16) blocks, G_out padded to a multiple of K; float j·4 + r of
    block (og, ig) = scale·W[4og + r, 4ig + j]."""
    c_out, c_in = w.shape
    g_out, g_in = padded_groups(c_out), groups(c_in)
    padded = np.zeros((4 * g_out, 4 * g_in), np.float64)
    padded[:c_out, :c_in] = w.astype(np.float64) * scale
    blocks = padded.reshape(g_out, 4, g_in, 4).transpose(0, 2, 3, 1)    # [og, ig, j, r]
    return blocks.reshape(g_out * g_in, 16).astype(np.float32)


def pack_bias(b: np.ndarray | None, c_out: int, scale: float) -> np.ndarray:
    out = np.zeros(4 * padded_groups(c_out), np.float64)
    if b is not None:
        out[:c_out] = b.astype(np.float64) * scale
    return out.reshape(-1, 4).astype(np.float32)


def count_layers(tensors: dict, prefix: str) -> int:
    """How many consecutive ``{prefix}{j}.linear.weight`` tensors there are (j = 0, 1, ...)."""
    n = 0
    while f"{prefix}{n}.linear.weight" in tensors:
        n += 1
    return n


def level_masks(region: np.ndarray | None, levels: int) -> list[np.ndarray]:
    """(512, 512) bool region (None: everything) → masks at 512 / 2^(levels-1) … 512: the pixels each
    body level must evaluate (as kyara.student.pixels.PixelSet.from_mask: the bilinear taps of the
    finer level)."""
    if region is None:
        return [np.ones((CANVAS >> (levels - 1 - l),) * 2, bool) for l in range(levels)]
    masks = [np.asarray(region, bool)]
    for _ in range(levels - 1):
        fine = masks[0]
        s = fine.shape[0]
        src = np.maximum((np.arange(s) + 0.5) * 0.5 - 0.5, 0.0)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, s // 2 - 1)
        rows, cols = np.nonzero(fine)
        coarse = np.zeros((s // 2, s // 2), bool)
        for r in (lo[rows], hi[rows]):
            for c in (lo[cols], hi[cols]):
                coarse[r, c] = True
        masks.insert(0, coarse)
    return masks


def tap_mask(fine: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool pixels → (size, size) bool: the pixels bilinear resampling from size to S
    (align_corners=False, any ratio; as kyara.student.lite.bilinear_taps) reads for them."""
    s = fine.shape[0]
    src = np.maximum((np.arange(s) + 0.5) * (size / s) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    rows, cols = np.nonzero(fine)
    coarse = np.zeros((size, size), bool)
    for r in (lo[rows], hi[rows]):
        for c in (lo[cols], hi[cols]):
            coarse[r, c] = True
    return coarse


def lite_level_masks(region: np.ndarray | None, sizes: list[int]) -> list[np.ndarray]:
    """The lite body levels' masks on grids sizes (coarse to fine): the pixels of the finest that
    upsampling to the region (None: the whole canvas) reads, then at each coarser grid the taps of
    the next finer one (as LiteStudent.coarse)."""
    fine = np.ones((CANVAS, CANVAS), bool) if region is None else np.asarray(region, bool)
    masks = [tap_mask(fine, sizes[-1])]
    for size in reversed(sizes[:-1]):
        masks.insert(0, tap_mask(masks[0], size))
    return masks


def lite_sizes(lite: dict, levels: int) -> list[int]:
    """The lite body levels' grid sides from a .kyw header's "lite" entry: "body_sizes" (coarse to
    fine), or from "body_grid" G alone G / 2^(levels-1) … G. ValueError when they make no plan."""
    sizes = lite.get("body_sizes")
    if sizes is None:
        grid = lite.get("body_grid")
        sizes = [grid >> (levels - 1 - i) for i in range(levels)] if isinstance(grid, int) else None
    if (not isinstance(sizes, list) or len(sizes) != levels or not all(isinstance(x, int) for x in sizes)
            or not all(1 <= a <= b for a, b in zip(sizes, sizes[1:])) or not 1 <= sizes[0] or sizes[-1] > CANVAS):
        raise ValueError(f"lite body sizes {sizes!r} must be {levels} ascending grid sides in [1, {CANVAS}]")
    return sizes


def has_lite(tensors: dict, header: dict) -> bool:
    """True when a parsed .kyw carries the lite student's plan (kyara.web.weights, lite=True)."""
    return isinstance(header.get("lite"), dict) and "lite_face_mask" in tensors and "lite_face_constant" in tensors


def build_plan(tensors: dict[str, np.ndarray], face_box: dict, lite: dict | None = None) -> Plan:
    """Tensors of a parsed .kyw (kyara.web.weights.parse_web_bytes) → Plan. The structure (layers,
    widths, levels at 512 / 2^k) is read from the tensors, so any size of student works. lite: the
    header's "lite" entry ({"body_sizes": [...], "body_grid": G}) for the lite plan (module docstring),
    None for the full one."""
    from kyara.image import rgba_u8_to_tensor

    face_mask = face_init = None
    n_levels = 0
    while f"body_morpher.siren_layers.{n_levels}.0.linear.weight" in tensors:
        n_levels += 1
    sizes = [CANVAS >> (n_levels - 1 - i) for i in range(n_levels)]
    if lite is not None:
        sizes = lite_sizes(lite, n_levels)
        fs = face_box["height"]
        face_mask = np.unpackbits(tensors["lite_face_mask"])[:fs * fs].astype(bool)
        face_init = np.ascontiguousarray(tensors["lite_face_constant"], np.float32).reshape(fs * fs, 4)
    face_mask_index = n_levels + 1 if lite is not None else None

    blocks: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    passes: list[Pass] = []
    firsts: list[FirstLayer] = []
    n_blocks = n_bias = n_frame = 0

    def add_dense(w, b, scale, act, size, mask, src, dst):
        nonlocal n_blocks, n_bias
        c_out, c_in = w.shape
        passes.append(Pass("dense", size, groups(c_in), groups(c_out), n_blocks, n_bias, act, mask, src=src, dst=dst))
        blocks.append(pack_blocks(w, scale))
        biases.append(pack_bias(b, c_out, scale))
        n_blocks += blocks[-1].shape[0]
        n_bias += biases[-1].shape[0]

    def add_first(w, b, c_f, pose_slice, size, mask, prev_size, src, dst):
        nonlocal n_frame
        c = w.shape[0]
        firsts.append(FirstLayer(w[:, c_f + 2:].astype(np.float64) * OMEGA_0, b.astype(np.float64) * OMEGA_0,
                                 w[:, c_f:c_f + 2].astype(np.float64) * OMEGA_0, pose_slice, n_frame))
        passes.append(Pass("first", size, 0, groups(c), act=1, mask=mask, pb=len(firsts) - 1, prev_size=prev_size,
                           src=src, dst=dst))
        n_frame += groups(c)

    # face morpher: A/B ping-pong, head into FACE
    fp = "face_morpher.siren."
    size = face_box["height"]
    w0 = tensors[fp + "sine_layers.0.linear.weight"]
    fm = face_mask_index
    add_first(w0, tensors[fp + "sine_layers.0.linear.bias"], 0, slice(0, w0.shape[1] - 2), size, fm, 0, "B", "A")
    cur = "A"
    for j in range(1, count_layers(tensors, fp + "sine_layers.")):
        nxt = "B" if cur == "A" else "A"
        add_dense(tensors[f"{fp}sine_layers.{j}.linear.weight"], tensors[f"{fp}sine_layers.{j}.linear.bias"], OMEGA_0,
                  1, size, fm, cur, nxt)
        cur = nxt
    add_dense(tensors[fp + "last_linear.weight"], tensors[fp + "last_linear.bias"], 1.0, 0, size, fm, cur, "FACE")

    # body morpher: activations ping-pong between A and B; each pass reads the buffer the one before
    # wrote (a level's first layer reads the projection the level below left)
    bp = "body_morpher."
    prev_size, c_f, cur = 0, 0, "B"
    other = {"A": "B", "B": "A"}
    levels = n_levels
    for level in range(levels):
        res = sizes[level]
        layers = count_layers(tensors, f"{bp}siren_layers.{level}.")
        w0 = tensors[f"{bp}siren_layers.{level}.0.linear.weight"]
        add_first(w0, tensors[f"{bp}siren_layers.{level}.0.linear.bias"], c_f, slice(0, w0.shape[1] - 2 - c_f), res,
                  level, prev_size, cur, other[cur])
        cur = other[cur]
        for j in range(1, layers):
            add_dense(tensors[f"{bp}siren_layers.{level}.{j}.linear.weight"],
                      tensors[f"{bp}siren_layers.{level}.{j}.linear.bias"], OMEGA_0, 1, res, level, cur, other[cur])
            cur = other[cur]
        if level + 1 < levels:
            w_next = tensors[f"{bp}siren_layers.{level + 1}.0.linear.weight"]
            c_f = tensors[f"{bp}siren_layers.{level}.{layers - 1}.linear.weight"].shape[0]
            add_dense(w_next[:, :c_f], None, OMEGA_0, 0, res, level, cur, other[cur])
        else:
            add_dense(tensors[bp + "last_linear.weight"], tensors[bp + "last_linear.bias"], 1.0, 0, res, level, cur,
                      other[cur])
        cur = other[cur]
        prev_size = res
    region = None
    if "body_region" in tensors:
        region = np.unpackbits(tensors["body_region"]).reshape(CANVAS, CANVAS).astype(bool)
    if lite is None:
        passes.append(Pass("compose", CANVAS, 0, 1, mask=levels - 1, src=cur, dst="OUT"))
        masks = level_masks(region, levels)
    else:
        passes.append(Pass("compose", CANVAS, 0, 1, mask=levels, prev_size=sizes[-1], src=cur, dst="OUT"))
        masks = lite_level_masks(region, sizes)
        masks.append(np.ones((CANVAS, CANVAS), bool) if region is None else region)
        masks.append(face_mask.reshape(face_box["height"], -1))
    offsets, o = [], 0
    for m in masks:
        offsets.append(o)
        o += m.size
    image = rgba_u8_to_tensor(np.ascontiguousarray(tensors["character_image"])).numpy().transpose(1, 2, 0)
    return Plan(tuple(passes), np.concatenate(blocks), np.concatenate(biases), tuple(firsts), n_frame,
                np.concatenate([m.reshape(-1) for m in masks]).astype(np.uint32), tuple(offsets),
                np.ascontiguousarray(image, dtype=np.float32), dict(face_box), face_init, lite is not None)
