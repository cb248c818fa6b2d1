"""The character farm (kyara.farm) on a local Ray on the CPU, with the cheap analytic teacher of
tests/fakes.py and a tiny student (as tests/test_distill.py), so no THA3 weights are needed.

The main test is issue 18's acceptance: 4 jobs on 2 workers, the worker of one job killed mid-job
(SIGKILL to the PID that the job wrote into its own status file), all 4 finish, the resumed job's
student equals an uninterrupted run's, and a corrupt input fails its own job only.
"""
import io
import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kyara.distill import DistillConfig, distill
from kyara.errors import ImageError, KyaraError
from kyara.farm.outdir import FarmDir
from kyara.farm.status import farm_status, status_html, status_json
from kyara.farm.table import read_table, submit
from kyara.image import encode_image, tensor_to_rgba_u8
from kyara.student import BodyMorpher, FaceMorpher, Student
from tests.fakes import FakeTeacher

REPO = Path(__file__).resolve().parents[1]
# tests/test_distill.py's TINY recipe (a checkpoint every 2 steps), with the progress PSNR only at the
# end (evaluating after every step doubled a job's time on a loaded 2-core machine), and the default face rate
# and weight average, as a farm job gets them
TINY = DistillConfig(teacher="fake", examples=4, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                     pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=1e9, checkpoint_every_examples=2,
                     mask_poses=2, lr_scale=10.0)
VICTIM_EXAMPLES = 8    # long enough to be killed after its first checkpoint and before its end


def fake_teacher(name: str, weights, device: str):
    """The farm's teacher_loader in the workers. Deterministic kernels, with the one torch thread the
    task sets (cpus_per_job=1): what test_distill's bit_exact_torch sets for its exact-resume test."""
    assert name == "fake" and device == "cpu"
    torch.use_deterministic_algorithms(True)
    return FakeTeacher()


def tiny_student() -> Student:
    torch.manual_seed(0)
    return Student(FaceMorpher(hidden=16, num_layers=3), BodyMorpher(levels=((128, 16, 8), (256, 8, 8), (512, 8, 8))))


def character_png(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 512, 512, generator=g) * 2 - 1
    image[3, :, :100] = -1   # transparent background on the left
    return encode_image(tensor_to_rgba_u8(image), "PNG")


def _images(tmp_path: Path, names) -> list[str]:
    paths = []
    for seed, name in enumerate(names):
        path = tmp_path / "in" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(character_png(seed))
        paths.append(str(path))
    return paths


class Killer(threading.Thread):
    """Kills the worker of job `name` once the job has written a checkpoint: the PID comes from the
    job's own status file (no process-name patterns)."""

    def __init__(self, farm: Path, name: str, timeout_s: float = 150.0):
        super().__init__(daemon=True)
        self.farm, self.name, self.timeout_s = farm, name, timeout_s
        self.killed_pid: int | None = None
        self.killed_at_examples: int | None = None

    def run(self) -> None:
        end = time.monotonic() + self.timeout_s
        status_file = self.farm / self.name / "status.json"
        checkpoint = self.farm / self.name / "work" / "checkpoint.safetensors"
        while time.monotonic() < end:
            try:
                status = json.loads(status_file.read_text())
            except (FileNotFoundError, ValueError):
                status = {}
            if status.get("state") == "running" and status.get("attempt") == 1 and checkpoint.exists():
                from kyara.distill.checkpoint import load_checkpoint

                os.kill(int(status["pid"]), signal.SIGKILL)
                self.killed_at_examples = int(load_checkpoint(checkpoint)[1]["step"])   # batch 1: steps = examples
                self.killed_pid = int(status["pid"])
                return
            time.sleep(0.05)


