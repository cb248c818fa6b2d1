"""benchmarks/run_curve.py: the per-phase reading of a distillation run's log (docs/benchmarks.md, session 20)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from kyara.distill.config import THA4_BODY_PHASES

from script_module import load_script



def _run_curve():
    return load_script("benchmarks/run_curve.py")


def test_phase_ends_are_medians_of_their_last_three_evaluations_and_gains_their_differences(tmp_path):
    rc = _run_curve()
    total = 1500
    rows, expected = [], []
    start = 0
    for i, phase in enumerate(THA4_BODY_PHASES):
        end = round(phase.until * total)
        # five evaluations inside the phase; the last three are 20+i, 30+i (a dip, as at a phase change), 21+i
        points = [start + (end - start) * k // 5 for k in range(1, 6)]
        for psnr, ex in zip((10.0, 11.0, 20.0 + i, 30.0 + i, 21.0 + i), points):
            rows.append({"step": ex, "examples": ex, "minutes": 0.0, "psnr": psnr})
        expected.append(21.0 + i)
        start = end
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"rollback": "face"}) + "\n")
    table = rc.phase_table(rc.read_log(log), total)
    assert [t[0] for t in table] == [1, 2, 3, 4, 5, 6]
    assert [t[2] for t in table] == expected
    assert [t[3] for t in table[1:]] == [1.0] * 5 and math.isnan(table[0][3])   # the first phase has no gain
    assert rc.main([str(log)]) == 0


def test_a_log_without_progress_lines_or_with_a_broken_line_is_named(tmp_path):
    rc = _run_curve()
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"rollback": "body"}) + "\n")
    with pytest.raises(SystemExit, match="empty.jsonl: no progress lines"):
        rc.read_log(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"psnr": 1, "examples": 2}\n{"psnr": \n')
    with pytest.raises(SystemExit, match="broken.jsonl:2: not a JSON line"):
        rc.read_log(broken)


def test_it_reads_the_log_a_real_run_writes(tmp_path):
    """The key names it reads are the loop's (a tiny CPU run, as in tests/test_distill.py)."""
    from test_distill import TINY, FakeTeacher, _image, _tiny_student

    from kyara.distill import distill
    from kyara.distill.checkpoint import LOG_NAME

    distill(_image(), FakeTeacher(), replace(TINY, examples=6), out_dir=tmp_path, progress=False, student=_tiny_student())
    rc = _run_curve()
    rows = rc.read_log(tmp_path / LOG_NAME)
    assert rows[-1]["examples"] == 6
    assert rc.phase_table(rows, 6)[-1][0] == 6
    # the loop writes the plan beside the progress, so a cut-off run's log says where in it the run stopped
    assert all(r["planned_examples"] == 6 for r in rows)


def test_an_unfinished_run_is_marked_and_its_unreached_phases_left_empty(tmp_path, capsys):
    rc = _run_curve()
    total = 1000
    rows = [{"step": ex, "examples": ex, "planned_examples": total, "minutes": 0.0, "psnr": 20.0 + ex / 100}
            for ex in range(20, 460, 20)]           # cut at 44 % of the plan: phases 1–3 done (to 0.40), 4 not
    log = tmp_path / "work" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert rc.main([str(log)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == f"{tmp_path.name} (unfinished: 440 of 1,000 examples)"
    assert all(c != "—" for c in cells[2:5]) and cells[5:] == ["—"] * 3
    # phase 3 ends at 0.40 of the plan: the median of its last three evaluations (360, 380, 400 examples)
    assert cells[4].startswith("23.80")
