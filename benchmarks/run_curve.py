"""Where in a distillation run the held-out PSNR was gained: per body phase of the run's schedule.

Reads the `log.jsonl` a `kyara distill` run writes in its work dir (one line per progress evaluation: step,
examples, minutes, held-out PSNR on the run's 32 poses) and prints, for each run, the PSNR at the end of each
THA4 body phase (phases as fractions of the run's examples, distill.config.THA4_BODY_PHASES) and the gain
within it. The run's planned examples come from its last line's `planned_examples` (logs since session 38); an
unfinished run is then marked and its phases not reached are left empty. An older log without the field is read
as if it had ended at its last line (say otherwise with --planned-examples N). The per-evaluation PSNR is noisy (32 poses; single evaluations dip
by up to ~4 dB on a phase change), so each phase's end value is the median of its last three evaluations.

    PYTHONPATH=src python benchmarks/run_curve.py RUN/work/log.jsonl [...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kyara.distill.config import THA4_BODY_PHASES  # noqa: E402


def read_log(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{n}: not a JSON line ({e.msg})")
        if "psnr" in row and "examples" in row:
            rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no progress lines (with 'psnr' and 'examples')")
    return rows


def phase_table(rows: list[dict], total: int) -> list[tuple[int, float, float, float]]:
    """[(phase number, end fraction, PSNR at its end (median of its last 3 evaluations), gain in it)]."""
    out, before = [], None
    start = 0.0
    for i, phase in enumerate(THA4_BODY_PHASES, 1):
        inside = [r["psnr"] for r in rows if start < r["examples"] / total <= phase.until + 1e-9]
        start = phase.until
        if not inside:
            continue
        end = statistics.median(inside[-3:])
        out.append((i, phase.until, end, float("nan") if before is None else end - before))
        before = end
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=Path, help="log.jsonl files of distillation runs")
    ap.add_argument("--planned-examples", type=int, default=0,
                    help="the run's total examples, for an unfinished run (default: its last line's)")
    args = ap.parse_args(argv)
    print("| run | steps | " + " | ".join(f"phase {i} (to {p.until:.2f})" for i, p in enumerate(THA4_BODY_PHASES, 1)) + " |")
    print("|---|---|" + "---|" * len(THA4_BODY_PHASES))
    for path in args.logs:
        rows = read_log(path)
        total = args.planned_examples or rows[-1].get("planned_examples") or rows[-1]["examples"]
        # a phase the run did not finish gets no cell: its "end" would be wherever the run was cut
        reached = rows[-1]["examples"] / total
        cells = {i: f"{end:.2f}" + ("" if gain != gain else f" ({gain:+.2f})")
                 for i, until, end, gain in phase_table(rows, total) if until <= reached + 1e-9}
        name = path.parent.parent.name if path.parent.name == "work" else path.stem
        if rows[-1]["examples"] < total:
            name += f" (unfinished: {rows[-1]['examples']:,} of {total:,} examples)"
        print(f"| {name} | {rows[-1]['step']:,} | " + " | ".join(cells.get(i, "—") for i in range(1, len(THA4_BODY_PHASES) + 1)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