def test_farm_survives_a_killed_worker_and_fails_a_corrupt_image_alone(tmp_path, monkeypatch):
    from kyara.farm.runner import RunOptions, run_farm

    # the workers unpickle fake_teacher / tiny_student by module name: let them import this file
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests")]))
    farm = tmp_path / "farm"
    victim_config = replace(TINY, examples=VICTIM_EXAMPLES)
    victim, *others = _images(tmp_path, ["victim", "b", "c", "bad"])
    submit([victim], str(farm), victim_config, eval_poses=2)
    submit(others, str(farm), TINY, eval_poses=2)
    # the stored copy of one input is damaged after submission (e.g. a truncated upload to shared storage)
    (farm / "inputs" / "bad.png").write_bytes(character_png(9)[:300])
    submit([f"d={victim}"], str(farm), TINY, eval_poses=2)   # the 4th good job: the victim's image, short
    assert list(read_table(FarmDir(farm))) == ["victim", "b", "c", "bad", "d"]

    killer = Killer(farm, "victim")
    killer.start()
    log = io.StringIO()
    results = run_farm(str(farm), RunOptions(device="cpu", num_cpus=2, cpus_per_job=1, progress_s=5.0),
                       teacher_loader=fake_teacher, student_factory=tiny_student, out=log)
    killer.join(timeout=1)
    kept = re.search(r"Ray's logs of this run: (\S+)", log.getvalue())   # kept because a job failed
    assert kept and Path(kept[1]).is_dir(), log.getvalue()
    shutil.rmtree(kept[1], ignore_errors=True)
    assert killer.killed_pid is not None, "the victim finished before it could be killed:\n" + log.getvalue()
    assert 2 <= killer.killed_at_examples < VICTIM_EXAMPLES   # the checkpoint at the kill

    states = {name: r["state"] for name, r in results.items()}
    assert states == {"victim": "done", "b": "done", "c": "done", "d": "done", "bad": "failed"}, log.getvalue()
    error = results["bad"]["error"]
    assert "inputs/bad.png" in error and ("corrupt" in error or "not a readable image" in error), error
    assert "\n" not in error

    # the victim ran twice, in another process the second time, resuming from its last checkpoint
    victim_status = json.loads((farm / "victim" / "status.json").read_text())
    assert victim_status["attempt"] == 2 and victim_status["pid"] != killer.killed_pid
    # a checkpoint may land between the kill signal and the process's end
    assert killer.killed_at_examples <= results["victim"]["resumed_from"] <= killer.killed_at_examples + 2
    assert results["b"]["resumed_from"] is None

    # every good job wrote its student and its evaluation; the status agrees
    for name in ("victim", "b", "c", "d"):
        record = json.loads((farm / f"{name}.eval.json").read_text())
        assert record["poses"] == 2 and record["psnr"] > 0 and record["distill"]["complete"]
        assert (farm / f"{name}.kyara").stat().st_size > 0
    assert not (farm / "bad.kyara").exists()
    statuses = {s.name: s for s in farm_status(str(farm))}
    assert [statuses[n].state for n in ("victim", "b", "c", "bad", "d")] == ["done"] * 3 + ["failed", "done"]
    assert statuses["bad"].error == error
    data = json.loads(status_json(str(farm), list(statuses.values())))
    assert data["counts"] == {"queued": 0, "running": 0, "done": 4, "failed": 1}

    # Resumed = uninterrupted: the same recipe straight through in this process, with the workers'
    # settings (1 thread, deterministic kernels). The tolerance is test_distill's for resume, exact
    # equality: resume restores weights, optimizer state and step, and every batch is a pure function
    # of (seed, step), so nothing may differ at all; a lost or repeated step would.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        from kyara.image import load_image

        straight = distill(load_image(victim), FakeTeacher(), victim_config, out_dir=tmp_path / "straight",
                           name="victim", progress=False, student=tiny_student())
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    from safetensors.torch import load_file

    farmed = load_file(str(farm / "victim.kyara"))
    expected = straight.character.poser.state_dict()
    compared = [k for k in expected if k in farmed]
    assert len(compared) > 10
    for k in compared:
        assert torch.equal(farmed[k], expected[k].float()), f"resumed student differs from the straight run at {k}"



def test_submit_checks_every_argument_before_writing_anything(tmp_path):
    good, = _images(tmp_path, ["good"])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(character_png(1)[:300])
    farm = tmp_path / "farm"
    with pytest.raises(ImageError, match="corrupt.png"):
        submit([good, str(corrupt)], str(farm), TINY)
    assert not farm.exists()
    with pytest.raises(KyaraError, match="no such image file"):
        submit([str(tmp_path / "missing.png")], str(farm), TINY)
    with pytest.raises(KyaraError, match="already"):
        submit([good, f"good={good}"], str(farm), TINY)
    with pytest.raises(KyaraError, match="--minutes"):
        submit([good], str(farm), replace(TINY, examples=0))
    with pytest.raises(KyaraError, match="character name"):
        submit([f"bad name={good}"], str(farm), TINY)
    jobs = submit([good, f"other={good}"], str(farm), TINY, minutes=2.5, stages=("preview",))
    assert [j.name for j in jobs] == ["good", "other"]
    assert (farm / "inputs" / "other.png").read_bytes() == Path(good).read_bytes()
    table = read_table(FarmDir(farm))
    assert table["other"].distill_config == TINY and table["other"].minutes == 2.5
    with pytest.raises(KyaraError, match="already in"):
        submit([good], str(farm), TINY)


