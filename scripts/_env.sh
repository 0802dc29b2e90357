# Sourced by demo.sh and test.sh: find or make a Python environment and install
# bertcurve into it (idempotent: a second run installs nothing new).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CI:-}" ]; then
    # Outside a virtual environment, use (or make) ./.venv rather than touching system Python.
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    PY="$ROOT/.venv/bin/python"
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "bertcurve needs Python 3.10+"'
# A plain `pip install torch` pulls a multi-GB CUDA build; the CPU build is enough here.
# Users with a GPU install their own torch first and this step is skipped.
"$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
stamp=".venv-stamp-$(cat pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha1(sys.stdin.buffer.read()).hexdigest()[:12])')"
if ! "$PY" -c 'import bertcurve' 2>/dev/null || [ ! -e "build/$stamp" ] || [ -n "${BERTCURVE_EXTRAS:-}" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check -e ".[${BERTCURVE_EXTRAS:-test}]"
    mkdir -p build && touch "build/$stamp"
fi
