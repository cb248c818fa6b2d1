"""One farm job as a worker runs it: distil one character with checkpoints, evaluate it, run its stages.

``run_job`` is what a Ray task calls, and works without Ray too (the tests call it directly). It is
idempotent and order-independent, as Ray's retries need: when the worker running it dies, Ray starts
it again on another worker and it resumes from the last checkpoint in DIR/<name>/work (losing at
most one checkpoint interval). Every failure of the job itself (a corrupt image, missing weights, a
stage that fails) is recorded in its status file and returned, not raised, so it fails this job only
and Ray does not retry it; only a dead worker is retried.

On a URL farm the work dir is a local scratch folder whose checkpoint and log are copied to
DIR/<name>/work whenever they change (polled every MIRROR_POLL_S), and fetched from there on a retry.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from kyara.errors import KNOWN_ERRORS, KyaraError
from kyara.farm.outdir import FarmDir
from kyara.farm.status import LOG_NAME, WORK_NAME, read_status, write_status
from kyara.farm.table import read_table

CHECKPOINT_NAME = "checkpoint.safetensors"   # kyara.distill.checkpoint.CHECKPOINT_NAME
MIRROR_POLL_S = 5.0

TeacherLoader = Callable[[str, "str | None", str], object]   # (teacher name, weights dir, device) → Teacher


def default_teacher_loader(name: str, weights: str | None, device: str):
    from kyara.teacher import load_teacher

    return load_teacher(name, weights_dir=weights, device=device)


def one_line(error: BaseException) -> str:
    text = str(error) if isinstance(error, KNOWN_ERRORS) else f"{type(error).__name__}: {error}"
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip()) or type(error).__name__


def run_job(location: str, name: str, device: str = "cpu", threads: int = 1,
            teacher_loader: TeacherLoader | None = None, student_factory: Callable[[], object] | None = None) -> dict:
    """Run job `name` of the farm at `location` on `device` ("cpu" or "cuda") with `threads` torch
    threads → {"name", "state": "done" | "failed", ...}. teacher_loader and student_factory replace the
    registry's teacher and the official student (tests use tiny ones)."""
    farm = FarmDir(location)
    previous = read_status(farm, name)
    attempt = int(previous.get("attempt") or 0) + 1 if previous and previous["state"] == "running" else 1
    base = {"attempt": attempt, "pid": os.getpid(), "host": socket.gethostname(), "device": device}
    try:
        write_status(farm, name, "running", **base, started=time.time())
        result = _run(farm, name, device, threads, teacher_loader or default_teacher_loader, student_factory, base)
    except Exception as e:   # this job's failure only: recorded, returned, not retried
        error = one_line(e)
        try:
            write_status(farm, name, "failed", **base, error=error)
        except Exception:   # an unwritable farm dir: the driver reports the error
            pass
        return {"name": name, "state": "failed", "error": error}
    write_status(farm, name, "done", **base, result=result)
    return {"name": name, "state": "done", **result}