def test_status_reads_progress_eta_and_failures(tmp_path):
    from kyara.farm.status import write_status

    a, b, c = _images(tmp_path, ["a", "b", "c"])
    out = tmp_path / "farm"
    submit([a], str(out), replace(TINY, examples=0), minutes=10.0)
    submit([b, c], str(out), replace(TINY, examples=1000))
    farm = FarmDir(out)
    write_status(farm, "a", "running", attempt=1, pid=123, host="node1")
    (out / "a" / "work").mkdir(parents=True)
    (out / "a" / "work" / "log.jsonl").write_text(
        json.dumps({"step": 10, "examples": 10, "minutes": 4.0, "psnr": 21.5}) + "\n"
        + json.dumps({"step": 20, "examples": 20, "minutes": 6.5, "psnr": 23.25}) + "\n" + '{"step": 2')  # torn line
    write_status(farm, "b", "running", attempt=2, pid=7, host="node2")
    (out / "b" / "work").mkdir(parents=True)
    (out / "b" / "work" / "log.jsonl").write_text(json.dumps({"examples": 250, "minutes": 2.0, "psnr": 19.0}) + "\n")
    write_status(farm, "c", "failed", attempt=1, error="inputs/c.png: image data is truncated or corrupt")
    s = {j.name: j for j in farm_status(str(out))}
    assert (s["a"].state, s["a"].psnr, s["a"].examples, s["a"].eta_minutes) == ("running", 23.25, 20, 3.5)
    assert s["b"].eta_minutes == pytest.approx(2.0 / 250 * 750)   # examples left at the logged rate
    assert s["a"].worker_alive is None                               # another host: not checked
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    write_status(farm, "b", "running", attempt=2, pid=gone.pid, host=socket.gethostname())
    write_status(farm, "a", "running", attempt=1, pid=os.getpid(), host=socket.gethostname())
    s = {j.name: j for j in farm_status(str(out))}
    assert s["a"].worker_alive is True and s["b"].worker_alive is False
    from kyara.farm.status import status_text

    assert "that process is gone" in status_text(str(out), list(s.values())).splitlines()[3]
    assert s["c"].state == "failed" and "truncated" in s["c"].error
    page = status_html(str(out), list(s.values()))
    assert 'http-equiv="refresh"' in page and "23.25" in page and "truncated or corrupt" in page
    assert "<script" not in page


def test_a_job_on_an_fsspec_url_farm_mirrors_its_work_dir(tmp_path, monkeypatch):
    """run_job without Ray on a file:// URL: the same code path as s3:// (fsspec), with a stage."""
    pytest.importorskip("fsspec")
    import kyara.farm.stages
    from kyara.farm.task import run_job

    monkeypatch.setattr(kyara.farm.stages, "PREVIEW_SECONDS", 0.5)   # 4 frames, not 80: a CPU renders slowly
    monkeypatch.setattr(kyara.farm.stages, "PREVIEW_FPS", 8.0)

    image, = _images(tmp_path, ["u"])
    url = f"file://{tmp_path}/farm"
    submit([image], url, TINY, stages=("preview", "export"), eval_poses=1)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        result = run_job(url, "u", "cpu", 1, teacher_loader=fake_teacher, student_factory=tiny_student)
        farm = tmp_path / "farm"
        first = (farm / "u.kyara").read_bytes()
        (farm / "u.kyara").unlink()
        # a retry in a fresh scratch dir (as on another node) fetches the mirrored checkpoint and resumes
        again = run_job(url, "u", "cpu", 1, teacher_loader=fake_teacher, student_factory=tiny_student)
    finally:   # run_job and fake_teacher set these in this process (in a worker they would stay there)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    assert result["state"] == "done" and result["resumed_from"] is None, result
    assert (farm / "u" / "work" / "checkpoint.safetensors").exists()   # mirrored from the local scratch dir
    assert json.loads((farm / "u" / "work" / "log.jsonl").read_text().splitlines()[-1])["examples"] == 4
    assert again["state"] == "done" and again["resumed_from"] == 4, again
    from safetensors.torch import load

    first_w, again_w = load(first), load((farm / "u.kyara").read_bytes())
    assert all(torch.equal(first_w[k], again_w[k]) for k in first_w if k != "character_image")
    from PIL import Image

    with Image.open(farm / "u.preview.webp") as preview:
        assert preview.n_frames == 4 and preview.size == (512, 512)
    assert (farm / "u.tha4" / "character_model.yaml").exists()
    assert any("straight colour" in note for note in again["notes"])   # the export's caveat is recorded
    assert not list(farm.rglob("*.tmp"))   # atomic writes left no temporary file behind


