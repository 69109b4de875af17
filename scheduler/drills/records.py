"""How drill runs sit in the ledger, apart from production runs.

A drill of job ``J`` is recorded as a run of job ``drill:J`` (trigger ``drill``). The
ledger's idempotency key is ``(job, window)``, so a drill never claims, resumes or
rewrites the production run of the same window, and a production run (daemon,
``run``, ``backfill``) never resumes a drill's. No config can define a job named
``drill:J`` (a job name has no colon), so nothing dispatches one.

Readers of the ledger that list production runs (``skyfeast runs``) leave drill runs
out unless asked: :func:`list_runs`.
"""

from __future__ import annotations

from skyfeast.scheduler.ledger import PENDING, Ledger, RunRow
from skyfeast.scheduler.ledger.core import DRILL_JOB_PREFIX as PREFIX


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
