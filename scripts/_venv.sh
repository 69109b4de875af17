# Sourced by the other scripts: make ./.venv (Python >= 3.11) and install skyfeast into it.
#   usage: source scripts/_venv.sh [EXTRAS]     e.g. EXTRAS=test
# Re-installs only when pyproject.toml or the extras change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "skyfeast needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.skyfeast-install"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS}"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "==> installing skyfeast${EXTRAS:+[$EXTRAS]} into $VENV (first time takes a minute or two)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  set +e
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2>&1 \
    | grep -v -e '^WARNING: Location' -e 'is ignored: it is neither a file nor a directory' \
        -e 'BuildBackendWarning: Editable installation' -e '^ *!!$' -e '^ *\*\*\*\*' -e '^ *$' \
        -e 'Please be careful with folders' -e 'name as your package as they may' -e 'with strategy, WheelFile' >&2
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "pip install failed (exit $status)" >&2; exit 1; }
  "$VENV/bin/python" -c 'import skyfeast.scheduler, skyfeast.featurestore, skyfeast.adapters, feast, distributed' \
    || { echo "install failed" >&2; exit 1; }
  if [ "$EXTRAS" = "test" ]; then
    "$VENV/bin/python" -c 'import pytest, psycopg, psycopg_pool, redis, boto3, s3fs, gcsfs, moto, psutil, mlflow, alembic' \
      || { echo "test dependencies failed to install" >&2; exit 1; }
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
