"""How drill runs sit in the ledger, apart from production runs.

A drill of job ``J`` is recorded as a run of job ``drill:J`` (trigger ``drill``). The
ledger's idempotency key is ``(job, window)``, so a drill never claims, resumes or
rewrites the production run of the same window, and a production run (daemon,
``run``, ``backfill``) never resumes a drill's. No config can define a job named
``drill:J`` (a job name has no colon), so nothing dispatches one.

Readers of the ledger that list production runs (``skyfeast runs``) leave drill runs
out unless asked: :func:`list_runs`.

Each drill is also one row of the ledger's drill reports (:mod:`skyfeast.scheduler.ledger.drills`),
written by :func:`recorded` from its start (``running``) to its verdict (:func:`verdict`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from skyfeast.scheduler.ledger import PENDING, Ledger, RunRow
from skyfeast.scheduler.ledger.core import DRILL_JOB_PREFIX as PREFIX

log = logging.getLogger("skyfeast.drill")


def drill_job(job: str) -> str:
    """The ledger's job name for drills of ``job``."""
    return PREFIX + job


def is_drill(job: str) -> bool:
    return job.startswith(PREFIX)


def list_runs(ledger: Ledger, *, job: str | None = None, status: str | None = None, limit: int = 50,
              drills: bool = False) -> list[RunRow]:
    """The latest runs, newest window first, as :meth:`Ledger.runs`; drill runs only with ``drills``
    (then ``job`` also matches drills of that job)."""
    if drills:
        rows = ledger.runs(job=job, status=status, limit=limit)
        if job is not None:
            rows += ledger.runs(job=drill_job(job), status=status, limit=limit)
            rows.sort(key=lambda r: (r.window_end, r.id), reverse=True)
        return rows[:limit]
    if job is not None:  # an exact job name: never a drill's
        return ledger.runs(job=job, status=status, limit=limit)
    # the ledger filters by exact job only: ask for more until enough production runs are found
    n = limit
    while True:
        rows = ledger.runs(status=status, limit=n)
        kept = [r for r in rows if not is_drill(r.job)]
        if len(kept) >= limit or len(rows) < n:
            return kept[:limit]
        n *= 4


def close_orphans(ledger: Ledger, job: str, lease) -> list[int]:
    """Mark failed the drill runs of ``job`` that a drill process left pending (it was killed):
    a daemon would otherwise pick them up, find no such job in its config and hand them back,
    every poll. Runs another live drill holds (lease not expired) are left alone. Returns their ids."""
    closed = []
    for r in ledger.runs(job=drill_job(job), limit=1000):
        if r.status not in PENDING:
            continue
        rid, _ = ledger.claim(r.job, r.window_start, r.window_end, trigger="drill", lease=lease)
        if rid is not None:
            ledger.finish_run(rid, status="failed", failure_class="infrastructure",
                              error="the drill that started this run stopped before it finished")
            closed.append(rid)
    return closed


def verdict(report: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(outcome, detection seconds, recovery seconds) of a finished drill's report.

    * ``passed`` when the report is ``ok`` (the run completed elsewhere, every SLO held, no
      duplicate window, not blocked until the fault was lifted, not cancelled), else ``failed``;
    * **detection**: the fault until this process saw it (the provider's circuit opened, or an
      attempt on it failed): ``detection_s``;
    * **recovery**: the fault until work was done again, on another provider (the first chunk
      finished there): ``first_task_on_new_provider_s``. Restore and failback times stay in the
      report: they measure when the drill lifted its fault and the failback settings, not failover.

    Either time is None when it did not happen."""
    return ("passed" if report.get("ok") else "failed", report.get("detection_s"),
            report.get("first_task_on_new_provider_s"))


def recorded(ledger: Ledger, plan, drill: Callable[[Callable[[int], None]], dict[str, Any]],
             drill_id: int | None, deadline_s: float) -> dict[str, Any]:
    """Run ``drill(on_run)`` with its row in the ledger's drill reports, and return its report
    (with ``drill_id``). The row is ``drill_id`` (already ``running``) or a new one that must end
    within ``deadline_s``; ``on_run(run_id)`` names the drill's run there. Whatever ``drill``
    raises (interrupts included) finishes the row ``failed`` with the error, then propagates.
    Drills that other processes abandoned are closed first. Bookkeeping failures are logged,
    never raised: the drill's own outcome matters more than its record."""
    try:
        ledger.close_abandoned_drills()
    except Exception as exc:  # noqa: BLE001 - bookkeeping
        log.warning("cannot close abandoned drill reports: %s", exc)
    if drill_id is None:
        drill_id = ledger.start_drill(plan.job.name, plan.provider, plan.mode,
                                      deadline=datetime.now(timezone.utc) + timedelta(seconds=deadline_s))

    def on_run(run_id: int) -> None:
        try:
            ledger.set_drill_run(drill_id, run_id)
        except Exception as exc:  # noqa: BLE001 - bookkeeping
            log.warning("drill %s: cannot record its run %s: %s", drill_id, run_id, exc)

    try:
        report = drill(on_run)
    except BaseException as exc:
        failed = {"job": plan.job.name, "provider": plan.provider, "mode": plan.mode, "ok": False,
                  "drill_id": drill_id, "error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}
        _finish(ledger, drill_id, failed, "failed", None, None, None)
        raise
    report["drill_id"] = drill_id
    _finish(ledger, drill_id, report, *verdict(report), report.get("run_id"))
    return report


def _finish(ledger: Ledger, drill_id: int, report: dict[str, Any], outcome: str, detection_s: float | None,
            recovery_s: float | None, run_id: int | None) -> None:
    try:
        ledger.finish_drill(drill_id, report, outcome=outcome, detection_s=detection_s, recovery_s=recovery_s,
                            run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - the row stays running until its deadline, then reads as abandoned
        log.error("drill %s: cannot record its report (%s): %s", drill_id, outcome, exc)