def test_cli_status_json_html_and_run_without_ray(tmp_path, monkeypatch, capsys):
    import sys

    from kyara.cli import main
    from kyara.farm.status import write_status

    a, b = _images(tmp_path, ["a", "b"])
    out = tmp_path / "farm"
    assert main(["farm", "submit", a, b, "--out", str(out), "--examples", "8", "--stages", "preview"]) == 0
    assert "submitted 2 characters" in capsys.readouterr().out
    farm = FarmDir(out)
    write_status(farm, "a", "done", attempt=1, result={"psnr": 30.5, "minutes": 1.0, "examples": 8,
                                                       "outputs": ["a.kyara", "a.eval.json"]})
    (out / "a.kyara").write_bytes(b"x")
    assert main(["farm", "status", str(out), "--json", "--html"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"queued": 1, "running": 0, "done": 1, "failed": 0}
    assert data["jobs"][0]["psnr"] == 30.5 and data["jobs"][1]["state"] == "queued"
    assert "30.50" in (out / "status.html").read_text()

    monkeypatch.setitem(sys.modules, "ray", None)   # as if ray were not installed
    assert main(["farm", "run", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'kyara[farm]'" in err and err.count("\n") == 1
    assert main(["farm", "run", str(tmp_path / "nothing")]) == 2
    assert "not a farm directory" in capsys.readouterr().err


def test_tasks_ask_for_a_share_of_a_gpu_or_for_cpus():
    import types

    from kyara.farm.runner import RunOptions, task_resources

    gpu_cluster = types.SimpleNamespace(cluster_resources=lambda: {"CPU": 16.0, "GPU": 1.0})
    cpu_cluster = types.SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    assert task_resources(gpu_cluster, RunOptions(jobs_per_gpu=4)) == ({"num_gpus": 0.25, "num_cpus": 1}, "cuda")
    assert task_resources(gpu_cluster, RunOptions(device="cpu", cpus_per_job=2)) == ({"num_cpus": 2}, "cpu")
    assert task_resources(cpu_cluster, RunOptions()) == ({"num_cpus": 1}, "cpu")
    with pytest.raises(KyaraError, match="no GPU"):
        task_resources(cpu_cluster, RunOptions(device="cuda"))


def test_jobs_per_gpu_default_to_what_fits_the_gpu_memory(tmp_path, monkeypatch):
    """Without --jobs-per-gpu a local farm puts as many jobs on a GPU as fit its memory (one job held 42 GB of an
    H100 in session 14), at most 2; on a cluster, whose GPUs the driver cannot see, one."""
    import types

    from kyara.farm.runner import RunOptions, default_jobs_per_gpu, local_gpu_gib, task_resources

    assert [default_jobs_per_gpu(g) for g in (None, 0.0, 23.6, 79.6, 131.0, 500.0)] == [1, 1, 1, 1, 2, 2]
    gpu_cluster = types.SimpleNamespace(cluster_resources=lambda: {"CPU": 16.0, "GPU": 1.0})
    h100, h200 = (lambda: 79.6), (lambda: 131.0)
    assert task_resources(gpu_cluster, RunOptions(), h100)[0]["num_gpus"] == 1.0
    assert task_resources(gpu_cluster, RunOptions(), h200)[0]["num_gpus"] == 0.5
    assert task_resources(gpu_cluster, RunOptions(address="auto"), h200)[0]["num_gpus"] == 1.0
    assert task_resources(gpu_cluster, RunOptions(jobs_per_gpu=4), h100)[0]["num_gpus"] == 0.25   # asked for

    # local_gpu_gib reads nvidia-smi (the smallest GPU); without it, None
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '81559\\n143771\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert local_gpu_gib() == pytest.approx(81559 / 1024)
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert local_gpu_gib() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert local_gpu_gib() is None


def test_url_farms_need_fsspec_and_a_known_filesystem(monkeypatch):
    import sys

    with pytest.raises(KyaraError, match="no-such-fs://bucket/farm: cannot open this URL"):
        FarmDir("no-such-fs://bucket/farm")
    monkeypatch.setitem(sys.modules, "fsspec", None)   # as if fsspec were not installed
    with pytest.raises(KyaraError, match=r"needs fsspec: pip install fsspec \(plus the filesystem's package"):
        FarmDir("s3://bucket/farm")
    assert FarmDir("relative/farm").is_local           # plain paths never import fsspec
