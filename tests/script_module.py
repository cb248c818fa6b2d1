"""Load a repository script (benchmarks/*.py, scripts/*.py: not packages) as a module, for its tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str | Path) -> ModuleType:
    """The module of ROOT/relative, e.g. load_script("benchmarks/run_curve.py"), executed afresh each call."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
