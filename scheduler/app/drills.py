"""Drills started over HTTP (``POST /api/drills``): one at a time, in a background thread of the daemon.

A drill takes tens of seconds, so the request only checks it (:mod:`skyfeast.scheduler.drills.plan`:
the provider is the job's preferred one now, no other drill is running), makes its ``running``
row in the ledger's drill reports, and answers with its id; the drill then runs in its own
thread, in the daemon's runtime (its clusters, its health monitor, its runner), through
:func:`~skyfeast.scheduler.drills.drill.run_drill`, the code of ``skyfeast drill``. The dispatch
loop never waits for it. What the drill breaks it breaks for the whole daemon: runs of production
jobs on the drilled provider fail over too (docs/http.md).

At shutdown (:meth:`DrillStarter.close`) a running drill is cancelled: it lifts its fault and
reports within seconds; a row it could not finish is finished ``failed`` here.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from skyfeast.scheduler.errors import Conflict

log = logging.getLogger("skyfeast.drill")
CLOSE_WAIT = 30.0  # seconds close() waits for a cancelled drill to lift its fault and report


class DrillStarter:
    """Starts drills in the daemon's runtime: ``runner`` (its ledger and provider pool too);
    ``metrics`` (optional) is told when a drill ended, so the next scrape shows it."""

    def __init__(self, cfg, runner, metrics=None):
        self.cfg, self.runner, self.metrics = cfg, runner, metrics
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: int | None = None
        self._cancel = threading.Event()

    @property
    def current(self) -> int | None:
        """The id of the drill this daemon is running, or None."""
        with self._lock:
            return self._current if self._thread is not None and self._thread.is_alive() else None

    def start(self, provider: str, mode: str, job: str | None = None, at: str | None = None) -> dict[str, Any]:
        """Check a drill and start it in the background; returns its ``drill_id``, job, window and mode.

        Raises :class:`~skyfeast.scheduler.errors.NotFound` (unknown provider or job),
        :class:`~skyfeast.scheduler.errors.UsageError` (a bad ``at``, a job that cannot fail over) and
        :class:`Conflict` (a drill is running, here or, per the ledger, in another process; the
        provider is not the job's preferred one now; the daemon is stopping)."""
        from skyfeast.scheduler.api.checks import parse_time_arg
        from skyfeast.scheduler.drills.drill import drill_deadline
        from skyfeast.scheduler.drills.plan import check_preferred, plan_drill

        if at is not None:
            parse_time_arg(at, "at")
        plan = plan_drill(self.cfg, provider, mode, job=job, at=at or "now")
        ledger = self.runner.ledger
        with self._lock:
            if self._cancel.is_set():
                raise Conflict("the daemon is stopping; no new drill")
            if self._thread is not None and self._thread.is_alive():
                raise Conflict(f"drill {self._current} is running in this daemon; one drill at a time")
            other = next((d for d in ledger.drill_reports(20) if d["outcome"] == "running"), None)
            if other is not None:
                raise Conflict(f"drill {other['id']} ({other['mode']} of {other['provider']}) is running since "
                               f"{other['started_at']} (by {other['report'].get('owner', '?')}); one drill at a "
                               f"time (a drill whose process died counts until {other['report'].get('deadline')})")
            check_preferred(self.cfg, self.runner.pool, plan, self.runner.ledger)
            deadline = datetime.now(timezone.utc) + timedelta(seconds=drill_deadline(self.cfg))
            drill_id = ledger.start_drill(plan.job.name, plan.provider, plan.mode, deadline=deadline)
            thread = threading.Thread(target=self._run, args=(drill_id, plan, at or "now"),
                                      name="skyfeast-drill", daemon=True)
            self._thread, self._current = thread, drill_id
            thread.start()
        log.info("drill %s started: %s of %s, job %s, window %s", drill_id, plan.mode, plan.provider, plan.job.name,
                 plan.window)
        return {"drill_id": drill_id, "status": "running", "provider": plan.provider, "mode": plan.mode,
                "job": plan.job.name,
                "window": {"start": plan.window.start.isoformat(), "end": plan.window.end.isoformat()}}

    def _run(self, drill_id: int, plan, at: str) -> None:
        from skyfeast.scheduler.drills.drill import run_drill

        try:
            # warm: the job's providers are started first (most are up in a daemon anyway), so the
            # drill measures failover, not a cold cluster start
            report = run_drill(self.cfg, plan.provider, plan.mode, job=plan.job.name, at=at, runner=self.runner,
                               drill_id=drill_id, cancel=self._cancel, warm=True,
                               progress=lambda line: log.info("drill %s: %s", drill_id, line))
            log.info("drill %s %s: detection %s s, first task elsewhere %s s", drill_id,
                     "passed" if report["ok"] else "FAILED", report["detection_s"],
                     report["first_task_on_new_provider_s"])
        except BaseException as exc:  # recorded() finished its row failed; this thread must not die loudly
            log.error("drill %s failed: %s: %s", drill_id, type(exc).__name__, exc)
        finally:
            if self.metrics is not None:
                self.metrics.drills_changed()

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Cancel a running drill and wait up to ``timeout`` seconds for it to lift its fault and
        report; a drill still running then is recorded ``failed`` (the daemon stopped). No new drill
        starts afterwards."""
        self._cancel.set()
        with self._lock:
            thread, drill_id = self._thread, self._current
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive() and drill_id is not None:
            try:
                self.runner.ledger.finish_drill(
                    drill_id, {"ok": False, "drill_id": drill_id, "cancelled": True,
                               "error": "the daemon stopped before the drill finished"},
                    outcome="failed", detection_s=None, recovery_s=None)
            except Exception as exc:  # noqa: BLE001 - the row reads as abandoned after its deadline
                log.error("drill %s: cannot record that the daemon stopped during it: %s", drill_id, exc)


__all__ = ["DrillStarter"]
