"""The farm's driver: one Ray task per character, on a local Ray or an existing cluster.

Ray (``pip install 'kyara[farm]'``) is imported here only, inside ``run_farm``. On GPUs each task asks
for 1/jobs_per_gpu of a GPU, so Ray packs that many characters on each GPU; on CPUs each asks for
cpus_per_job CPUs and uses that many torch threads. A task whose worker dies is retried by Ray
(max_retries) and resumes from its checkpoint; a job that fails by itself is recorded and not retried.
Jobs already done are skipped, so running the farm again continues it.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from kyara.errors import KyaraError
from kyara.farm.outdir import FarmDir, is_url
from kyara.farm.status import job_status, read_status, write_status
from kyara.farm.table import read_table
from kyara.farm.task import TeacherLoader, run_job

RAY_VERSION = "2.60.0"
# --jobs-per-gpu when not given: as many jobs as fit the GPU's memory, at most MAX_JOBS_PER_GPU (default_jobs_per_gpu)
MAX_JOBS_PER_GPU = 2       # the best of 1/2/4 on an H200: 255 vs 231 and 185 training examples/s in all
                           # (docs/benchmarks.md, "H200 rows ... session 8")
JOB_GPU_GIB = 45           # one job's GPU memory: measured peaks (reserved, H100, sessions 15–16) 37.6–40.3 GiB at the
                           # default parts 0.25 / 0.25, 44.5 GiB at every pixel (the CUDA graphs' memory pools are private)
# a local Ray on this machine only: every listener on 127.0.0.1, no auth token file, no usage report
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None      # None: start a local Ray for this run; "auto" or HOST:PORT: join a cluster
    device: str = "auto"            # auto (GPUs if the cluster has any), cpu, cuda
    jobs_per_gpu: int | None = None  # None: default_jobs_per_gpu of this machine's GPUs (local Ray), 1 on a cluster
    cpus_per_job: int = 1
    max_retries: int = 3            # times Ray restarts a job whose worker died
    num_cpus: int | None = None     # local Ray only: CPUs it may use (None: all)
    num_gpus: int | None = None     # local Ray only: GPUs it may use (None: all)
    progress_s: float = 30.0        # seconds between progress lines while jobs run


def import_ray():
    try:
        import ray
    except ImportError:
        raise KyaraError("the farm needs Ray: pip install 'kyara[farm]'") from None
    return ray


def run_farm(location: str, options: RunOptions = RunOptions(), *, teacher_loader: TeacherLoader | None = None,
             student_factory: Callable[[], object] | None = None, out: TextIO | None = None) -> dict[str, dict]:
    """Run every job of the farm at `location` that is not done → {name: the job's result}.

    Prints one line per finished job and a progress line every options.progress_s seconds to `out` (default:
    sys.stdout as it is at the call, not at import: a redirected stdout, e.g. a test's capture, may be gone).
    teacher_loader / student_factory travel to the workers (cloudpickle) and replace the registry's
    teacher and the official student; tests pass tiny ones.
    """
    out = out if out is not None else sys.stdout
    if (options.jobs_per_gpu is not None and options.jobs_per_gpu < 1) or options.cpus_per_job < 1 or options.max_retries < 0:
        raise KyaraError(f"--jobs-per-gpu and --cpus-per-job must be >= 1 and --max-retries >= 0, got "
                         f"{options.jobs_per_gpu}, {options.cpus_per_job}, {options.max_retries}")
    if options.device not in ("auto", "cpu", "cuda"):
        raise KyaraError(f"--device must be auto, cpu or cuda (Ray places each job on a GPU), got {options.device!r}")
    # workers run in other processes and on other nodes: a relative path would mean their own working dirs
    farm = FarmDir(location if is_url(location) else os.path.abspath(os.path.expanduser(location)))
    jobs = read_table(farm)
    todo = [name for name in jobs if not _is_done(farm, name)]
    print(f"farm {farm.url()}: {len(jobs)} character(s), {len(jobs) - len(todo)} already done, {len(todo)} to run",
          file=out, flush=True)
    if not todo:
        return {}
    ray = import_ray()   # before any write: without Ray nothing changes
    for name in todo:
        write_status(farm, name, "queued")
    started_here, temp = _init_ray(ray, options)
    results: dict[str, dict] = {}
    try:
        results = _run_tasks(ray, farm, todo, options, teacher_loader, student_factory, out)
        return results
    finally:
        if started_here:
            ray.shutdown()
        if temp is not None:   # a local Ray's sockets and logs: kept only when something went wrong
            if len(results) == len(todo) and all(r["state"] == "done" for r in results.values()):
                _remove_tree(temp)
            else:
                print(f"Ray's logs of this run: {temp}", file=out, flush=True)


def _remove_tree(path: str, wait_s: float = 3.0) -> None:
    """Remove a local Ray's temp dir; Ray's processes take up to ~2 s after shutdown() to exit and may
    write a last log file meanwhile, so try again until it stays gone."""
    end = time.monotonic() + wait_s
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.5)
        if not os.path.exists(path) or time.monotonic() > end:
            return


def _is_done(farm: FarmDir, name: str) -> bool:
    status = read_status(farm, name)
    return bool(status and status["state"] == "done" and farm.exists(f"{name}.kyara"))


def _init_ray(ray, options: RunOptions) -> tuple[bool, str | None]:
    """Start a local Ray (address None) or connect to a cluster → (whether it was started here, the local
    Ray's temp dir or None); (False, None) when Ray was already running in this process."""
    if ray.is_initialized():
        return False, None
    if options.address is None:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)
        # a short temp dir: Ray keeps Unix sockets there, whose paths are limited in length
        temp = tempfile.mkdtemp(prefix="kyr", dir="/tmp" if os.path.isdir("/tmp") else None)
        try:
            ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=False,
                     _temp_dir=os.path.join(temp, "ray"), log_to_driver=False, logging_level="WARNING")
        except Exception as e:   # KYARA_DEBUG=1 shows the chained traceback
            raise KyaraError(f"could not start a local Ray ({type(e).__name__}: {e}); its logs: {temp}") from e
        return True, temp
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=options.address, log_to_driver=False, logging_level="WARNING")
        except ConnectionError as e:
            raise KyaraError(f"--address {options.address}: cannot connect to a Ray cluster ({e}); start one "
                             "with `ray start --head` (docs/farm.md)") from None
    return True, None


