"""Contract suite for the ledger's drill reports (:mod:`skyfeast.scheduler.ledger.drills`), over every
backend, and :func:`skyfeast.scheduler.drills.records.recorded`, which writes them for every drill."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from skyfeast.scheduler.drills.records import recorded, verdict
from skyfeast.scheduler.ledger import Ledger

UTC = timezone.utc
LATER = timedelta(minutes=30)


@pytest.fixture
def ledger(ledger_url):
    led = Ledger(ledger_url, owner="test:1:a")
    yield led
    led.close()


def test_a_drill_row_goes_from_running_to_its_verdict_once(ledger):
    t0 = datetime.now(UTC)
    did = ledger.start_drill("user_features", "aws", "kill", deadline=t0 + LATER)
    row = ledger.drill_report(did)
    assert (row["outcome"], row["abandoned"], row["run_id"], row["ended_at"]) == ("running", False, None, None)
    assert row["report"]["owner"] == "test:1:a" and row["report"]["deadline"] == (t0 + LATER).isoformat()
    assert abs(datetime.fromisoformat(row["started_at"]) - t0) < timedelta(seconds=5)
    ledger.set_drill_run(did, 42)
    assert ledger.drill_report(did)["run_id"] == 42
    report = {"ok": True, "detection_s": 0.4, "first_task_on_new_provider_s": 2.5, "chunks_by_provider": {"gcp": 8}}
    assert ledger.finish_drill(did, report, outcome="passed", detection_s=0.4, recovery_s=2.5)
    # a row has one verdict: a late second finish (an interrupted drill's) changes nothing
    assert not ledger.finish_drill(did, {"ok": False}, outcome="failed", detection_s=None, recovery_s=None)
    row = ledger.drill_report(did)
    assert (row["outcome"], row["detection_s"], row["recovery_s"], row["run_id"]) == ("passed", 0.4, 2.5, 42)
    assert row["report"] == report and row["ended_at"] is not None
    assert ledger.drill_report(did + 1) is None
    with pytest.raises(ValueError):
        ledger.finish_drill(did, {}, outcome="running", detection_s=None, recovery_s=None)


def test_listing_is_newest_first_and_the_latest_finished_per_provider_and_mode(ledger):
    far = datetime.now(UTC) + LATER
    ids = {}
    for key in [("aws", "kill"), ("aws", "kill"), ("gcp", "kill"), ("aws", "hang"), ("aws", "kill")]:
        ids.setdefault(key, []).append(ledger.start_drill("j", *key, deadline=far))
    for n, did in enumerate(ids[("aws", "kill")][:2]):
        ledger.finish_drill(did, {"n": n}, outcome="passed" if n else "failed", detection_s=n + 1.0, recovery_s=None)
    ledger.finish_drill(ids[("gcp", "kill")][0], {}, outcome="passed", detection_s=0.5, recovery_s=3.0)
    listed = ledger.drill_reports(10)
    assert [r["id"] for r in listed] == sorted((i for v in ids.values() for i in v), reverse=True)
    assert [r["id"] for r in ledger.drill_reports(2)] == [r["id"] for r in listed[:2]]
    latest = {(r["provider"], r["mode"]): r for r in ledger.latest_drills()}
    # aws/kill's newest row is still running: the latest *finished* one is its second
    assert set(latest) == {("aws", "kill"), ("gcp", "kill")}
    assert latest[("aws", "kill")]["id"] == ids[("aws", "kill")][1] and latest[("aws", "kill")]["detection_s"] == 2.0
    assert latest[("gcp", "kill")]["recovery_s"] == 3.0
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            ledger.drill_reports(bad)


def test_a_running_drill_past_its_deadline_reads_as_abandoned_until_closed(ledger):
    now = datetime.now(UTC)
    gone = ledger.start_drill("j", "aws", "kill", deadline=now - timedelta(seconds=1))
    alive = ledger.start_drill("j", "aws", "hang", deadline=now + LATER)
    row = ledger.drill_report(gone)
    assert (row["outcome"], row["abandoned"]) == ("failed", True) and "no report by its deadline" in row["report"]["error"]
    assert ledger.drill_report(alive)["outcome"] == "running"
    # a read never writes: the stored row is still running, so the metrics do not count it yet
    assert ledger.latest_drills() == []
    assert ledger.close_abandoned_drills() == [gone]
    assert ledger.close_abandoned_drills() == []
    row = ledger.drill_report(gone)
    assert (row["outcome"], row["abandoned"], row["ended_at"] is not None) == ("failed", False, True)
    assert "no report by its deadline" in row["report"]["error"]
    assert [r["id"] for r in ledger.latest_drills()] == [gone]
    assert ledger.drill_report(alive)["outcome"] == "running"


def _plan(job="user_features", provider="aws", mode="kill"):
    return SimpleNamespace(job=SimpleNamespace(name=job), provider=provider, mode=mode)


def test_recorded_keeps_every_drill_passed_failed_or_raised(ledger):
    def passing(on_run):
        on_run(7)
        assert ledger.drill_reports(1)[0]["outcome"] == "running"  # visible while it runs
        return {"ok": True, "run_id": 7, "detection_s": 0.3, "first_task_on_new_provider_s": 1.9, "restore_s": 4.0}

    rep = recorded(ledger, _plan(), passing, None, 600)
    row = ledger.drill_report(rep["drill_id"])
    assert (row["outcome"], row["run_id"], row["detection_s"], row["recovery_s"]) == ("passed", 7, 0.3, 1.9)
    assert row["report"]["restore_s"] == 4.0

    rep = recorded(ledger, _plan(mode="hang"), lambda on_run: {"ok": False, "detection_s": None,
                                                                "first_task_on_new_provider_s": None}, None, 600)
    assert ledger.drill_report(rep["drill_id"])["outcome"] == "failed"

    def crashing(on_run):
        on_run(8)
        raise RuntimeError("the ledger went away")

    with pytest.raises(RuntimeError):
        recorded(ledger, _plan(mode="partition"), crashing, None, 600)
    row = ledger.drill_reports(1)[0]
    assert (row["outcome"], row["mode"], row["run_id"]) == ("failed", "partition", 8)
    assert row["report"]["error"] == "RuntimeError: the ledger went away"

    def interrupted(on_run):
        raise KeyboardInterrupt

    given = ledger.start_drill("user_features", "gcp", "kill", deadline=datetime.now(UTC) + LATER)
    with pytest.raises(KeyboardInterrupt):
        recorded(ledger, _plan(provider="gcp"), interrupted, given, 600)
    row = ledger.drill_report(given)
    assert (row["outcome"], row["report"]["error"]) == ("failed", "KeyboardInterrupt")
    assert len(ledger.drill_reports(100)) == 4  # the caller's row was used, not a new one


def test_recorded_closes_drills_other_processes_abandoned(ledger):
    gone = ledger.start_drill("user_features", "aws", "kill", deadline=datetime.now(UTC) - timedelta(seconds=1))
    recorded(ledger, _plan(), lambda on_run: {"ok": True}, None, 600)
    assert ledger.drill_report(gone)["outcome"] == "failed" and not ledger.drill_report(gone)["abandoned"]


def test_verdict_names_detection_and_recovery():
    report = {"ok": False, "detection_s": 1.2, "first_task_on_new_provider_s": 6.5, "restore_s": 30.0,
              "failback_s": 2.0}
    assert verdict(report) == ("failed", 1.2, 6.5)
    assert verdict({**report, "ok": True}) == ("passed", 1.2, 6.5)
    assert verdict({"ok": True, "detection_s": None, "first_task_on_new_provider_s": None}) == ("passed", None, None)
