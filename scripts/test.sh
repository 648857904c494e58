#!/usr/bin/env bash
# Set up, then run the linter and the whole test suite. Tests that need ../shared (real
# CIFAR-10/MNIST) or a headless Chromium skip with a reason when those are absent; as root,
# Chromium is installed from Debian's packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium for the report's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[test] could not install chromium; the browser test will skip"
fi
export PATH="$PWD/.venv/bin:$PATH"
ruff check mapd tests
pytest -q -rs "$@"
