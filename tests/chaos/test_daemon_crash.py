"""SIGKILL of a daemon mid-run, and of the leader of an HA pair (real PostgreSQL, real Dask)."""

from __future__ import annotations

import math
import time
import warnings
from datetime import datetime, timezone

import pandas as pd
import pytest

from skyfeast.scheduler.ledger import Fenced, Ledger
from tests.chaos.conftest import DaemonProc, chaos_project, wait_for
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.chaos


def _mid_run(ledger: Ledger):
    """A running feature run with at least one chunk written but not all."""
    for r in ledger.runs(job="user_features", status="running", limit=20):
        done = ledger.chunks(r.id)
        if r.partitions and 0 < len(done) < r.partitions:
            return r, done
    return None


def _contiguous_successes(ledger: Ledger, job: str):
    """No window is lost: windows form an unbroken sequence, each one either succeeded or (after
    the final SIGTERM) handed back for the next daemon — queued, interrupted (started, resumable), or
    still running under the lease of the SIGKILLed daemon if no survivor had picked it up yet.
    Runs execute in parallel and resumed ones out of order, so successes need not be a prefix;
    but a handed-back window after the last success must not have written any chunk, or the
    online store would hold part of a newer window than the last successful one."""
    rows = sorted(ledger.runs(job=job, limit=500), key=lambda r: r.window_start)
    assert rows, f"no runs of {job}"
    for a, b in zip(rows, rows[1:]):
        assert a.window_end == b.window_start, f"window lost between {a.window_end} and {b.window_start}"
    statuses = [(r.window_end, r.status) for r in rows]
    assert all(s in ("succeeded", "queued", "interrupted", "running") for _, s in statuses), statuses
    ok = [r for r in rows if r.status == "succeeded"]
    assert len(ok) >= 3, f"too few windows succeeded: {statuses}"
    last_ok = max(r.window_end for r in ok)
    partial = [r.window_end for r in rows if r.status != "succeeded" and r.window_end > last_ok
               and ledger.chunks(r.id)]
    assert not partial, f"windows after the last success were left half-written: {partial}"
    return ok


def _assert_online_equals_fresh_computation(project, last_end):
    from feast import FeatureStore

    events = load_events(project / "data" / "aws")
    expected = expected_features(events, pd.Timestamp(last_end))
    warnings.simplefilter("ignore")
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    users = [int(u) for u in expected.index]
    cols = ["events_1h", "amount_sum_24h", "amount_mean_7d", "events_7d", "repayments_7d"]
    got = store.get_online_features(features=[f"user_features:{c}" for c in cols],
                                    entity_rows=[{"user_id": u} for u in users]).to_dict()
    bad = []
    for i, u in enumerate(users):
        for c in cols:
            a, b = got[c][i], expected.at[u, c]
            if (a is None) != (b is None or (isinstance(b, float) and math.isnan(b))):
                bad.append((u, c, a, b))
            elif a is not None and not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9):
                bad.append((u, c, a, b))
    assert not bad, f"{len(bad)} online values differ from a crash-free computation, e.g. {bad[:5]}"


def _assert_never_ran_twice(ledger: Ledger, killed_wall: datetime) -> None:
    """Per run: at most one successful attempt, and attempts never overlap in time. An attempt
    the kill interrupted (no end recorded) must be followed only by attempts started after the kill."""
    for r in ledger.runs(limit=1000):
        attempts = ledger.attempts(r.id)
        assert sum(a["outcome"] == "succeeded" for a in attempts) <= 1, (r, attempts)
        for a, b in zip(attempts, attempts[1:]):
            boundary = a["ended_at"] or killed_wall.isoformat()
            assert datetime.fromisoformat(b["started_at"]) >= datetime.fromisoformat(boundary), (r.id, a, b)


def _stop_at_window_boundary(ledger: Ledger, daemon: DaemonProc, min_windows: int) -> None:
    wait_for(lambda: len(ledger.runs(job="risk_score", status="succeeded", limit=500)) >= min_windows,
             180, f"{min_windows} successful model runs")
    assert daemon.terminate() == 0


