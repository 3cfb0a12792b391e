#!/usr/bin/env bash
# The test suite (pytest); creates .venv when missing. Extra arguments go to pytest, e.g. -k dataset.
set -euo pipefail
source "$(dirname "$0")/env.sh"
python -m pytest "$@"
