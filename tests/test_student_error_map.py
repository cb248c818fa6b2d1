"""benchmarks/student_error_map.py: the flow-error sweep behind session 38's reading (docs/benchmarks.md)."""
from __future__ import annotations

import re
import sys

import pytest

from script_module import load_script


@pytest.mark.slow
def test_the_flow_error_sweep_ends_at_the_teacher_and_starts_at_the_student(monkeypatch, capsys):
    sem = load_script("benchmarks/student_error_map.py")
    monkeypatch.setattr(sys, "argv", ["student_error_map.py", "--poses", "4", "--flow-error-scales", "0,1"])
    sem.main()
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", out, re.M))
    # λ = 0 is the teacher's own flow under the teacher's blend: its image exactly, however the student errs
    assert rows["PSNR, the teacher's blend over a warp with the student's flow error × 0"].startswith("inf")
    # λ = 1 is the student's flow: the same number as the swap row, which takes the student's own warped image
    assert (rows["PSNR, the teacher's blend over a warp with the student's flow error × 1"]
            == rows["PSNR, teacher's blend over the student's warp"])
    shares = [float(x) for x in re.findall(r"share of the warp's squared error ([0-9.]+)\)", out)]
    assert len(shares) == 2 and 0 < sum(shares) <= 1.0005      # flat colour and lines are disjoint
    # the flow-error bins cover [0, ∞): every visible pixel in exactly one (printed to 3 decimals: 5 × 0.0005)
    bins = re.findall(r"flow is [0-9.]+–[0-9.inf]+ px off: share of visible / of the warp's squared error \| "
                      r"([0-9.]+) / ([0-9.]+) \|", out)
    assert len(bins) == 5
    assert abs(sum(float(v) for v, _ in bins) - 1) <= 0.0025
    assert 0 < sum(float(w) for _, w in bins) <= 1.0025
