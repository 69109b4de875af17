#!/usr/bin/env bash
# Fast tier: the unit and contract tests (every ledger, object-store and online-store backend against
# real PostgreSQL/Redis and the storage emulators, but no Dask clusters, daemons or quickstart
# projects). Under 2 minutes on an idle 2-core machine; ./scripts/test.sh runs everything.
#
# The two tiers run side by side, one pytest each (much of their time is spent waiting on servers,
# subprocesses and lease expiry, so two cores overlap them well): the unit tier's output shows as it
# runs, the contract tier's follows when both are done. SKYFEAST_TEST_JOBS=1 runs them one after the
# other in a single pytest. Extra arguments go to both pytest runs (e.g. -k ledger, -x, --lf).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" test
cd "$ROOT"

if [ "${SKYFEAST_TEST_JOBS:-2}" = "1" ]; then
  exec python -m pytest -q --durations=10 tests/unit tests/contract "$@"
fi

log="$(mktemp -t skyfeast-contract-XXXXXX.log)"
# the contract shard keeps its own cache, so that --lf/--ff work for both shards
python -m pytest -q --durations=5 -o cache_dir=.pytest_cache/contract-shard tests/contract "$@" >"$log" 2>&1 &
contract_pid=$!
trap 'kill "$contract_pid" 2>/dev/null || true; rm -f "$log"' EXIT

set +e
python -m pytest -q --durations=5 tests/unit "$@"
unit_status=$?
wait "$contract_pid"
contract_status=$?
set -e

echo
echo "==================================== tests/contract ===================================="
cat "$log"

# 5 = no tests collected: fine for one shard when the arguments select tests of the other only
if [ "$unit_status" -eq 5 ] && [ "$contract_status" -eq 5 ]; then exit 5; fi
[ "$unit_status" -eq 5 ] && unit_status=0
[ "$contract_status" -eq 5 ] && contract_status=0
[ "$unit_status" -eq 0 ] && [ "$contract_status" -eq 0 ] && exit 0
echo "scripts/test-fast.sh: unit tier exited $unit_status, contract tier exited $contract_status" >&2
[ "$unit_status" -ne 0 ] && exit "$unit_status"
exit "$contract_status"