def _run(farm: FarmDir, name: str, device: str, threads: int, teacher_loader: TeacherLoader,
         student_factory, base: dict) -> dict:
    import torch

    from kyara.distill import distill
    from kyara.distill.checkpoint import load_checkpoint
    from kyara.eval.evaluate import evaluate
    from kyara.farm.stages import run_stage
    from kyara.image import load_image

    started = time.perf_counter()   # the time budget counts loading the teacher, as `kyara distill`'s does
    torch.set_num_threads(max(1, threads))
    jobs = read_table(farm)
    if name not in jobs:
        raise KyaraError(f"{farm.url()}: no job named {name!r} in the farm table")
    job = jobs[name]
    config = job.distill_config
    with _work_dir(farm, name) as work:
        scratch = work.parent
        image_file = Path(farm.path(job.image)) if farm.is_local else scratch / "input.png"
        if not farm.is_local:
            image_file.write_bytes(farm.read_bytes(job.image))
        image = load_image(image_file)      # a corrupt input fails here, naming the file
        teacher = teacher_loader(config.teacher, job.weights, device)
        checkpoint = work / CHECKPOINT_NAME
        resumed_from = None
        if checkpoint.exists():
            resumed_from = int(load_checkpoint(checkpoint)[1]["step"])
            write_status(farm, name, "running", **base, started=time.time(), resumed_from=resumed_from)
        out_file = Path(farm.path(f"{name}.kyara")) if farm.is_local else scratch / f"{name}.kyara"
        result = distill(image, teacher, config, out_dir=work, name=name, resume=resumed_from is not None,
                         max_minutes=job.minutes, progress=False, image_png=farm.read_bytes(job.image),
                         output=out_file, student=student_factory() if student_factory else None, started=started)
        farm.put_file(out_file, f"{name}.kyara")
        evaluation = evaluate(result.character, teacher, num_poses=job.eval_poses, lpips=job.lpips, progress=False)
        summary = {"examples": result.examples, "steps": result.steps, "minutes": round(result.wall_seconds / 60, 3),
                   "teacher_minutes": round(result.teacher_seconds / 60, 3), "complete": result.complete,
                   # NaN when a resumed job had no step left to evaluate after (JSON has no NaN)
                   "progress_psnr": result.psnr if result.psnr == result.psnr else None}
        record = {"name": name, **evaluation.as_dict(), "distill": summary, "resumed_from": resumed_from,
                  "attempt": base["attempt"], "device": device, "host": base["host"]}
        farm.write_bytes(f"{name}.eval.json", (json.dumps(record, indent=1) + "\n").encode())
        outputs, notes = [f"{name}.kyara", f"{name}.eval.json"], []
        for stage in job.stages:
            try:
                written, said = run_stage(stage, result.character, farm, name, scratch)
            except Exception as e:
                raise KyaraError(f"stage {stage}: {one_line(e)} (the student is in {farm.url(name + '.kyara')}; "
                                 "`kyara farm run` again retries the stages without distilling again)") from None
            outputs += written
            notes += said
    return {"psnr": evaluation.psnr, "ssim": evaluation.ssim, "lpips": evaluation.lpips,
            "minutes": summary["minutes"], "examples": result.examples, "complete": result.complete,
            "resumed_from": resumed_from, "job_minutes": round((time.perf_counter() - started) / 60, 3),
            "outputs": outputs, "notes": notes}


@contextmanager
def _work_dir(farm: FarmDir, name: str) -> Iterator[Path]:
    """The local work dir of job `name` (its parent is a scratch folder for the job's other files)."""
    rel = f"{name}/{WORK_NAME}"
    scratch = Path(tempfile.mkdtemp(prefix=f"kyara-farm-{name}-"))
    try:
        if farm.is_local:
            work = Path(farm.path(rel))
            work.mkdir(parents=True, exist_ok=True)
            # stages and downloads go to scratch; the work dir itself is the farm's
            link = scratch / WORK_NAME
            link.symlink_to(work, target_is_directory=True)
            yield link
            return
        work = scratch / WORK_NAME
        work.mkdir()
        for file in (CHECKPOINT_NAME, LOG_NAME):
            if farm.exists(f"{rel}/{file}"):
                (work / file).write_bytes(farm.read_bytes(f"{rel}/{file}"))
        mirror = _Mirror(farm, rel, work)
        mirror.start()
        try:
            yield work
        finally:
            mirror.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Mirror(threading.Thread):
    """Copies the work dir's checkpoint and log to the farm whenever they change, and once at the end."""

    def __init__(self, farm: FarmDir, rel: str, work: Path):
        super().__init__(daemon=True, name=f"farm-mirror-{rel}")
        self.farm, self.rel, self.work = farm, rel, work
        self.seen: dict[str, tuple[int, int]] = {}
        self.done = threading.Event()

    def sync(self) -> None:
        for file in (CHECKPOINT_NAME, LOG_NAME):
            path = self.work / file
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            if self.seen.get(file) != key:
                self.farm.write_bytes(f"{self.rel}/{file}", path.read_bytes())
                self.seen[file] = key

    def run(self) -> None:
        while not self.done.wait(MIRROR_POLL_S):
            try:
                self.sync()
            except Exception:   # a transient upload failure: the next poll (or the final sync) retries
                pass

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sync()
