"""Write a .kyara from a distillation checkpoint without training further.

    python scripts/checkpoint_to_kyara.py IMAGE.png WORK/checkpoint.safetensors -o OUT.kyara [--name NAME]

For a run whose machine was lost before it finished (the GPU lease ended, a job was killed) when no
GPU is at hand to `kyara distill --resume` it: the student is the checkpoint's, its region the
checkpoint's, and the file's metadata says the run was not complete (steps, examples, minutes).
The image must be the one the run distilled (same PNG bytes are stored). A run with a weight average
(--ema-decay) writes the average, as the finished run would.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kyara.character import save_kyara, student_from_state
from kyara.distill.checkpoint import load_checkpoint
from kyara.distill.config import DistillConfig
from kyara.distill.ema import WeightAverage
from kyara.image import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("checkpoint")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    tensors, meta = load_checkpoint(Path(args.checkpoint))
    config = DistillConfig.from_json(meta["config"])
    # the checkpoint's own shape (its config's --body-widths), strictly loaded
    student = student_from_state({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")},
                                 args.checkpoint)
    if "region" in tensors:
        student.set_region(tensors["region"].bool())
    step = int(meta["step"])
    if config.ema_decay:
        average = WeightAverage(student.named_parameters(), config.ema_decay, updates=step)
        average.load(tensors)
        average.copy_to_weights()
    student.eval()
    examples = step * config.batch_size
    metadata = {"distill": json.loads(config.to_json()), "metrics": {
        "steps": step, "examples": examples, "complete": False,
        "completed_fraction": round(examples / config.examples, 4) if config.examples else None,
        "wall_seconds": round(float(meta.get("elapsed_s", 0)), 1), "gpus": 1,
        "region_fraction": round(float(student.region.float().mean()), 4) if student.region is not None else 1.0,
        "note": "written from a checkpoint by scripts/checkpoint_to_kyara.py (run not finished)"}}
    image = load_image(args.image)
    with torch.no_grad():
        save_kyara(args.output, args.name or Path(args.image).stem, image, student, config.teacher, metadata,
                   image_png=Path(args.image).read_bytes())
    print(f"wrote {args.output}: step {step}, {examples:,} of {config.examples:,} examples")


if __name__ == "__main__":
    main()
