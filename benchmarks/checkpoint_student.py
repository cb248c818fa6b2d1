"""Write the student of a distillation checkpoint as a .kyara file, e.g. a GPU run cut off before its end, to
evaluate it anywhere (`kyara eval FILE.kyara`). The file's metrics say `complete: false` and the checkpoint's step.

    python benchmarks/checkpoint_student.py WORK_DIR/checkpoint.safetensors IMAGE.png OUT.kyara

IMAGE.png: the run's character image (the checkpoint keeps no image). With a weight average in the checkpoint
(--ema-decay), the average is written, as the finished run would."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kyara.character import save_kyara
from kyara.distill.config import DistillConfig
from kyara.distill.ema import WeightAverage
from kyara.distill.loop import load_checkpoint
from kyara.image import load_image
from kyara.student import Student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("image")
    ap.add_argument("output")
    ap.add_argument("--teacher", default="tha3/separable_float", help="teacher name stored in the file")
    args = ap.parse_args()

    tensors, meta = load_checkpoint(Path(args.checkpoint))
    config = DistillConfig.from_json(meta["config"])
    student = Student()
    student.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
    if "region" in tensors:
        student.set_region(tensors["region"].bool())
    step = int(meta["step"])
    if config.ema_decay:
        average = WeightAverage(student.named_parameters(), config.ema_decay, updates=step)
        average.load(tensors)
        average.copy_to_weights()
    student.eval()
    metadata = {"distill": json.loads(meta["config"]), "metrics": {
        "steps": step, "examples": step * config.batch_size, "complete": False,
        "wall_seconds": round(float(meta.get("elapsed_s", 0)), 1), "from_checkpoint": True}}
    image = load_image(args.image)
    save_kyara(args.output, Path(args.image).stem, image, student, args.teacher, metadata,
               image_png=Path(args.image).read_bytes())
    print(f"wrote {args.output}: step {step}, {float(meta.get('elapsed_s', 0)) / 60:.2f} min of the run")


if __name__ == "__main__":
    main()
