"""benchmarks/lite_student.py: several lite body grids side by side in one process (session 41's table)."""
from __future__ import annotations

import re
import sys

import pytest

from script_module import load_script


def run(monkeypatch, capsys, *args: str) -> str:
    bench = load_script("benchmarks/lite_student.py")
    monkeypatch.setattr(sys, "argv", ["lite_student.py", *args])
    bench.main()
    return capsys.readouterr().out


def test_each_grid_gets_its_own_timed_and_measured_lite_renderer(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "--speed-poses", "2", "--poses", "2", "--body-grid", "64,128")
    timed = re.findall(r"^\| (full|lite@\d+) \| [0-9.]+ \|", out, re.M)
    assert timed == ["full", "lite@64", "lite@128"]
    psnr = {name: float(v) for name, v in re.findall(r"^\| (lite@\d+) vs full \| 2 \| ([0-9.]+) \|", out, re.M)}
    # the finer grid evaluates the body closer to the full student's every pixel: measured 33.8 vs 41.8 dB on
    # these two poses with the bundled student (1 and 2 threads alike), so the order is far from a float tie
    assert set(psnr) == {"lite@64", "lite@128"} and psnr["lite@64"] < psnr["lite@128"]


def test_one_grid_keeps_the_plain_lite_name(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "--skip-speed", "--poses", "1")
    assert re.search(r"^\| lite vs full \| 1 \|", out, re.M) and "lite@" not in out


@pytest.mark.parametrize("grids, message", [("128,x", "expected integers"), ("128,128", "named twice"),
                                            ("plan,128", "named twice")])   # the bundled plan has no grid: 128
def test_a_bad_grid_list_is_refused_by_name(monkeypatch, capsys, grids, message):
    with pytest.raises(SystemExit):
        run(monkeypatch, capsys, "--skip-speed", "--poses", "1", "--body-grid", grids)
    assert message in capsys.readouterr().err
