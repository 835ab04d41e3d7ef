#!/usr/bin/env bash
# The whole pipeline: 00 download, 01 alignment, 02 preparation, 04 augmentation, 03 model (the reference's
# order), then explain.py and the PDF report. Stops at the first failing stage and names it; ends with a table
# of wall time and peak memory per stage. Stages skip work that is already current, so a rerun is cheap.
#
#   ./run_scripts.sh --demo                  offline, on the simulated sky (the README's demo)
#   ./run_scripts.sh --demo --small          a tiny sky in a few minutes
#   ./run_scripts.sh --workers 2 --fields 80 103 --epochs 5 ...   options go to every stage that accepts them
#   ./run_scripts.sh --help                  the runner's own options
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$root/tools/ensure_env.sh"
STARGAL_PROG="$(basename "$0")" exec "$STARGAL_PY" -m stargal.pipeline "$@"
