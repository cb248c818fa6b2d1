"""benchmarks/gpu_queue.sh poll + collect: a cut-off run's checkpoint comes back and is kept for resuming,
a finished run's is let go (docs/gpu-runbook.md, "Cut-off runs are resumed")."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_queue.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                                reason="needs bash and tar")


def _run(args, cwd, **env):
    # python3 on PATH must be this interpreter (poll prints the harness's table with it)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env={**os.environ, "PATH": path, **env},
                          capture_output=True, text=True, timeout=120)


def test_poll_then_collect_keeps_only_unfinished_runs_for_resuming(tmp_path):
    queue = tmp_path / ".abT"
    done = queue / "default" / "sample_character_s1"
    cut = queue / "min20" / "twin_tails_s0"
    (done / "work").mkdir(parents=True)
    (cut / "work").mkdir(parents=True)
    (queue / "queue.out").write_text("")
    (done / "eval.json").write_text(json.dumps({"psnr": 35.5, "ssim": 0.991, "lpips": 0.006, "poses": 1000}))
    (done / "work" / "checkpoint.safetensors").write_bytes(b"finished run's checkpoint")
    (cut / "work" / "checkpoint.safetensors").write_bytes(b"cut-off checkpoint")
    (cut / "work" / "log.jsonl").write_text('{"step": 40625}\n')
    # a finished run's folder left over from an earlier collect must go
    resume = tmp_path / ".resume"
    (resume / "default" / "sample_character_s1" / "work").mkdir(parents=True)

    replies = tmp_path / "replies"
    polled = _run(["poll", ".abT", "0"], cwd=tmp_path, OUT=str(replies))
    assert polled.returncode == 0, polled.stderr
    assert sorted(p.name for p in replies.glob("*.tar")) == ["default_sample_character_s1.tar",
                                                             "min20_twin_tails_s0.tar"]

    collected = _run(["collect", str(replies), str(tmp_path / "results"), str(resume)], cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    kept = resume / "min20" / "twin_tails_s0" / "work"
    assert (kept / "checkpoint.safetensors").read_bytes() == b"cut-off checkpoint"
    assert (kept / "log.jsonl").read_text() == '{"step": 40625}\n'
    assert not (resume / "default" / "sample_character_s1").exists()
    # the finished run comes back with its result, not its checkpoint
    back = tmp_path / "results" / "default_sample_character_s1"
    assert json.loads((back / "eval.json").read_text())["psnr"] == 35.5
    assert not (back / "work" / "checkpoint.safetensors").exists()
    assert "unfinished" in collected.stdout and "done" in collected.stdout
    # ... and its result goes where git keeps it (benchmarks/runs/RESULTS_NAME/...); the unfinished run's does not
    record = tmp_path / "benchmarks" / "runs" / "results"
    assert json.loads((record / "default_sample_character_s1" / "eval.json").read_text())["psnr"] == 35.5
    assert not (record / "min20_twin_tails_s0").exists()


def test_collect_lets_go_of_a_trained_run_cut_in_its_evaluation(tmp_path):
    """Session 40: a run wrote its student, then the device time ran out before its eval.json. Resuming it would spend
    device time on a finished run; collect names the CPU evaluation instead and keeps nothing for resuming."""
    queue = tmp_path / ".abT"
    run = queue / "flow50" / "twin_tails_s0"
    (run / "work").mkdir(parents=True)
    (queue / "queue.out").write_text("")
    (run / "student.kyara").write_bytes(b"trained student")
    (run / "work" / "checkpoint.safetensors").write_bytes(b"last checkpoint")
    resume = tmp_path / ".resume"
    (resume / "flow50" / "twin_tails_s0" / "work").mkdir(parents=True)   # left by an earlier collect of a cut poll

    replies = tmp_path / "replies"
    assert _run(["poll", ".abT", "0"], cwd=tmp_path, OUT=str(replies)).returncode == 0
    collected = _run(["collect", str(replies), str(tmp_path / "results"), str(resume)], cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    assert not (resume / "flow50" / "twin_tails_s0").exists()
    back = tmp_path / "results" / "flow50_twin_tails_s0"
    assert (back / "student.kyara").read_bytes() == b"trained student"
    assert "trained, not evaluated" in collected.stdout and f"kyara eval {back}/student.kyara" in collected.stdout


def _alive(pid: int) -> bool:
    # a zombie (killed, not yet reaped by whoever adopted it) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or shutil.which("setsid") is None,
                    reason="needs /proc and setsid")
def test_stop_ends_the_queue_and_what_it_runs_but_not_the_caller(tmp_path):
    """Session 33 stopped a queue with `pkill -f 'gpu_queue[.]sh'`, which matched the calling command's own line and
    killed the call. `stop` ends the queue's process group instead: the runner, a stand-in harness and its child."""
    import time

    queue = tmp_path / ".abT"
    (queue / "home" / "models" / "tha3").mkdir(parents=True)        # start then fetches no teacher
    harness = tmp_path / "harness.sh"
    harness.write_text('sleep 300 & echo $! >"$1/child.pid"; echo $$ >"$1/harness.pid"; wait\n')

    started = _run(["start", ".abT", "x=x.png", "r||0"], cwd=tmp_path, QUEUE_HARNESS=str(harness), QUEUE_CONSOLE_S="0")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 30
    while not ((queue / "child.pid").exists() and (queue / "harness.pid").exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)   # the pid files are written right after the processes start
    pids = [int((queue / name).read_text()) for name in ("queue.pid", "harness.pid", "child.pid")]
    assert all(_alive(p) for p in pids)

    stopped = _run(["stop", ".abT"], cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the queue in .abT" in stopped.stdout
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)

    again = _run(["stop", ".abT"], cwd=tmp_path)
    assert again.returncode == 0 and "ended already" in again.stdout
    never = _run(["stop", ".none"], cwd=tmp_path)
    assert never.returncode == 2 and "no .none/queue.pid" in never.stderr
