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
