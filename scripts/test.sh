#!/usr/bin/env bash
# The test suite (pytest, in two processes); creates .venv when missing. Extra arguments go to pytest, e.g.
# -k dataset, -m "not slow" (the inner loop), -n 0 (one process).
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest -n 2 "$@"
