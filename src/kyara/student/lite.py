"""The CPU-lite student (issue 15): the same student, evaluated on fewer pixels. No retraining.

``LiteStudent`` wraps a trained ``Student`` (sharing its weights) and keeps its render API
(``face_rgba``, ``body_features``, ``compose``, ``pose``), so every caller (``Character.render``,
kyara.produce.frames, the live engine) can use either. What it skips, and why that is safe:

- Body: the multi-resolution body SIREN's raw head outputs (flow, alpha, colour) are smooth almost
  everywhere, so they are evaluated on a coarse grid (``LiteConfig.body_grid``, default 128 instead of
  512; levels at grid/4, grid/2, grid, i.e. the same continuous network sampled more sparsely), only
  at the coarse pixels the student's region needs, then bilinearly upsampled to the region's 512
  pixels. The original image is still warped at full resolution: only flow, alpha and the generated
  colour are coarse (differences sit on silhouette edges).
- Face: most of the 128×128 face box (hair, skin, outline) barely changes with the face pose. A
  per-character mask of "movable" pixels is found once by sampling poses with the full face morpher
  (99th percentile of each pixel's deviation from the median face, in 8-bit premultiplied sRGB,
  above ``face_threshold``, dilated); only those pixels are evaluated per frame, the rest is the
  median face (a constant).
- Output: ``pose_rgba_u8`` converts with lookup tables on the region only
  (kyara.student.compose.SubsetCompositor) instead of the float sRGB curve on the whole canvas.

Both networks run single-threaded here (kyara.student.inference.evaluate with threads=1): the work per
frame is small enough that the evaluator's per-level worker barriers cost more than they save on a
shared 2-core CPU (measured ~3× slower under load); ``pose_rgba_u8`` instead runs the face network
beside the body network, and kyara.produce.frames already composes on its own worker lanes.

Only the CPU float32 no-autograd backend is replaced; on a GPU, in float16 or under autograd a
LiteStudent renders exactly as its Student. ``use_student`` applies the ``--student lite|full|auto``
choice of the CLI to a loaded Character.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kyara.errors import KyaraError
from kyara.student import Student
from kyara.student.pixels import PixelLevel, PixelSet, dilate

STUDENT_MODES = ("auto", "lite", "full")


@dataclass(frozen=True)
class LiteConfig:
    """body_grid: side of the grid the body network's finest level is evaluated on (its levels run at
    body_grid/4, /2, /1; 512 reproduces the full student). face_threshold: a face pixel is evaluated
    per frame when the face_quantile of its deviation from the median face over face_poses sampled
    poses exceeds this many 8-bit levels (premultiplied sRGB, any channel); the mask is then grown by
    face_dilate_px. seed: the sampled poses (kyara.pose_sampler, the distillation distribution)."""
    body_grid: int = 128
    face_threshold: float = 32.0
    face_quantile: float = 0.99
    face_dilate_px: int = 1
    face_poses: int = 48
    seed: int = 15


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
@dataclass(frozen=True)
class FacePlan:
    """pixels: the movable face pixels (a one-level PixelSet on the 128 face grid); constant:
    (4, 128, 128) float32 model-space face used everywhere else (the median over the sampled poses);
    seconds: how long finding them took."""
    pixels: PixelSet
    constant: torch.Tensor
    seconds: float

    @property
    def share(self) -> float:
        return self.pixels.fraction


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
    return FacePlan(PixelSet.from_mask(mask.numpy(), levels=1), constant, time.perf_counter() - start)


# -- the lite student ---------------------------------------------------------------------------------
class LiteStudent(Student):
    """A Student's weights (shared, not copied) with the lite CPU evaluation plan (module docstring).

    Same API and shapes as Student. The face plan is computed on first use (``face_plan()``: 48 full
    face evaluations, ~2 s on an idle 2-core CPU, 8–19 s measured on the shared one at load 7–10), the
    coarse pixel sets once per output pixel set.
    """

    name = "student-lite"

    def __init__(self, student: Student, config: LiteConfig = LiteConfig()):
        if not isinstance(student, Student):
            raise TypeError(f"LiteStudent wraps a Student, got {type(student).__name__}")
        if config.body_grid % 4 or not 4 <= config.body_grid <= student.size:
            raise ValueError(f"body_grid must be a multiple of 4 in [4, {student.size}], got {config.body_grid}")
        super().__init__(student.face_morpher, student.body_morpher, student.region)
        self.config = config
        self._face_plan: FacePlan | None = None
        self._coarse: dict = {}
        self._compositors: dict = {}

    def face_plan(self) -> FacePlan:
        if self._face_plan is None:
            self._face_plan = movable_face(self, self.config)
        return self._face_plan

    def face_rgba(self, face_poses: torch.Tensor) -> torch.Tensor:
        """face_poses (N, 39) → (N, 4, 128, 128): the face morpher on the movable pixels, the constant
        face elsewhere (the full morpher off the CPU float32 backend)."""
        nets = self._evaluator()
        if nets is None:
            return super().face_rgba(face_poses)
        from kyara.student.inference import evaluate_poses

        plan = self.face_plan()
        values = evaluate_poses(nets[0], face_poses, plan.pixels, threads=1)          # (N, M, 4)
        n = values.shape[0]
        faces = plan.constant.expand(n, -1, -1, -1).clone()
        faces.view(n, 4, -1).index_copy_(2, plan.pixels.output.index, values.transpose(1, 2))
        return faces

    def coarse(self, pixels: PixelSet) -> CoarseBody:
        """The CoarseBody for pixels.output at this config's grid (built once per pixel set)."""
        key = (pixels.output.index.data_ptr(), len(pixels.output))
        if key not in self._coarse:
            grid = self.config.body_grid
            sizes = tuple(grid // 2 ** (len(self.body_morpher.levels) - 1 - i) for i in range(len(self.body_morpher.levels)))
            self._coarse[key] = (pixels, coarse_body(pixels.output.to("cpu"), sizes))   # keep pixels alive: key is a pointer
        return self._coarse[key][1]

    def body_features(self, poses: torch.Tensor, pixels: PixelSet | None = None) -> torch.Tensor:
        """poses (N, 45) → (N, M, 7) raw head outputs at pixels.output (default body_pixels()), from
        the coarse grid bilinearly upsampled (the full network off the CPU float32 backend)."""
        nets = self._evaluator()
        if nets is None:
            return super().body_features(poses, pixels)
        from kyara.student.inference import evaluate_poses

        plan = self.coarse(pixels if pixels is not None else self.body_pixels())
        coarse = evaluate_poses(nets[1], poses, plan.pixels, threads=1)                 # (N, Mc, 7)
        return torch.stack([F.embedding_bag(plan.taps, c, per_sample_weights=plan.weights, mode="sum") for c in coarse])

    def pose_rgba_u8(self, image: torch.Tensor, poses: torch.Tensor) -> np.ndarray:
        """image (4, 512, 512) model space, poses (N, 45) → (N, 512, 512, 4) uint8 sRGB straight RGBA,
        composited and converted on the body pixels only (lookup tables; equal to
        tensor_to_rgba_u8(pose(...)) to one 8-bit level)."""
        from kyara.geometry import STUDENT_FACE_BOX
        from kyara.image import tensor_to_rgba_u8
        from kyara.pose import FACE_ALL
        from kyara.student.compose import SubsetCompositor

        poses = self._check_poses(poses)
        if self._evaluator_on_cpu() is None or (self.region is not None
                                                and not bool(STUDENT_FACE_BOX.crop(self.region).all())):
            # Not the CPU backend (GPU, float16: the full student), or the face box reaches outside the
            # region (the compositor keeps the input image there): the float path.
            with torch.inference_mode():
                frames = self.pose(image.to(self.device, self.dtype), poses.to(self.device, self.dtype))
                return np.stack([tensor_to_rgba_u8(x.float().cpu()) for x in frames])
        image = image.detach().float().cpu()
        poses = poses.detach().float().cpu()
        pixels = self.body_pixels()
        key = (image.data_ptr(), image._version, pixels.output.index.data_ptr())
        if key not in self._compositors:
            self._compositors = {key: (image, SubsetCompositor(image, pixels.output.to("cpu")))}
        compositor = self._compositors[key][1]
        # Two lanes of single-threaded torch ops, face network beside body network: for work this small
        # this beat the evaluator's per-level worker pool ~5× on the shared 2-core CPU (83 vs 438 ms per
        # frame, median, alternating in one process at load ~9: its barriers stall whenever another
        # process holds a core).
        def face_lane() -> torch.Tensor:
            torch.set_num_threads(1)
            with torch.inference_mode():
                return self.face_rgba(poses[:, FACE_ALL])

        before = torch.get_num_threads()
        self.face_plan()
        try:
            torch.set_num_threads(1)
            faces = _lane().submit(face_lane) if before > 1 else None
            with torch.inference_mode():
                features = self.body_features(poses, pixels)
                faces = faces.result() if faces is not None else self.face_rgba(poses[:, FACE_ALL])
                return np.stack([compositor.frame(f, b) for f, b in zip(faces, features)])
        finally:
            torch.set_num_threads(before)   # process-wide on some OpenMP runtimes: restore it

    def _evaluator_on_cpu(self):
        with torch.inference_mode():
            return self._evaluator()


_LANE: ThreadPoolExecutor | None = None


def _lane() -> ThreadPoolExecutor:
    """The second lane of pose_rgba_u8 (one worker thread, created on first use)."""
    global _LANE
    if _LANE is None:
        _LANE = ThreadPoolExecutor(1, thread_name_prefix="kyara-lite")
    return _LANE


# auto picks lite only for jobs long enough to repay the one-time face analysis (movable_face).
LITE_MIN_FRAMES = 60


def use_student(character, mode: str, frames: int | None = None):
    """Apply the CLI's ``--student`` choice to a loaded kyara.character.Character, in place; returns it.

    full: unchanged. lite: the student is wrapped in a LiteStudent (an error for a teacher-backed
    character). auto: lite for a student on the CPU when the job renders at least LITE_MIN_FRAMES
    frames (frames None: an open-ended or long job), else unchanged.
    """
    if mode not in STUDENT_MODES:
        raise KyaraError(f"--student must be one of {', '.join(STUDENT_MODES)}, got {mode!r}")
    if mode == "full" or isinstance(character.poser, LiteStudent):
        return character
    if not character.is_student:
        if mode == "lite":
            raise KyaraError("--student lite needs a distilled character (.kyara); this one is posed by its teacher")
        return character
    if mode == "auto" and (character.device.type != "cpu" or (frames is not None and frames < LITE_MIN_FRAMES)):
        return character
    character.poser = LiteStudent(character.poser)
    return character
