#!/usr/bin/env bash
# The test suite (pytest, in three processes); creates .venv when missing. Extra arguments go to pytest, e.g.
# -k dataset, -m "not slow" (the inner loop), -n 0 (one process).
set -euo pipefail
source "$(dirname "$0")/env.sh"
# One compute thread per worker: two workers each using torch's default (a thread per core) oversubscribe two cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Three workers on two cores: while one waits on a subprocess (a `yolo` command, a signal test), two compute
# (427 tests: 275 s with three, 353 s with two).
python -m pytest -n 3 "$@"
