#!/usr/bin/env bash
# The README's second command: install bertcurve with its test extras if needed, then run the tests.
source "$(dirname "$0")/_env.sh"
exec "$PY" -m pytest "$@"
