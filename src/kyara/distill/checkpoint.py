"""A run's state on disk: its checkpoint (student, optimizers, weight average, guard, mask, region, the
run's own seconds; safetensors, written atomically), its log of held-out PSNR against time, and the weights
of another student that a warm start (--init-from) begins from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kyara.distill.config import DistillConfig
from kyara.distill.ema import WeightAverage
from kyara.distill.guard import DivergenceGuard
from kyara.errors import KyaraError
from kyara.image import atomic_write_bytes
from kyara.student import Student

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "log.jsonl"


def drop_log_records_after(log_path: Path, step: int) -> None:
    """Keep only the log records of steps <= step (the checkpoint's): a run stopped between checkpoints had
    logged steps that its resumption replays, which would otherwise appear twice. A line cut short by the
    kill is dropped too. Rewritten atomically, and only when something is dropped."""
    if not log_path.exists():
        return
    lines = log_path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write_bytes(log_path, "".join(line + "\n" for line in kept).encode("utf-8"))


def optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            tensors[f"{name}.{idx}.{key}"] = value.detach().cpu().contiguous() if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"], "keys": sorted(state["state"].keys())}


def load_optimizer_state(name: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict, device) -> None:
    state = {}
    prefix = name + "."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[field] = value.to(device) if field != "step" else value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, student: Student, face_opt, body_opt, step: int, config: DistillConfig,
                    mask: torch.Tensor, elapsed: float, region: torch.Tensor | None = None,
                    loss_scales: list[float] | None = None, average: WeightAverage | None = None,
                    guard: DivergenceGuard | None = None, teacher_s: float = 0.0) -> None:
    """elapsed and teacher_s: the run's own seconds up to this step, all its sessions (a resumed session's
    start is not the run's)."""
    from safetensors.torch import save as st_save

    tensors = {f"student.{k}": v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    tensors["mask"] = mask.detach().cpu().contiguous()
    if region is not None:
        tensors["region"] = region.detach().cpu().to(torch.uint8).contiguous()
    face_t, face_m = optimizer_tensors("face_opt", face_opt)
    body_t, body_m = optimizer_tensors("body_opt", body_opt)
    tensors.update(face_t)
    tensors.update(body_t)
    if average is not None:
        tensors.update(average.tensors())
    meta = {"step": str(step), "config": config.to_json(), "face_opt": json.dumps(face_m),
            "body_opt": json.dumps(body_m), "elapsed_s": f"{elapsed:.3f}",
            "teacher_s": f"{teacher_s:.3f}", "format": "kyara-distill-checkpoint"}
    if loss_scales:
        meta["loss_scales"] = json.dumps(loss_scales)
    if guard is not None:
        meta["guard"] = json.dumps(guard.state())
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_checkpoint(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise KyaraError(f"{path}: cannot read checkpoint ({e})") from None
    if meta.get("format") != "kyara-distill-checkpoint":
        raise KyaraError(f"{path}: not a kyara distillation checkpoint")
    return tensors, meta


def donor_weights(config: DistillConfig, colour: str) -> dict[str, dict[str, torch.Tensor]]:
    """config.init_from's student weights for a warm start: {"body_morpher": state[, "face_morpher": state]}
    (config.init_networks), checked against the official architecture. The donor must have learned in the
    same colour convention as this run's teacher (straight for THA3, premultiplied for THA4)."""
    from kyara.character import SAMPLE_CHARACTER, CharacterFileError, load_character

    source = f"--init-from {config.init_from}"
    try:
        donor = load_character(SAMPLE_CHARACTER if config.init_from == "sample" else config.init_from)
    except CharacterFileError as e:
        raise KyaraError(f"{source}: {e}") from None
    if not donor.is_student:
        raise KyaraError(f"{source}: not a distilled character (no student weights to start from)")
    donor_colour = "premultiplied" if donor.premultiplied else "straight"
    if donor_colour != colour:
        raise KyaraError(f"{source}: its student learned {donor_colour} colour, this run's teacher works in "
                         f"{colour} colour; start from a student of the same teacher family")
    parts = ("body_morpher",) if config.init_networks == "body" else ("face_morpher", "body_morpher")
    return {part: {k: v.float() for k, v in getattr(donor.poser, part).state_dict().items()} for part in parts}


def load_donor_weights(student: Student, weights: dict[str, dict[str, torch.Tensor]], source: str) -> None:
    """Copy donor_weights into `student`; a clear error if its architecture differs (a custom `student`)."""
    from kyara.character import CharacterFileError, check_state_dict

    for part, state in weights.items():
        module = getattr(student, part)
        try:
            check_state_dict(module, state, f"--init-from {source} ({part})")
        except CharacterFileError as e:
            raise KyaraError(f"{e} (this run's student has another architecture)") from None
        module.load_state_dict(state, strict=True)
