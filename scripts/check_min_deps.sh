#!/usr/bin/env bash
# Check that pyproject.toml's lower bounds are true: install every runtime dependency at
# exactly its declared minimum (">=X" becomes "==X") into a throwaway virtual environment,
# install bertcurve itself without dependencies, and run a quick subset of the tests that
# exercises each dependency (model code, tokenizer, data sets, statistics, figures, report,
# export, a short end-to-end training run).
#
#     bash scripts/check_min_deps.sh            # about 3 GB of downloads (torch's CUDA wheels)
#     KEEP=1 bash scripts/check_min_deps.sh     # keep the environment and print its path
#     PYTHON=python3.11 bash scripts/check_min_deps.sh
#     EXTRA_PINS="torch==2.13.0" bash scripts/check_min_deps.sh   # pin something else on top
#
# Not run in CI: it downloads old wheels (PyPI's torch 2.4 is the CUDA build) and takes
# minutes. Run it by hand when you raise or lower a bound, and record the result in
# CHANGELOG.md. Environment: PYTHON (default python3), KEEP, EXTRA_PINS, TESTS (the pytest
# arguments; default below).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bertcurve-min-deps.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; fi

# ">=X" -> "==X" for every [project] dependency (environment markers kept); extras ignored.
PINS="$("$PY" - <<'EOF'
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as handle:
    deps = tomllib.load(handle)["project"]["dependencies"]
for dep in deps:
    spec, _, marker = dep.partition(";")
    m = re.match(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,\s]+)", spec)
    if not m:
        raise SystemExit(f"no '>=' lower bound in dependency {dep!r}")
    print(f"{m.group(1)}=={m.group(2)}" + (f";{marker}" if marker else ""))
EOF
)"
echo "minimum versions:"; echo "$PINS" | sed 's/^/  /'

"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$VPY" -m pip install --quiet $(echo "$PINS" | tr '\n' ' ') ${EXTRA_PINS:-} "pytest>=7" "hypothesis>=6"
"$VPY" -m pip install --quiet --no-deps -e .
echo "installed:"
"$VPY" -m pip list --format=freeze 2>/dev/null \
    | grep -i -E '^(torch|transformers|tokenizers|safetensors|huggingface.hub|datasets|numpy|scipy|statsmodels|matplotlib|jieba|snownlp|tqdm|fonttools|pylopdf-fonts-zh-cn)==' \
    | sed 's/^/  /'

# One test file (or a few tests) per dependency; the whole suite takes minutes more.
DEFAULT_TESTS=(
    tests/training/test_model.py            # torch, transformers (masks, attention registry)
    tests/data/test_vocab.py                # tokenizers
    tests/data/test_corpus.py               # datasets, jieba, snownlp
    tests/curves/test_stats.py              # numpy, scipy, statsmodels
    tests/viz/test_fonts.py                 # matplotlib, the CJK font package
    tests/stages/test_report.py             # fontTools (the embedded font subset)
    tests/stages/test_export.py             # safetensors, huggingface_hub (model card)
    tests/training/test_train.py            # a short training run end to end
)
# shellcheck disable=SC2086
cd "$ROOT" && MPLBACKEND=Agg "$VPY" -m pytest -q -x -p no:cacheprovider ${TESTS:-${DEFAULT_TESTS[*]}}
if [ -n "${KEEP:-}" ]; then echo "environment kept in $WORK/venv"; fi
