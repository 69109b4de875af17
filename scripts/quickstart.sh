#!/usr/bin/env bash
# The embedded default, end to end, no servers: venv + install, synthetic events,
# `feast apply`, one `skyfeast run --once` on two local Dask clusters, then
# online reads through the plain Feast SDK in a separate process.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT/examples/quickstart"
echo "==> generating synthetic user-behaviour events" >&2
python seed.py "$@"
echo "==> feast apply" >&2
log="$(mktemp)"
(cd feature_repo && feast apply >"$log" 2>&1) || { cat "$log" >&2; exit 1; }
rm -f "$log"
echo "==> registering the model groups' models (register_models.py)" >&2
python register_models.py
skyfeast validate -c skyfeast.yaml
echo "==> skyfeast run --once (user_features; then risk_score and the group scores; then blend)" >&2
skyfeast run -c skyfeast.yaml --once
echo "==> online reads through the plain Feast SDK" >&2
python read_online.py --users 5
