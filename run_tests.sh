#!/usr/bin/env bash
# The test command: lint with ruff, then the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/ensure_env.sh dev
"$STARGAL_PY" -m ruff check .
"$STARGAL_PY" -m ruff format --check .
"$STARGAL_PY" -m pytest "$@"
