#!/usr/bin/env bash
# Whole test suite: unit, contract (every backend), integration (real local Dask
# clusters, PostgreSQL) and chaos. Extra arguments go to pytest. ./scripts/test-fast.sh runs the
# unit and contract tiers only (under 2 minutes).
#
# SKYFEAST_TEST_JOBS=N (N > 1) runs the tests on N pytest-xdist workers (--dist loadgroup): every
# chaos test on one worker, one at a time, each integration file on one worker, and no drill beside
# an integration test (tests/conftest.py). Each worker has its own PostgreSQL database and quickstart
# templates; Redis keys are per test project. The default is 3 workers (about 12 minutes on a quiet
# 2-core machine, against about 22 serially); SKYFEAST_TEST_JOBS=1 runs one serial pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" test
cd "$ROOT"
jobs="${SKYFEAST_TEST_JOBS:-3}"
if [ "$jobs" = "1" ]; then
  exec python -m pytest -q --durations=15 "$@"
fi
exec python -m pytest -q --durations=15 -n "$jobs" --dist loadgroup "$@"
