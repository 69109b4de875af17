#!/usr/bin/env bash
# Whole test suite: unit, contract (every backend), integration (real local Dask
# clusters, PostgreSQL) and chaos. Extra arguments go to pytest. ./scripts/test-fast.sh runs the
# unit and contract tiers only (under 2 minutes).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" test
cd "$ROOT"
exec python -m pytest -q --durations=15 "$@"
