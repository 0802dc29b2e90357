#!/usr/bin/env bash
# The README's first command: install bertcurve if needed, then run the demo study
# (built-in corpus -> data -> ~5-minute CPU training -> analysis -> figures -> report).
source "$(dirname "$0")/_env.sh"
exec "$PY" -m bertcurve study --out "${1:-studies/demo}" "${@:2}"
