"""Exactly-once windows, catch-up policies and resumable backfills (real PostgreSQL, real Dask)."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.app.daemon import Daemon
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.run.runner import Outcome
from tests.integration.conftest import AT, BIN, Spawned, make_project, skyfeast, skyfeast_json, watch_exit

pytestmark = pytest.mark.integration
UTC = timezone.utc


def _small(state: str | None = None, **daemon):
    def edit(cfg):
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        if state:
            cfg["state"] = state
        if daemon:
            cfg["daemon"] = daemon
    return edit


def test_duplicate_triggers_make_one_successful_run(tmp_path, pg_url):
    cfg = make_project(tmp_path / "p", users=300, per_day=2000, edit=_small(pg_url))
    args = [str(BIN / "skyfeast"), "run", "-c", str(cfg), "--job", "user_features", "--at", AT, "--json"]
    procs = [Spawned(args, cfg.parent)
             for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    code, again = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=cfg.parent)
    assert code == 0 and again["runs"][0]["reason"] == "already succeeded"
    code, trig = skyfeast_json("trigger", "-c", str(cfg), "user_features",
                               "--window", "2026-03-02T11:00:00Z/2026-03-02T12:00:00Z", cwd=cfg.parent)
    assert code == 0 and trig["status"] == "succeeded"  # a repeated trigger does not queue a second run
    ledger = Ledger(pg_url)
    try:
        runs = ledger.runs(job="user_features")
    finally:
        ledger.close()
    assert [(r.status, r.attempts) for r in runs] == [("succeeded", 1)]


@pytest.mark.parametrize("policy, expected", [("all", 3), ("latest", 1), ("none", 0)])
def test_catchup_policy_after_downtime(tmp_path, ledger_url, policy, expected):
    """A daemon that was down for 3 fires of an hourly job owes windows per the job's policy."""
    cfg_path = make_project(tmp_path / "p", users=50, per_day=100, days=1, edit=lambda c: (
        c.__setitem__("state", ledger_url), [j.__setitem__("catchup", policy) for j in c["jobs"]]))
    cfg = load_config(cfg_path)
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    ledger = Ledger(cfg.state_url)
    ledger.set_last_fires({j.name: t0 for j in cfg.jobs})  # the previous daemon's last dispatch
    executed: list[tuple[str, datetime]] = []

    def execute(job, window, run_id):
        executed.append((job.name, window.end))
        ledger.finish_run(run_id, status="succeeded", rows=0)
        return Outcome(job.name, window, "succeeded", run_id=run_id)

    now = t0 + timedelta(hours=3, minutes=20)
    daemon = Daemon(cfg, ledger, execute, cancel=threading.Event(), clock=lambda: now)
    threading.Timer(1.5, daemon.stop.set).start()
    daemon.serve()
    ledger.close()
    ends = sorted({e for _, e in executed})
    assert len(ends) == expected
    assert ends == [t0 + timedelta(hours=h) for h in range(4 - expected, 4)]
    assert sorted(n for n, _ in executed) == sorted(["user_features", "risk_score"] * expected)


def test_backfill_48_windows_interrupted_then_resumed(tmp_path):
    def edit(cfg):
        _small(run_lease="4s")(cfg)
        cfg["jobs"][0]["source"]["lookback"] = "2h"
        cfg["jobs"][0]["partitions"] = 2
    cfg = make_project(tmp_path / "p", users=200, per_day=4000, days=3, edit=edit)
    args = ["backfill", "-c", str(cfg), "user_features", "--start", "2026-02-28T12:00:00Z",
            "--end", "2026-03-02T12:00:00Z", "--parallel", "2"]
    proc = Spawned([str(BIN / "skyfeast"), *args, "--json"], cfg.parent)
    ledger = Ledger(f"sqlite:///{cfg.parent / '.skyfeast' / 'state.db'}")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(ledger.runs(status="succeeded", limit=100)) < 8:
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        first_out, first_err = proc.communicate(timeout=120)
        done_before = len(ledger.runs(status="succeeded", limit=100))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, first_err[-2000:]
    assert 8 <= done_before < 48, "the interruption must land mid-backfill"
    # resumed: its report is out before any teardown, and the process then ends at once (its local
    # clusters killed, as `skyfeast run` does; a graceful teardown took seconds)
    got = watch_exit([*args, "--json"], cfg.parent, tmp_path / "resume.stderr", timeout=400)
    report = got.report
    assert got.returncode == 0, report
    assert got.result_to_exit_s < 1.0, f"{got.result_to_exit_s:.2f} s from the report to the exit"
    assert not got.outlived, f"cluster processes outlived skyfeast backfill: {got.outlived}"
    assert report["windows"] == 48 and report["not_started"] == 0
    assert len(report["runs"]) == 48
    skipped = [r for r in report["runs"] if r["status"] == "skipped"]
    assert len(skipped) == done_before and all(r["reason"] == "already succeeded" for r in skipped)
    assert report["counts"].get("succeeded", 0) == 48 - done_before
    rows = ledger.runs(job="user_features", limit=100)
    ledger.close()
    assert len(rows) == 48 and all(r.status == "succeeded" for r in rows)
    ends = sorted(r.window_end for r in rows)
    assert ends[0] == datetime(2026, 2, 28, 13, tzinfo=UTC) and ends[-1] == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert all(b - a == timedelta(hours=1) for a, b in zip(ends, ends[1:]))
    human = skyfeast("runs", "-c", str(cfg), "--status", "succeeded", "--limit", "5", cwd=cfg.parent)
    assert human.returncode == 0 and "succeeded" in human.stdout