def default_jobs_per_gpu(gpu_gib: float | None) -> int:
    """Jobs per GPU when --jobs-per-gpu is not given: as many as fit in gpu_gib (the smallest GPU's memory, GiB),
    at most MAX_JOBS_PER_GPU; 1 when it is not known. An H200 (131 GiB) gets 2, an 80 GB GPU 1."""
    if not gpu_gib:
        return 1
    return max(1, min(MAX_JOBS_PER_GPU, int(gpu_gib // JOB_GPU_GIB)))


def local_gpu_gib() -> float | None:
    """The memory of this machine's smallest NVIDIA GPU in GiB, from nvidia-smi (not torch, which would open a CUDA
    context in the driver process and take GPU memory from the jobs); None without nvidia-smi or a GPU."""
    import subprocess

    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
        mib = [float(line) for line in text.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return min(mib) / 1024 if mib else None


def task_resources(ray, options: RunOptions, gpu_gib: Callable[[], float | None] = local_gpu_gib) -> tuple[dict, str]:
    """The Ray resources of one job and the torch device it uses there. gpu_gib: this machine's GPU memory, asked
    only for a local Ray without --jobs-per-gpu (a cluster's GPUs are not this machine's: 1 job each there)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = options.device == "cuda" or (options.device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise KyaraError("--device cuda: the Ray cluster has no GPU")
    if use_gpu:
        jobs = options.jobs_per_gpu or (default_jobs_per_gpu(gpu_gib()) if options.address is None else 1)
        return {"num_gpus": 1 / jobs, "num_cpus": options.cpus_per_job}, "cuda"
    return {"num_cpus": options.cpus_per_job}, "cpu"


def _run_tasks(ray, farm: FarmDir, todo: list[str], options: RunOptions, teacher_loader, student_factory,
               out: TextIO) -> dict[str, dict]:
    from ray.exceptions import RayError

    resources, device = task_resources(ray, options)
    remote = ray.remote(run_job)
    pending = {}
    for name in todo:
        ref = remote.options(**resources, max_retries=options.max_retries, retry_exceptions=False,
                             name=f"kyara-farm:{name}").remote(farm.location, name, device,
                                                               resources["num_cpus"], teacher_loader, student_factory)
        pending[ref] = name
    where = (f"{resources['num_gpus']:.3g} GPU" if "num_gpus" in resources else f"{resources['num_cpus']} CPU")
    print(f"started {len(todo)} job(s) on Ray ({where} each, {device})", file=out, flush=True)
    results: dict[str, dict] = {}
    t0 = last_line = time.monotonic()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(options.progress_s, 5.0))
        for ref in ready:
            name = pending.pop(ref)
            try:
                result = ray.get(ref)
            except RayError as e:   # the worker died more than max_retries times, or Ray itself failed
                error = f"worker lost {options.max_retries + 1} times ({type(e).__name__})"
                write_status(farm, name, "failed", error=error)
                result = {"name": name, "state": "failed", "error": error}
            results[name] = result
            print(_result_line(result, len(results), len(todo)), file=out, flush=True)
        if pending and time.monotonic() - last_line >= options.progress_s:
            last_line = time.monotonic()
            print(f"[{(last_line - t0) / 60:.1f} min] {len(results)}/{len(todo)} finished; "
                  + _running_summary(farm, list(pending.values())), file=out, flush=True)
    failed = sum(1 for r in results.values() if r["state"] != "done")
    print(f"farm finished: {len(results) - failed} done, {failed} failed in {(time.monotonic() - t0) / 60:.1f} min",
          file=out, flush=True)
    return results


def _running_summary(farm: FarmDir, names: list[str], show: int = 6) -> str:
    """'running: alice 31.20 dB (ETA 4.1 min), ...; 3 queued' from the jobs' status files and logs (the
    first `show` running jobs get figures; reading every log of a large farm each time would be slow)."""
    if len(names) > 200:
        return f"{len(names)} queued or running (kyara farm status {farm.url()})"
    jobs = read_table(farm)
    statuses = [job_status(farm, jobs[name]) for name in names if name in jobs]
    running = [s for s in statuses if s.state == "running"]
    parts = []
    for s in running[:show]:
        figures = f" {s.psnr:.2f} dB" if s.psnr is not None else ""
        figures += f" (ETA {s.eta_minutes:.1f} min)" if s.eta_minutes is not None else ""
        parts.append(s.name + figures)
    more = f" and {len(running) - show} more" if len(running) > show else ""
    return (f"running: {', '.join(parts) or 'none yet'}{more}; {len(statuses) - len(running)} queued "
            f"(kyara farm status {farm.url()})")


def _result_line(result: dict, finished: int, total: int) -> str:
    if result["state"] == "done":
        return (f"[{finished}/{total}] {result['name']}: done, PSNR {result['psnr']:.2f} dB, "
                f"{result['examples']:,} examples in {result['minutes']:.1f} min"
                + (f" (resumed from step {result['resumed_from']})" if result.get("resumed_from") else ""))
    return f"[{finished}/{total}] {result['name']}: FAILED: {result['error']}"
