"""The teacher pool: teacher examples computed in large batches into an on-device ring buffer, each shown
to the student `reuse` times on average (DistillConfig), so the teacher costs a fraction of a run's time;
and what a run tells its user when the pool does not fit the GPU.

Every draw is a pure function of integer keys (seeded_generator), so a resumed run refills the pool and
draws the same batches as the uninterrupted one.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

import torch

from kyara.distill.config import DistillConfig
from kyara.errors import DeviceMemoryError
from kyara.geometry import FACE_MORPHER_BOX
from kyara.pose import NUM_PARAMETERS
from kyara.pose_sampler import sample_poses

STORE_DTYPE = torch.float16   # pool storage; values in [-1, 1] keep ~3 decimal digits
# One teacher example in the pool: final image (4, 512, 512), flow (2, 512, 512), face crop (4, 192, 192).
POOL_BYTES_PER_EXAMPLE = (4 * 512 * 512 + 2 * 512 * 512 + 4 * FACE_MORPHER_BOX.height * FACE_MORPHER_BOX.width) \
    * torch.finfo(STORE_DTYPE).bits // 8


# GPU memory of one default run besides its pool: 32.5 GiB peak (nvidia-smi) with the 13.1 GiB pool, H200,
# `kyara farm` with one job (docs/benchmarks.md, "Character farm"): the teacher's batches and training.
NON_POOL_BYTES = int(19.4 * 2 ** 30)


def out_of_memory_message(config: DistillConfig, device: torch.device) -> str:
    """What to tell a user whose distillation ran out of GPU memory: the pool's share (allocated at once,
    before training), the device's size, and a pool that fits beside the measured rest (NON_POOL_BYTES)."""
    gib = 2 ** 30
    pool = config.pool_size * POOL_BYTES_PER_EXAMPLE
    where = "the device"
    fit = None
    if device.type == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(device)
        where = f"{torch.cuda.get_device_name(device)} ({total / gib:.1f} GiB, {free / gib:.1f} GiB free now)"
        step = config.teacher_batch_size
        fit = int((0.95 * total - NON_POOL_BYTES) / POOL_BYTES_PER_EXAMPLE) // step * step
    if fit is not None and fit < config.batch_size * config.face_batch_multiplier:
        advice = ("a smaller --batch-size with a small --pool-size (at the default batch sizes a run needs "
                  f"~{NON_POOL_BYTES / gib:.0f} GiB besides its pool)")
    elif fit is not None and fit < config.pool_size:
        advice = f"--pool-size {fit} ({fit * POOL_BYTES_PER_EXAMPLE / gib:.1f} GiB)"
    else:
        advice = "a smaller --pool-size"
    return (f"{where} ran out of memory while distilling: the teacher pool alone holds {pool / gib:.1f} GiB "
            f"(--pool-size {config.pool_size}, {POOL_BYTES_PER_EXAMPLE / 2**20:.1f} MiB an example), and the teacher "
            f"({config.teacher_batch_size} poses a batch) and training (--batch-size {config.batch_size}) need more on "
            f"top. Try {advice}, close other programs on that GPU (other kyara farm jobs: --jobs-per-gpu 1), or use "
            f"a GPU with more memory; a new run is needed (--resume keeps the checkpoint's settings)")


@contextmanager
def explained_out_of_memory(config_now, device: torch.device):
    """Turns torch's out-of-memory error into a DeviceMemoryError (one line, with advice); config_now()
    gives the run's config at that moment (a resumed run's is the checkpoint's)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise DeviceMemoryError(out_of_memory_message(config_now(), device)) from e


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from an integer key tuple (stable across runs and resumes)."""
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class TeacherPool:
    """Ring buffer of teacher examples on the device.

    Per example: face_crop (4, 192, 192) = the teacher's face-morpher output (FACE_MORPHER_BOX of
    face_morphed_full), final (4, 512, 512) = the teacher's output, flow (2, 512, 512) = the
    teacher's absolute appearance flow. Chunk k holds the poses sample_poses(seed, k).
    """

    def __init__(self, teacher, prepared, capacity: int, chunk: int, seed: int, device: torch.device,
                 stream: tuple[int, ...] = (), sampler=sample_poses):
        self.teacher, self.prepared, self.seed, self.stream = teacher, prepared, seed, stream
        self.sampler = sampler   # (n, generator) → (n, 45) poses: kyara.pose_sampler or a PoseDataset
        self.chunk = chunk
        self.num_slots = max(1, capacity // chunk)
        n = self.num_slots * chunk
        fb = FACE_MORPHER_BOX
        self.face_crop = torch.empty(n, 4, fb.height, fb.width, device=device, dtype=STORE_DTYPE)
        self.final = torch.empty(n, 4, 512, 512, device=device, dtype=STORE_DTYPE)
        self.flow = torch.empty(n, 2, 512, 512, device=device, dtype=STORE_DTYPE)
        self.poses = torch.empty(n, NUM_PARAMETERS, device=device)
        self.chunks_made = 0
        self.teacher_seconds = 0.0

    @property
    def size(self) -> int:
        return min(self.chunks_made, self.num_slots) * self.chunk

    @torch.no_grad()
    def make_chunk(self, k: int) -> None:
        if self.poses.is_cuda:
            # the student's queued steps finish first, so teacher_seconds counts the teacher only (without this
            # sync it also counted the steps queued ahead of it: 159 s reported for ~70 s of teacher work in a
            # 10-minute parts run on an H100, session 14)
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        poses = self.sampler(self.chunk, seeded_generator(self.seed, 1, k, *self.stream)).to(self.poses.device)
        out = self.teacher.pose_all(self.prepared, poses)
        s = (k % self.num_slots) * self.chunk
        self.face_crop[s:s + self.chunk] = FACE_MORPHER_BOX.crop(out.face_morphed_full).to(STORE_DTYPE)
        self.final[s:s + self.chunk] = out.image.to(STORE_DTYPE)
        self.flow[s:s + self.chunk] = out.editor.flow.to(STORE_DTYPE)
        self.poses[s:s + self.chunk] = poses
        if poses.is_cuda:
            torch.cuda.synchronize()
        self.teacher_seconds += time.perf_counter() - t0

    def chunks_to_make(self, chunks: int) -> int:
        """How many chunks advance_to(chunks) will compute."""
        return max(0, chunks - max(self.chunks_made, chunks - self.num_slots))

    def advance_to(self, chunks: int, on_chunk: Callable[[int], None] | None = None) -> None:
        """Make chunks up to index `chunks` (exclusive); skips ones that would be overwritten anyway.
        on_chunk(poses) is called after each chunk (SetupProgress)."""
        for k in range(chunks - self.chunks_to_make(chunks), chunks):
            self.make_chunk(k)
            if on_chunk is not None:
                on_chunk(self.chunk)
        self.chunks_made = max(self.chunks_made, chunks)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) int64 indices of examples, drawn uniformly on the CPU (TrainStep moves them to the device)."""
        return torch.randint(self.size, (n,), generator=generator)
