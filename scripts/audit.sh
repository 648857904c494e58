#!/usr/bin/env bash
# Set up, then run the MAP-D audit on the embedded default data set (scikit-learn's digits)
# with config/config.yaml, and print where the report is. Extra arguments go to Snakemake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --profile profiles/default "$@"
echo
echo "Report: $PWD/results/report/index.html"
