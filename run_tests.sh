#!/usr/bin/env bash
# The test command: lint with ruff, then the test suite on one pytest-xdist worker per core (at most four; a
# test group that shares a session fixture stays on one worker). Extra arguments go to pytest (-n 0: serial).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh dev
"$STARGAL_PY" -m ruff check .
"$STARGAL_PY" -m ruff format --check .
"$STARGAL_PY" -m pytest -n auto --maxprocesses 4 --dist loadgroup "$@"
