#!/usr/bin/env bash
# Create the project's virtual environment (.venv) and install mapd with everything it needs.
# Idempotent: re-running only installs what changed. Needs Python 3.11+ on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mapd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  echo "[setup] installing torch, torchvision and mapd (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # the pinned pair; pip picks the CUDA build that also runs on CPU
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e ".[pipeline,dev]"
  touch "$stamp"
fi
