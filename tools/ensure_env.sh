#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv), install what is missing, and install the project
# itself in editable mode (so `import stargal` works from the scripts, bench/ and tests/ without path tricks).
# Usage: source tools/ensure_env.sh [dev]    -> sets STARGAL_PY to the environment's python
set -euo pipefail
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="${STARGAL_VENV:-$_root/.venv}"
_req="$_root/code/requirements.txt"
[ "${1:-}" = "dev" ] && _req="$_root/code/requirements-dev.txt"
if [ ! -x "$_venv/bin/python" ]; then
  echo "setting up the Python environment in $_venv (first run only, a few minutes)" >&2
  "${PYTHON:-python3}" -m venv "$_venv"
fi
_stamp="$_venv/.stargal-$(basename "$_req").sha256"
_want="$(cat "$_root/code/requirements.txt" "$_req" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$_req" >&2
  echo "$_want" > "$_stamp"
fi
# The project, editable, once its pyproject.toml is there (the Docker image's first layer has only the
# requirements); reinstalled when the installed copy points at another checkout.
if [ -f "$_root/pyproject.toml" ] \
  && ! "$_venv/bin/python" -c "import pathlib, sys, stargal; sys.exit(pathlib.Path(stargal.__file__).resolve() != pathlib.Path(sys.argv[1]).resolve())" \
    "$_root/code/stargal/__init__.py" 2>/dev/null; then
  "$_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$_root" >&2
fi
STARGAL_PY="$_venv/bin/python"
export STARGAL_PY
