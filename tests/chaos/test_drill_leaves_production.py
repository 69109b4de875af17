"""A drill leaves production alone: ``skyfeast drill --mode kill`` on a window the quickstart already
ran leaves the production runs' records, vanilla Feast online reads, the online store's rows (with
their write times), Feast's registry and the offline parts byte-for-byte as they were, while the
drill's own run is recorded as ``drill:<job>`` (shown by ``skyfeast runs --drills``)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.chaos.conftest import drill_project
from tests.integration.conftest import skyfeast

pytestmark = pytest.mark.chaos

USERS = [k * 7919 % 1_000_003 for k in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)]  # as seed.py numbers them
STEPS = ("run started", "fault injected", "detected", "first task elsewhere", "done", "restored", "failback")


def _feast_reads(project: Path) -> str:
    """Vanilla Feast online reads of both feature views, as JSON."""
    from feast import FeatureStore

    warnings.simplefilter("ignore")
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    refs = [f"user_features:{c}" for c in ("events_1h", "amount_sum_24h", "amount_mean_7d", "events_7d",
                                           "purchases_24h")] + ["user_risk:risk_score", "user_risk:model_version"]
    got = store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in USERS]).to_dict()
    return json.dumps(got, sort_keys=True, default=str)


def _online_rows(project: Path) -> list[tuple]:
    """Every row of Feast's SQLite online store, write times included (a rewrite of equal values shows)."""
    con = sqlite3.connect(project / "data" / "online.db")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [(t, *row) for t in tables for row in con.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2')]
    finally:
        con.close()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _snapshot(project: Path, cfg: Path) -> dict:
    runs = skyfeast("runs", "-c", str(cfg), "--json", cwd=project, check=True).stdout
    return {"runs": runs, "feast": _feast_reads(project), "online": _online_rows(project),
            "registry": hashlib.sha256((project / "data" / "registry.db").read_bytes()).hexdigest(),
            "offline": {p: _files(project / "data" / p / "offline") for p in ("aws", "gcp")}}


def test_kill_drill_leaves_production_runs_and_feast_reads_unchanged(tmp_path):
    cfg = drill_project(tmp_path / "p")
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")  # run and drill: the same window
    project = cfg.parent
    skyfeast("run", "-c", str(cfg), "--at", at, cwd=project, check=True, timeout=400)
    before = _snapshot(project, cfg)
    prod = json.loads(before["runs"])["runs"]
    assert {r["job"] for r in prod} == {"user_features", "risk_score"} and all(r["status"] == "succeeded" for r in prod)
    assert any(v is not None for v in json.loads(before["feast"])["events_7d"]), "the production run wrote nothing"

    proc = skyfeast("drill", "-c", str(cfg), "--provider", "aws", "--mode", "kill", "--at", at, cwd=project,
                    timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # production: unchanged, byte for byte
    after = _snapshot(project, cfg)
    assert after["runs"] == before["runs"]
    assert after["feast"] == before["feast"]
    assert after["online"] == before["online"]
    assert after["registry"] == before["registry"]
    assert after["offline"] == before["offline"]
    for p in ("aws", "gcp"):
        assert not list((project / "data" / p).glob("drills/**/*.parquet")), f"staged drill parts left on {p}"

    # the drill's own record: apart, and shown with --drills
    both = json.loads(skyfeast("runs", "-c", str(cfg), "--json", "--drills", cwd=project, check=True).stdout)["runs"]
    drills = [r for r in both if r["job"] == "drill:user_features"]
    assert len(drills) == 1 and len(both) == len(prod) + 1
    d = drills[0]
    assert d["trigger"] == "drill" and d["status"] == "succeeded" and d["provider"] == "gcp"
    assert d["window_start"] == prod[0]["window_start"] and d["window_end"] == prod[0]["window_end"]
    assert d["attempt_log"][0]["provider"] == "aws" and d["attempt_log"][0]["outcome"] == "failed"

    # the readable report (stdout) and one progress line per step (stderr)
    assert proc.stdout.startswith("drill kill of aws: PASSED"), proc.stdout
    for field in ("recorded as  run", "drill:user_features", "published    nothing", "detection", "SLO <= 2 s: ok",
                  "completed on gcp", "8/8 chunks", "0 duplicate, 0 lost", "failback after"):
        assert field in proc.stdout, (field, proc.stdout)
    assert "{" not in proc.stdout, "a dict dump, not a report"
    # a wait of more than a couple of seconds says what it waits for, on a line of its own
    steps = [line for line in proc.stderr.splitlines() if line.startswith("drill: ") and " waiting for " not in line]
    assert [next((s for s in STEPS if s in line), line) for line in steps] == list(STEPS), proc.stderr