SLOW = '''

import time as _time


def slow_features(events, window):
    _time.sleep(3)
    return user_features(events, window)
'''


def _slow_project(tmp_path, timeout: str):
    def edit(cfg):
        _small()(cfg)
        cfg["jobs"][0]["transform"] = "transforms:slow_features"
        cfg["jobs"][0]["timeout"] = timeout
        cfg["jobs"][0]["partitions"] = 4
        cfg["jobs"][0]["retries"] = 2
    cfg = make_project(tmp_path / "p", users=200, per_day=1000, edit=edit)
    with open(cfg.parent / "transforms.py", "a") as fh:
        fh.write(SLOW)
    return cfg


def test_timeout_cancels_dask_work_and_is_not_retried(tmp_path):
    cfg = _slow_project(tmp_path, "2s")
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=cfg.parent)
    assert code == 1
    (run,) = report["runs"]
    assert run["status"] == "failed" and run["failure_class"] == "timeout" and run["attempts"] == 1
    assert "timed out" in run["error"]
    assert run["seconds"] < 30


def test_cancel_command_stops_a_running_run(tmp_path):
    cfg = _slow_project(tmp_path, "10m")
    proc = Spawned([str(BIN / "skyfeast"), "run", "-c", str(cfg), "--job", "user_features", "--at", AT,
                             "--json"], cfg.parent)
    ledger = Ledger(f"sqlite:///{cfg.parent / '.skyfeast' / 'state.db'}")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ledger.runs(status="running"):
            time.sleep(0.2)
        (run,) = ledger.runs(status="running")
        cancel = skyfeast("cancel", "-c", str(cfg), str(run.id), cwd=cfg.parent)
        assert cancel.returncode == 0 and "cancelling" in cancel.stdout
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-1000:]
    final = ledger.get_run(run.id)
    ledger.close()
    assert final.status == "cancelled" and final.failure_class == "cancelled"
    missing = skyfeast("cancel", "-c", str(cfg), "999", cwd=cfg.parent)
    assert missing.returncode == 2 and "no run with id 999" in missing.stderr


def test_shutdown_between_chained_runs_requeues_the_downstream_run(tmp_path, ledger_url):
    """SIGTERM lands after a window's feature run and before its model run: the model run,
    claimed at the tick but never started, goes back to ``queued`` (not left ``running``
    under the lease of a daemon that is gone)."""
    cfg_path = make_project(tmp_path / "p", users=50, per_day=100, days=1,
                            edit=lambda c: c.__setitem__("state", ledger_url))
    cfg = load_config(cfg_path)
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    ledger = Ledger(cfg.state_url)
    ledger.set_last_fires({j.name: t0 for j in cfg.jobs})
    executed: list[str] = []
    daemon = None

    def execute(job, window, run_id):
        executed.append(job.name)
        ledger.start_attempt(run_id, "aws")
        ledger.finish_run(run_id, status="succeeded", rows=0)
        daemon.stop.set()  # the signal arrives while the chain's first run finishes
        return Outcome(job.name, window, "succeeded", run_id=run_id)

    daemon = Daemon(cfg, ledger, execute, cancel=threading.Event(), clock=lambda: t0 + timedelta(hours=1, minutes=5))
    daemon.serve()
    try:
        runs = {r.job: r for r in ledger.runs()}
    finally:
        ledger.close()
    assert executed == ["user_features"]
    assert runs["user_features"].status == "succeeded"
    assert runs["risk_score"].status == "queued" and runs["risk_score"].owner is None