def test_sigkill_mid_run_then_restart_resumes_exactly_once(tmp_path):
    project = tmp_path / "p"
    cfg = chaos_project(project, None)
    ledger = Ledger(f"sqlite:///{project / '.skyfeast' / 'state.db'}")
    first = DaemonProc(cfg, tmp_path / "d1.log")
    try:
        victim, done_before = wait_for(lambda: _mid_run(ledger), 120, "a run caught mid-way")
        first.kill()
        killed_wall = datetime.now(timezone.utc)
    finally:
        first.cleanup()
    second = DaemonProc(cfg, tmp_path / "d2.log")
    try:
        wait_for(lambda: ledger.get_run(victim.id).status == "succeeded", 120, "the interrupted run to be resumed")
        _stop_at_window_boundary(ledger, second, min_windows=3)
    finally:
        second.cleanup()
    resumed = ledger.get_run(victim.id)
    assert resumed.attempts >= 2 and resumed.status == "succeeded"
    # chunks written before the kill were not recomputed: they keep the first attempt's id
    after = ledger.chunks(victim.id)
    assert len(after) == resumed.partitions
    for chunk, stats in done_before.items():
        assert after[chunk]["attempt_id"] == stats["attempt_id"]
    first_attempt = {s["attempt_id"] for s in done_before.values()}
    assert len(first_attempt) == 1
    redone = {c: s["attempt_id"] for c, s in after.items() if c not in done_before}
    assert redone and all(a not in first_attempt and a is not None for a in redone.values()), redone
    _assert_never_ran_twice(ledger, killed_wall)
    feats = _contiguous_successes(ledger, "user_features")
    last_ok = max(r.window_end for r in feats)
    ledger.close()
    _assert_online_equals_fresh_computation(project, last_ok)


def test_ha_pair_standby_takes_over_and_old_leader_is_fenced(tmp_path, pg_url):
    project = tmp_path / "p"
    cfg = chaos_project(project, pg_url)
    ledger = Ledger(pg_url)
    a = DaemonProc(cfg, tmp_path / "a.log")
    b = None
    try:
        wait_for(lambda: (ledger.leader() or {}).get("holder", "").split(":")[1:2] == [str(a.pid)], 60, "A to lead")
        b = DaemonProc(cfg, tmp_path / "b.log")
        wait_for(lambda: len(ledger.runs(job="risk_score", status="succeeded", limit=50)) >= 2, 120, "A's first runs")
        old = ledger.leader()
        a.kill()
        killed_at = time.monotonic()
        killed_wall = datetime.now(timezone.utc)
        wait_for(lambda: (ledger.leader() or {}).get("holder", "").split(":")[1:2] == [str(b.pid)], 30, "B to lead")
        takeover = time.monotonic() - killed_at
        assert takeover <= 15, f"standby took {takeover:.1f}s to take over"
        n = len(ledger.runs(job="risk_score", status="succeeded", limit=500))
        _stop_at_window_boundary(ledger, b, min_windows=n + 2)
    finally:
        a.cleanup()
        if b is not None:
            b.cleanup()
    # a late write from the deposed leader is rejected
    stale = Ledger(pg_url, owner=old["holder"])
    stale.token = old["token"]
    with pytest.raises(Fenced):
        stale.set_last_fires({"user_features": pd.Timestamp("2030-01-01", tz="UTC").to_pydatetime()})
    with pytest.raises(Fenced):
        stale.finish_run(1, status="failed", error="late write")
    stale.close()
    for job in ("user_features", "risk_score"):
        _contiguous_successes(ledger, job)
    _assert_never_ran_twice(ledger, killed_wall)
    owners = {r.owner for r in ledger.runs(limit=500)}
    assert any(f":{b.pid}:" in (o or "") for o in owners)
    ledger.close()
