"""Store the CPU-lite student's face plan (issue 15) in a .kyara file, so `--student lite` loads fast.

    python scripts/add_lite.py [FILE.kyara ...] [--out OUT.kyara] [--force]

Without FILE: the bundled sample (src/kyara/data/sample_character.kyara). For each file: load it, find
the movable face pixels and the constant face (kyara.student.lite.movable_face, default LiteConfig; 48
full face evaluations, a few seconds on a CPU), and re-write the file with them added
(kyara.character.resave_kyara: every other tensor and metadata entry kept bit for bit). A file that
already carries a plan fitting its face weights is left alone unless --force. Re-run it after
re-distilling a character (a plan made for other weights is ignored at load). Checks the result by
loading it again: the lite student must pick up the stored plan, equal to the computed one.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def add_lite(path: Path, out: Path, force: bool) -> str:
    from kyara.character import load_character, resave_kyara
    from kyara.student.lite import PLAN_META_KEY, LiteStudent, plan_to_file

    character = load_character(path, device="cpu")
    lite = LiteStudent(character.poser)
    if lite._face_plan is not None and not force and out == path:
        return f"{path}: already carries a lite face plan for these weights ({lite._face_plan.share:.1%} movable); unchanged"
    start = time.perf_counter()
    lite._face_plan = None
    plan = lite.face_plan()
    tensors, meta = plan_to_file(plan)
    resave_kyara(path, out, add_tensors=tensors, add_metadata={PLAN_META_KEY: meta})
    again = LiteStudent(load_character(out, device="cpu").poser)
    stored = again._face_plan
    if stored is None or not torch.equal(stored.mask, plan.mask) or not torch.equal(stored.constant, plan.constant):
        raise SystemExit(f"{out}: the stored face plan did not load back equal; the file was written but is not usable")
    return (f"{out}: lite face plan stored ({plan.share:.1%} of the face box movable, analysis "
            f"{time.perf_counter() - start:.1f} s, file {out.stat().st_size / 2**20:.2f} MiB)")


def main(argv: list[str] | None = None) -> int:
    from kyara.character import SAMPLE_CHARACTER

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, default=[SAMPLE_CHARACTER])
    ap.add_argument("--out", type=Path, default=None, help="write here instead of in place (one input file only)")
    ap.add_argument("--force", action="store_true", help="recompute even when the file already carries a fitting plan")
    args = ap.parse_args(argv)
    if args.out is not None and len(args.files) != 1:
        ap.error("--out takes exactly one input file")
    for path in args.files:
        if path.suffix.lower() != ".kyara":
            ap.error(f"{path}: expected a .kyara file")
        print(add_lite(path, args.out or path, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
