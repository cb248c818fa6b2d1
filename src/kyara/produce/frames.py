"""Pose track → frames, rendering each distinct pose once.

Offline jobs produce a (T, 45) pose track, one row per video frame. Rendering dominates their cost,
so the track is first quantized (each parameter snapped to a grid, with hysteresis so a value
hovering at a grid boundary does not flicker between two levels), then every distinct quantized pose
is rendered once, in batches, and its frame is reused for every video frame that shows it. Frames
are kept only until their last use, so memory stays bounded by the poses "in flight".

Students have two more schedules, both through the student renderer (Student.face_rgba,
Student.body_features, compose): render_track_split (face and body networks on their own
schedules, body outputs interpolated between keyframes; any device) and render_track_fast (the
same schedule with the body network only on the pixels the character can cover and 8-bit
compositing on those pixels only; what `kyara speak` uses on the CPU).
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
    """True for characters backed by a kyara Student (face morpher + body morpher with .features) that
    take the image as it is stored. Premultiplied-colour characters (imported THA4 students) go
    through Character.render, the one place that converts their input and output."""
    poser = getattr(character, "poser", None)
    return (poser is not None and not getattr(character, "premultiplied", False) and hasattr(poser, "face_morpher")
            and hasattr(getattr(poser, "body_morpher", None), "features")
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


@dataclass(frozen=True)
class _TrackPlan:
    """A student track's schedule. Face: face_unique (F, 39) distinct face poses, face_id (T,) each
    frame's, face_last (F,) the last frame using each. Body: body_unique (B, 45) distinct keyframe
    body poses, in order of first use; frame t blends body_unique[lo[t]] and [hi[t]] with weight w[t]
    on hi; body_last (B,) the last frame using each."""
    face_unique: np.ndarray
    face_id: np.ndarray
    face_last: np.ndarray
    body_unique: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    w: np.ndarray
    body_last: np.ndarray


def _plan_track(poses: np.ndarray, body_poses: np.ndarray, fps: float, config: SplitConfig,
                stats: RenderStats) -> _TrackPlan:
    """The schedule of (T, 45) poses and body poses; stats count the poses the two networks will render."""
    from kyara.pose import FACE_ALL

    poses, body_poses = np.asarray(poses, dtype=np.float32), np.asarray(body_poses, dtype=np.float32)
    T = len(poses)
    if config.body_max_gap_s > 0:
        keys = body_keyframes(body_poses, config.tolerances(), max(1, int(round(config.body_max_gap_s * fps))))
    else:
        keys = np.arange(T)
    lo, hi, w = _keyframe_weights(keys, T)
    face_unique, face_id = pose_keys(np.ascontiguousarray(poses[:, FACE_ALL]))
    face_last = np.zeros(len(face_unique), np.int64)
    face_last[face_id] = np.arange(T)
    # Keyframes with equal body poses share one render; number them by first use (lo before hi).
    used = np.stack([lo, hi], axis=1).reshape(-1)
    body_unique, body_id = pose_keys(body_poses[used])
    body_id = body_id.reshape(T, 2)
    body_last = np.zeros(len(body_unique), np.int64)
    body_last[body_id[:, 0]] = np.arange(T)
    body_last[body_id[:, 1]] = np.maximum(body_last[body_id[:, 1]], np.arange(T))
    w = np.where(body_id[:, 0] == body_id[:, 1], 0.0, w).astype(np.float32)
    stats.unique_poses += len(face_unique) + len(body_unique)
    return _TrackPlan(face_unique, face_id, face_last, body_unique, body_id[:, 0], body_id[:, 1], w, body_last)


class _CanvasFrames:
    """Frames of a student through Student.compose on the whole canvas (any device): face (4, 128, 128),
    features (M, 7) at the student's body pixels → (512, 512, 4) uint8 RGBA (tensor_to_rgba_u8)."""

    def __init__(self, student, image: torch.Tensor):
        self.student, self.image = student, image.to(student.device, student.dtype)

    @staticmethod
    def prepare(features: torch.Tensor) -> torch.Tensor:
        return features

    def frame(self, face: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return tensor_to_rgba_u8(self.student.compose(self.image, face[None], features[None]).image[0].float().cpu())


def _render_student_track(student, plan: _TrackPlan, compositors: list, pixels, batch_size: int, stats: RenderStats,
                          progress, threads: int, bodies: dict[int, torch.Tensor] | None = None) -> Iterator[np.ndarray]:
    """The split schedule (see SplitConfig) through the student renderer: Student.face_rgba once per
    distinct face pose, Student.body_features (at `pixels`, None: the student's default) once per
    distinct keyframe body pose, batch_size at a time; each frame's keyframe outputs interpolated
    linearly, then compositors[lane].frame(face, features) on one worker thread per compositor
    (body features are stored as compositors[0].prepare lays them out)
    (single-threaded torch each: intra-op threading of these small per-frame ops stalls badly when
    another process holds a core; inline when there is one), frame t on lane t % lanes, yielded in
    order. Finished frames of exact keyframes are reused while their face and body poses live.
    threads: torch's thread count when the track was requested, restored at its end (the lanes set
    it to 1, process-wide on some OpenMP runtimes); bodies: body features already computed, by id."""
    device, dtype = student.device, student.dtype
    T, lanes = len(plan.face_id), len(compositors)
    faces: dict[int, torch.Tensor] = {}
    bodies = dict(bodies or {})
    done: dict[tuple[int, int], np.ndarray] = {}
    executors = [ThreadPoolExecutor(1, thread_name_prefix="kyara-compose") for _ in range(lanes)] if lanes > 1 else []
    pending: deque = deque()

    def compose(lane: int, face: torch.Tensor, body0: torch.Tensor, body1: torch.Tensor, weight: float) -> np.ndarray:
        if executors:
            torch.set_num_threads(1)
        with torch.inference_mode():
            return compositors[lane].frame(face, body0 if weight == 0.0 else torch.lerp(body0, body1, weight))

    def run(part: str, fn, wanted: list[int], store: dict, unique: np.ndarray) -> None:
        """fn over the poses of `wanted` ids, batch_size at a time, into store (timed as part)."""
        for a in range(0, len(wanted), batch_size):
            ids = wanted[a:a + batch_size]
            batch = torch.from_numpy(unique[ids]).to(device, dtype)
            with torch.inference_mode():
                store.update(zip(ids, stats.timed(part, lambda: fn(batch), len(ids))))

    def finished(block: bool) -> Iterator[np.ndarray]:
        while pending and (block or isinstance(pending[0], np.ndarray) or pending[0].done() or len(pending) > 2 * lanes):
            frame = pending.popleft()
            frame = frame if isinstance(frame, np.ndarray) else frame.result()
            stats.frames += 1
            if progress is not None:
                progress.update(1)
            yield frame

    # No inference_mode around the loop: it would leak into the consumer between yields.
    try:
        for t in range(T):
            fid, b0, b1, wt = int(plan.face_id[t]), int(plan.lo[t]), int(plan.hi[t]), float(plan.w[t])
            if fid not in faces:   # face poses are numbered by first use: the next batch starts here
                run("face", student.face_rgba, list(range(fid, min(fid + batch_size, len(plan.face_unique)))),
                    faces, plan.face_unique)
            if b0 not in bodies or b1 not in bodies:
                first = min(b for b in (b0, b1) if b not in bodies)
                run("body", lambda p: compositors[0].prepare(student.body_features(p, pixels)),
                    [b for b in range(first, min(first + batch_size, len(plan.body_unique))) if b not in bodies],
                    bodies, plan.body_unique)
            start = time.perf_counter()
            frame = done.get((fid, b0)) if wt == 0.0 else None
            if frame is None:
                args = (t % lanes, faces[fid], bodies[b0], bodies[b1], wt)
                frame = executors[t % lanes].submit(compose, *args) if executors else compose(*args)
                if wt == 0.0:
                    done[(fid, b0)] = frame
            pending.append(frame)
            # Free what no later frame needs (and the finished frames built from it).
            if plan.face_last[fid] == t:
                del faces[fid]
                done = {k: v for k, v in done.items() if k[0] != fid}
            for b in {b0, b1}:
                if plan.body_last[b] == t:
                    del bodies[b]
                    done = {k: v for k, v in done.items() if k[1] != b}
            stats.render_s += time.perf_counter() - start
            yield from finished(block=False)
        start = time.perf_counter()
        rest = list(finished(block=True))
        stats.render_s += time.perf_counter() - start
        yield from rest
    finally:
        for executor in executors:
            executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def render_track_split(character, poses: np.ndarray, body_poses: np.ndarray, fps: float,
                       config: SplitConfig = SplitConfig(), stats: RenderStats | None = None,
                       progress=None) -> Iterator[np.ndarray]:
    """Like render_track for Student characters, but the face and body networks run on their own
    schedules (see SplitConfig). Yields (512, 512, 4) uint8 sRGB RGBA per row of poses (T, 45).

    body_poses: (T, 45) the pose the body morpher sees for each frame (usually poses without the
    mouth and blink layers), best unquantized: keyframes are picked on it, and only keyframe poses
    are rendered. Any device; the body morpher runs on the student's region (identity elsewhere, as
    Student.pose). Exact when body_max_gap_s = 0 and body_poses == poses.
    """
    stats = stats if stats is not None else RenderStats()
    if len(poses) == 0:
        return iter(())
    plan = _plan_track(poses, body_poses, fps, config, stats)
    student = character.poser
    lanes = max(1, min(2, torch.get_num_threads())) if student.device.type == "cpu" else 1
    compositors = [_CanvasFrames(student, character.image) for _ in range(lanes)]
    return _render_student_track(student, plan, compositors, None, config.batch_size, stats, progress,
                                 torch.get_num_threads())


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
    """render_track_split's schedule on the CPU, with the body network only where the character can be
    seen. Yields one uint8 frame per row of poses (T, 45): (512, 512, 4) RGBA, or (512, 512, 3) RGB
    composited over background (exactly as kyara.image.composite_over) when one is given.

    - Face and body networks: as render_track_split (Student.face_rgba, Student.body_features).
    - Region: the first keyframe is evaluated on the student's body pixels; its visible pixels plus
      the input image's, dilated by region_margin_px (and within the student's region), form the
      pixel set of every other keyframe; further out every frame shows the input image (transparent
      for a trained character).
    - Per frame: warp, blend and 8-bit conversion on those pixels only
      (kyara.student.compose.SubsetCompositor).
    On the bundled sample it matches the per-frame full render to 45 dB PSNR over a 30 s talking clip
    (worst frame 39 dB; docs/benchmarks.md).
    """
    from kyara.student.compose import SubsetCompositor
    from kyara.student.pixels import PixelSet

    stats = stats if stats is not None else RenderStats()
    if len(poses) == 0:
        return iter(())
    plan = _plan_track(poses, body_poses, fps, config.split, stats)
    student = character.poser
    image = character.image.detach().float().cpu()
    base = student.body_pixels()
    pixels = base
    if config.region:
        # Visible at the first keyframe (alpha of the blended output ≳ 0), or in the input image.
        with torch.inference_mode():
            first = stats.timed("body", lambda: student.body_features(torch.from_numpy(plan.body_unique[:1]), base))[0]
            face = student.face_rgba(torch.from_numpy(plan.face_unique[:1]))[0]
        probe = SubsetCompositor(image, base.output, None)
        visible = (probe.frame(face, first)[..., 3] > 0) | (image[3].numpy() > -1.0)
        region = character_region(visible, config.region_margin_px)
        if student.region is not None:
            region &= student.region.cpu().numpy()
        pixels = PixelSet.from_mask(region, levels=len(base.levels))
        # The first keyframe's outputs at the region's pixels (rows of base's pixel list).
        row_of = torch.full((base.output.size ** 2,), -1, dtype=torch.int64)
        row_of[base.output.index] = torch.arange(len(base.output))
        first = {0: SubsetCompositor.prepare(first[row_of[pixels.output.index]])}
    else:
        first = {}
    lanes = max(1, min(2, torch.get_num_threads()))
    compositors = [SubsetCompositor(image, pixels.output, background) for _ in range(lanes)]
    return _render_student_track(student, plan, compositors, pixels, config.split.batch_size, stats, progress,
                                 torch.get_num_threads(), first)
