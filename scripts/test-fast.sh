#!/usr/bin/env bash
# Fast tier: the unit and contract tests (every ledger, object-store and online-store backend against
# real PostgreSQL/Redis and the storage emulators, but no Dask clusters, daemons or quickstart
# projects). Under 2 minutes on an idle 2-core machine; ./scripts/test.sh runs everything.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" test
cd "$ROOT"
exec python -m pytest -q --durations=10 tests/unit tests/contract "$@"
