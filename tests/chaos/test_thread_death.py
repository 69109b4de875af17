"""A daemon never lives on headless: when one of its threads dies, it logs the traceback and exits
non-zero, and the standby of the HA pair takes over (real PostgreSQL, real Dask)."""

from __future__ import annotations

import time

import pytest

from skyfeast.scheduler.control.liveness import INJECT
from skyfeast.scheduler.ledger import Ledger
from tests.chaos.conftest import DaemonProc, chaos_project, wait_for

pytestmark = pytest.mark.chaos


def _leader_pid(ledger: Ledger) -> str | None:
    holder = (ledger.leader() or {}).get("holder") or ""
    return holder.split(":")[1] if holder.count(":") >= 1 else None


@pytest.mark.parametrize("thread", ["heartbeat"])  # the health monitor's death: tests/unit/test_liveness.py
def test_a_dead_thread_ends_the_daemon_and_the_standby_takes_over(tmp_path, pg_url, thread):
    project = tmp_path / "p"
    cfg = chaos_project(project, pg_url, users=300, per_day=2000)
    ledger = Ledger(pg_url)
    standby = DaemonProc(cfg, tmp_path / "standby.log")
    victim = None
    try:
        wait_for(lambda: _leader_pid(ledger) == str(standby.pid), 60, "the first daemon to lead")
        # the victim starts as standby and leads once the first daemon stops (a health monitor
        # dies at once, leader or not; a run heartbeat only once the victim runs something)
        victim = DaemonProc(cfg, tmp_path / "victim.log", env={INJECT: thread})
        time.sleep(2)
        assert standby.terminate(timeout=120) == 0
        wait_for(lambda: victim.proc.poll() is not None or _leader_pid(ledger) == str(victim.pid), 60,
                 "the victim to lead or die")
        standby = DaemonProc(cfg, tmp_path / "standby2.log")
        code = victim.proc.wait(timeout=150)
        died_at = time.monotonic()
        log = (tmp_path / "victim.log").read_text()
        assert code == 70, log[-3000:]
        assert f"thread {thread} died" in log and "InjectedFault" in log and "Traceback" in log, log[-3000:]
        wait_for(lambda: _leader_pid(ledger) == str(standby.pid), 60, "the standby to take over")
        assert time.monotonic() - died_at < 60
        before = len(ledger.runs(status="succeeded", limit=500))
        wait_for(lambda: len(ledger.runs(status="succeeded", limit=500)) > before, 150, "the standby's runs")
        owners = {r.owner for r in ledger.runs(status="succeeded", limit=500)}
        assert any(f":{standby.pid}:" in (o or "") for o in owners)
    finally:
        standby.cleanup()
        if victim is not None:
            victim.cleanup()
        ledger.close()
