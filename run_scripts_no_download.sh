#!/usr/bin/env bash
# The pipeline without the download stage, on data already in data/ (or --data-dir): 01 alignment,
# 02 preparation, 04 augmentation, 03 model, explain.py, report. Same options as run_scripts.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$root/tools/ensure_env.sh"
STARGAL_PROG="$(basename "$0")" exec "$STARGAL_PY" -m stargal.pipeline --no-download "$@"
