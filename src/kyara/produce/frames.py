"""Pose track → frames, rendering each distinct pose once.

Offline jobs produce a (T, 45) pose track, one row per video frame. Rendering dominates their cost,
so the track is first quantized (each parameter snapped to a grid, with hysteresis so a value
hovering at a grid boundary does not flicker between two levels), then every distinct quantized pose
is rendered once, in batches, and its frame is reused for every video frame that shows it. Frames
are kept only until their last use, so memory stays bounded by the poses "in flight".

Students have two more schedules: render_track_split (face and body networks on their own
schedules, body outputs interpolated between keyframes; any device) and render_track_fast (the
same schedule on the CPU with kyara.student.inference, the body network only on the pixels the
character can cover, compositing on worker threads; what `kyara speak` uses on the CPU).
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np
import torch

from kyara.image import tensor_to_rgba_u8
from kyara.pose import HIGH, LOW, NUM_PARAMETERS, PARAMETERS


class Renderable(Protocol):
    """What produce needs from a Character: poses (N, 45) float32 → (N, 4, 512, 512) model space."""
    name: str

    def render(self, poses: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class QuantizeConfig:
    """Grid step per parameter category, in pose units. 0 disables quantization for that category.

    Head angles of 1.0 ≈ 15°, so 0.04 ≈ 0.6° per step: below what a viewer sees at 30 fps,
    yet it merges neighbouring frames of slow motion into one render.
    """
    eyebrow: float = 0.1
    eye: float = 0.25
    iris_morph: float = 0.25
    mouth: float = 0.1
    iris_rotation: float = 0.1
    face_rotation: float = 0.04
    body_rotation: float = 0.04
    breathing: float = 0.125
    hysteresis: float = 0.7     # a new level is taken only once the value moves this many steps away

    def steps(self) -> np.ndarray:
        """(45,) float32 step of each parameter."""
        by_category = {"EYEBROW": self.eyebrow, "EYE": self.eye, "IRIS_MORPH": self.iris_morph,
                       "MOUTH": self.mouth, "IRIS_ROTATION": self.iris_rotation,
                       "FACE_ROTATION": self.face_rotation, "BODY_ROTATION": self.body_rotation,
                       "BREATHING": self.breathing}
        return np.array([by_category[p.category] for p in PARAMETERS], dtype=np.float32)


EXACT = QuantizeConfig(0, 0, 0, 0, 0, 0, 0, 0, 0)


def quantize_track(poses: np.ndarray, config: QuantizeConfig = QuantizeConfig()) -> np.ndarray:
    """poses (T, 45) float32 → (T, 45) float32 snapped to each parameter's grid, with hysteresis.

    The grid includes 0 (the rest value) so "mouth closed" and "eyes open" stay exact.
    """
    poses = np.asarray(poses, dtype=np.float32)
    if poses.ndim != 2 or poses.shape[1] != NUM_PARAMETERS:
        raise ValueError(f"pose track must be (T, {NUM_PARAMETERS}), got {poses.shape}")
    steps = config.steps()
    active = steps > 0
    out = poses.copy()
    if len(poses) == 0 or not active.any():
        return out
    s = steps[active]
    snapped = np.round(poses[:, active] / s) * s
    held = snapped[0].copy()
    reach = max(0.5, config.hysteresis) * s   # distance from the held level that forces a change
    for t in range(len(poses)):
        move = np.abs(poses[t, active] - held) >= reach
        exact_rest = snapped[t] == 0.0          # always return to rest exactly
        change = move | (exact_rest & (held != 0.0))
        held = np.where(change, snapped[t], held)
        out[t, active] = held
    return np.clip(out, LOW, HIGH)


@dataclass
class RenderStats:
    frames: int = 0
    unique_poses: int = 0
    render_calls: int = 0
    render_s: float = 0.0       # time inside character.render + conversion to uint8
    face_poses: int = 0         # split rendering: face-network poses rendered, and their time
    face_s: float = 0.0
    body_poses: int = 0         # split rendering: body-network poses rendered, and their time
    body_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def timed(self, part: str, fn, poses: int = 1):
        """fn() timed into render_s/render_calls and into the '<part>_s'/'<part>_poses' counters."""
        start = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - start
        self.render_s += elapsed
        self.render_calls += 1
        setattr(self, f"{part}_s", getattr(self, f"{part}_s") + elapsed)
        setattr(self, f"{part}_poses", getattr(self, f"{part}_poses") + poses)
        return out


def pose_keys(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 45) → (unique (U, 45), inverse (T,) index of each frame's pose in unique, first-seen order)."""
    _, first, inverse = np.unique(poses, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # np.unique sorts rows; renumber so pose ids follow first appearance in time.
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return poses[first[order]], rank[inverse]


def render_track(character: Renderable, poses: np.ndarray, batch_size: int = 8, stats: RenderStats | None = None,
                 progress=None) -> Iterator[np.ndarray]:
    """Yield one (512, 512, 4) uint8 sRGB RGBA frame per row of `poses` (T, 45), in order.

    Distinct rows are rendered once, batch_size at a time, in order of first appearance; a frame is
    dropped from the cache after the last row that uses it. progress: an optional tqdm-like object
    whose update(n) is called per yielded frame.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else RenderStats()
    unique, pose_id = pose_keys(np.asarray(poses, dtype=np.float32))
    stats.unique_poses += len(unique)
    last_use = np.zeros(len(unique), dtype=np.int64)
    last_use[pose_id] = np.arange(len(pose_id))
    cache: dict[int, np.ndarray] = {}
    next_to_render = 0
    for t, pid in enumerate(pose_id):
        if pid not in cache:
            # Poses are numbered by first appearance, so the missing one is always next_to_render.
            ids = list(range(next_to_render, min(len(unique), next_to_render + batch_size)))
            start = time.perf_counter()
            images = character.render(torch.from_numpy(unique[ids]))
            for i, image in zip(ids, images):
                cache[i] = tensor_to_rgba_u8(image.cpu())
            stats.render_s += time.perf_counter() - start
            stats.render_calls += 1
            next_to_render = ids[-1] + 1
        frame = cache[pid]
        if last_use[pid] == t:
            del cache[pid]
        stats.frames += 1
        if progress is not None:
            progress.update(1)
        yield frame


# -- split rendering for students ------------------------------------------------------------------
def supports_split(character) -> bool:
    """True for characters backed by a kyara Student (face morpher + body morpher with .features)."""
    poser = getattr(character, "poser", None)
    return (poser is not None and hasattr(poser, "face_morpher") and hasattr(getattr(poser, "body_morpher", None),
                                                                              "features")
            and isinstance(getattr(character, "image", None), torch.Tensor))


@dataclass(frozen=True)
class SplitConfig:
    """How the student's two networks are scheduled.

    The face morpher (128×128, cheap) runs once per distinct face pose (pose[0:39]). The body
    morpher (512×512 multi-resolution SIREN, ~10× the face cost) runs only at body keyframes, on
    the *body* pose track (rotation, breathing and the slow expression, without the fast mouth and
    blinks); its raw outputs (flow, alpha, colour) are interpolated linearly in between. Keyframes
    are chosen adaptively (Ramer–Douglas–Peucker on the body pose track): a segment is split until
    interpolating the pose linearly stays within the tolerances below, and no segment is longer
    than body_max_gap_s. body_max_gap_s = 0 runs the body network on every frame's pose (exact).
    """
    body_max_gap_s: float = 2.0
    angle_tolerance: float = 0.04       # head/body angles (1.0 ≈ 15°, so ≈ 0.6°)
    breathing_tolerance: float = 0.3
    expression_tolerance: float = 0.1   # the slow expression the body network also sees
    batch_size: int = 4

    def tolerances(self) -> np.ndarray:
        """(45,) float32 allowed interpolation error per parameter."""
        by_category = {"FACE_ROTATION": self.angle_tolerance, "BODY_ROTATION": self.angle_tolerance,
                       "BREATHING": self.breathing_tolerance}
        return np.array([by_category.get(p.category, self.expression_tolerance) for p in PARAMETERS], np.float32)


def body_keyframes(body_poses: np.ndarray, tolerances: np.ndarray, max_gap: int) -> np.ndarray:
    """(T, 45) body pose track → sorted frame indices (first and last included) such that linear
    interpolation between consecutive keyframes is within `tolerances` (45,) everywhere and no
    gap exceeds max_gap frames (Ramer–Douglas–Peucker, iterative)."""
    T = len(body_poses)
    keys = {0, T - 1}
    stack = [(0, T - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        t = np.arange(a + 1, b)
        w = ((t - a) / (b - a))[:, None]
        interpolated = (1 - w) * body_poses[a] + w * body_poses[b]
        err = (np.abs(body_poses[t] - interpolated) / tolerances).max(axis=1)
        worst = int(err.argmax())
        if err[worst] > 1.0:
            m = int(t[worst])
        elif b - a > max_gap:
            m = (a + b) // 2
        else:
            continue
        keys.add(m)
        stack += [(a, m), (m, b)]
    return np.array(sorted(keys))


def _keyframe_weights(keys: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t lies between keyframes lo[t] and hi[t] (frame indices) with weight w[t] on hi."""
    t = np.arange(n_frames)
    k = np.clip(np.searchsorted(keys, t, side="right") - 1, 0, len(keys) - 1)
    lo = keys[k]
    hi = keys[np.minimum(k + 1, len(keys) - 1)]
    w = np.where(hi > lo, (t - lo) / np.maximum(hi - lo, 1), 0.0)
    return lo, hi, w.astype(np.float32)


def render_track_split(character, poses: np.ndarray, body_poses: np.ndarray, fps: float,
                       config: SplitConfig = SplitConfig(), stats: RenderStats | None = None,
                       progress=None) -> Iterator[np.ndarray]:
    """Like render_track for Student characters, but the face and body networks run on their own
    schedules (see SplitConfig). Yields (512, 512, 4) uint8 sRGB RGBA per row of poses (T, 45).

    body_poses: (T, 45) the pose the body morpher sees for each frame (usually poses without the
    mouth and blink layers), best unquantized: keyframes are picked on it, and only keyframe poses
    are rendered. Exact when body_max_gap_s = 0 and body_poses == poses.
    """
    from kyara.geometry import STUDENT_FACE_BOX
    from kyara.nn.warp import apply_flow
    from kyara.pose import FACE_ALL

    stats = stats if stats is not None else RenderStats()
    poser = character.poser
    device, dtype = poser.device, poser.dtype
    poses = np.asarray(poses, dtype=np.float32)
    body_poses = np.asarray(body_poses, dtype=np.float32)
    T = len(poses)
    if config.body_max_gap_s > 0:
        keys = body_keyframes(body_poses, config.tolerances(), max(1, int(round(config.body_max_gap_s * fps))))
        lo, hi, w = _keyframe_weights(keys, T)
    else:
        lo, hi, w = np.arange(T), np.arange(T), np.zeros(T, np.float32)

    face_unique, face_id = pose_keys(np.ascontiguousarray(poses[:, FACE_ALL]))
    body_unique, body_id = pose_keys(body_poses)
    key_lo, key_hi = body_id[lo], body_id[hi]
    needed_body = np.unique(np.concatenate([key_lo, key_hi]))
    stats.unique_poses += len(face_unique) + len(needed_body)   # what the two networks will render
    edited = character.image.to(device, dtype).unsqueeze(0).clone()   # (1, 4, 512, 512) face pasted per frame

    faces: dict[int, torch.Tensor] = {}
    bodies: dict[int, torch.Tensor] = {}
    face_last = np.zeros(len(face_unique), np.int64)
    face_last[face_id] = np.arange(T)
    body_last = np.full(len(body_unique), -1, np.int64)
    body_last[key_lo] = np.arange(T)
    body_last[key_hi] = np.maximum(body_last[key_hi], np.arange(T))
    frame_cache: dict[tuple[int, int, int, float], np.ndarray] = {}
    next_face = 0
    body_queue = [int(b) for b in needed_body[np.argsort([np.flatnonzero((key_lo == b) | (key_hi == b))[0]
                                                          for b in needed_body])]]

    with torch.inference_mode():
        for t in range(T):
            fid, b0, b1, wt = int(face_id[t]), int(key_lo[t]), int(key_hi[t]), float(w[t])
            if b0 == b1:
                wt = 0.0
            key = (fid, b0, b1, round(wt, 4))
            frame = frame_cache.get(key)
            if frame is None:
                if fid not in faces:
                    ids = list(range(next_face, min(len(face_unique), next_face + config.batch_size)))
                    out = stats.timed("face", lambda: poser.face_morpher(torch.from_numpy(face_unique[ids]).to(device, dtype)),
                                      len(ids))
                    faces.update(zip(ids, out))
                    next_face = ids[-1] + 1
                for b in (b0, b1):
                    if b not in bodies:
                        pos = body_queue.index(b)
                        ids = [i for i in body_queue[pos:pos + config.batch_size] if i not in bodies]
                        out = stats.timed(
                            "body", lambda: poser.body_morpher.features(torch.from_numpy(body_unique[ids]).to(device, dtype)),
                            len(ids))
                        bodies.update(zip(ids, out))
                features = bodies[b0] if wt == 0.0 else torch.lerp(bodies[b0], bodies[b1], wt)
                start = time.perf_counter()
                # Paste the face in place into one reused buffer (the rest of it never changes).
                STUDENT_FACE_BOX.crop(edited).copy_(faces[fid].unsqueeze(0))
                # The same blend as BodyMorpher.forward, (1 − α)·warped + α·colour, on cached or
                # interpolated raw outputs; lerp does it in one pass.
                flow, alpha, color = features[None, 0:2], features[None, 2:3], features[None, 3:7]
                blended = torch.lerp(apply_flow(edited, flow), color, alpha)
                frame = tensor_to_rgba_u8(blended[0].float().cpu())
                stats.render_s += time.perf_counter() - start
                if wt == 0.0:
                    frame_cache[key] = frame
            # Free what no later frame needs (and the finished frames built from it).
            if face_last[fid] == t:
                faces.pop(fid, None)
                frame_cache = {k: v for k, v in frame_cache.items() if k[0] != fid}
            for b in {b0, b1}:
                if body_last[b] == t:
                    bodies.pop(b, None)
                    frame_cache = {k: v for k, v in frame_cache.items() if k[1] != b}
            stats.frames += 1
            if progress is not None:
                progress.update(1)
            yield frame


# -- fast CPU rendering for students ---------------------------------------------------------------
@dataclass(frozen=True)
class FastConfig:
    """render_track_fast settings. split: the body keyframe schedule (as render_track_split).
    region_margin_px: how far beyond the character's visible pixels (at the first keyframe, and in
    the input image) the body network is evaluated; everything further out is transparent.
    region: False evaluates every canvas pixel."""
    split: SplitConfig = SplitConfig()
    region: bool = True
    region_margin_px: int = 16


def character_region(visible: np.ndarray, margin: int) -> np.ndarray:
    """(S, S) bool visible pixels → the same dilated by `margin` pixels (square neighbourhood)."""
    from kyara.student.pixels import dilate

    return dilate(torch.from_numpy(np.asarray(visible, dtype=bool)), margin).numpy()


def render_track_fast(character, poses: np.ndarray, body_poses: np.ndarray, fps: float,
                      config: FastConfig = FastConfig(), stats: RenderStats | None = None, progress=None,
                      background: tuple[int, int, int] | None = None) -> Iterator[np.ndarray]:
    """render_track_split's schedule with kyara.student.inference on the CPU. Yields one uint8 frame
    per row of poses (T, 45): (512, 512, 4) RGBA, or (512, 512, 3) RGB composited over background
    (exactly as kyara.image.composite_over) when one is given.

    - Face morpher: once per distinct pose[0:39] (exact, no quantization), all 128×128 pixels.
    - Body morpher: only at the body keyframes of body_poses (see SplitConfig), and only on the
      pixels the character can cover: the first keyframe is evaluated on the whole canvas, its
      visible pixels plus the input image's, dilated by region_margin_px, form the region
      (kyara.student.inference.PixelSet); pixels outside it are transparent in every frame.
    - Per frame: keyframe outputs interpolated linearly, then warp, blend and 8-bit conversion on
      the region only (kyara.produce.compose.SubsetCompositor).
    On the bundled sample it matches the per-frame full render to 45 dB PSNR over a 30 s talking clip
    (worst frame 39 dB; docs/benchmarks.md).
    """
    from kyara.pose import FACE_ALL
    from kyara.produce.compose import SubsetCompositor
    from kyara.student.inference import PixelSet, evaluate, prepare_body, prepare_face

    stats = stats if stats is not None else RenderStats()
    poser = character.poser
    poses = np.asarray(poses, dtype=np.float32)
    body_poses = np.asarray(body_poses, dtype=np.float32)
    T = len(poses)
    if T == 0:
        return
    split = config.split
    if split.body_max_gap_s > 0:
        keys = body_keyframes(body_poses, split.tolerances(), max(1, int(round(split.body_max_gap_s * fps))))
    else:
        keys = np.arange(T)
    lo, hi, w = _keyframe_weights(keys, T)
    body_net, face_net = prepare_body(poser.body_morpher), prepare_face(poser.face_morpher)
    image = character.image.detach().float().cpu()
    face_pixels = PixelSet.full(image.shape[-1] // 4, levels=1)
    size = image.shape[-1]

    face_unique, face_id = pose_keys(np.ascontiguousarray(poses[:, FACE_ALL]))
    face_last = np.zeros(len(face_unique), np.int64)
    face_last[face_id] = np.arange(T)
    key_last = {int(k): int(t) for t, k in enumerate(lo)}
    key_last.update({int(k): max(key_last.get(int(k), 0), t) for t, k in enumerate(hi)})
    stats.unique_poses += len(face_unique) + len(keys)

    # No inference_mode around the loop: it would leak into the consumer between yields (the
    # network and compositing calls enter it themselves).
    # A region-trained student is the identity (transparent) outside its own region: start from it.
    student_region = getattr(poser, "region", None)
    base = PixelSet.full(size, levels=3) if student_region is None else poser.region_pixels().to("cpu")
    first = stats.timed("body", lambda: evaluate(body_net, torch.from_numpy(body_poses[keys[0]]), base))
    if config.region:
        # Visible at the first keyframe (alpha of the blended output ≳ 0), or in the input image.
        probe = SubsetCompositor(image, base.output, None)
        probe.set_face(evaluate(face_net, torch.from_numpy(poses[keys[0], FACE_ALL]), face_pixels)
                       .t().reshape(4, size // 4, size // 4))
        visible = (probe.frame(first.t().contiguous())[..., 3] > 0) | (image[3].numpy() > -1.0)
        region = character_region(visible, config.region_margin_px)
        if student_region is not None:
            region &= student_region.cpu().numpy()
        pixels = PixelSet.from_mask(region, levels=3)
        row_of = torch.full((size * size,), -1, dtype=torch.int64)
        row_of[base.output.index] = torch.arange(len(base.output))
        first = first[row_of[pixels.output.index]]
    else:
        pixels = base
    # Frames are composited on `lanes` threads (single-threaded torch each: intra-op threading
    # of these small per-frame ops stalls badly when another process holds a core), each lane
    # with its own compositor, frame t on lane t % lanes; results are yielded in order.
    lanes = max(1, min(2, torch.get_num_threads()))
    compositors = [SubsetCompositor(image, pixels.output, background) for _ in range(lanes)]
    executors = [ThreadPoolExecutor(1, thread_name_prefix="kyara-compose") for _ in range(lanes)]
    pending: deque = deque()

    def compose(lane: int, face: torch.Tensor, body0: torch.Tensor, body1: torch.Tensor, weight: float) -> np.ndarray:
        torch.set_num_threads(1)
        with torch.inference_mode():
            compositors[lane].set_face(face)
            # Keyframe outputs [flow, alpha, colour] interpolated linearly (as render_track_split).
            return compositors[lane].frame(body0 if weight == 0.0 else torch.lerp(body0, body1, weight))

    def finished(block: bool) -> Iterator[np.ndarray]:
        while pending and (block or pending[0].done() or len(pending) > 2 * lanes):
            frame = pending.popleft().result()
            stats.frames += 1
            if progress is not None:
                progress.update(1)
            yield frame

    bodies = {int(keys[0]): first.t().contiguous()}
    faces: dict[int, torch.Tensor] = {}
    try:
        for t in range(T):
            fid, b0, b1, wt = int(face_id[t]), int(lo[t]), int(hi[t]), float(w[t])
            for b in (b0, b1):
                if b not in bodies:
                    bodies[b] = stats.timed("body", lambda: evaluate(body_net, torch.from_numpy(body_poses[b]), pixels)
                                      ).t().contiguous()
            if fid not in faces:
                faces[fid] = stats.timed("face", lambda: evaluate(face_net, torch.from_numpy(face_unique[fid]), face_pixels)
                                   ).t().reshape(4, size // 4, size // 4)
            start = time.perf_counter()
            lane = t % lanes
            pending.append(executors[lane].submit(compose, lane, faces[fid], bodies[b0], bodies[b1],
                                                  0.0 if b0 == b1 else wt))
            if face_last[fid] == t:
                del faces[fid]
            for b in {b0, b1}:
                if key_last.get(b, -1) <= t:
                    bodies.pop(b, None)
            stats.render_s += time.perf_counter() - start
            yield from finished(block=False)
        start = time.perf_counter()
        rest = list(finished(block=True))
        stats.render_s += time.perf_counter() - start
        yield from rest
    finally:
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(torch.get_num_threads())   # the lanes set MKL's process-wide count to 1
