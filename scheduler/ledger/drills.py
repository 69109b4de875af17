"""Ledger record of failover drills (``skyfeast_drill_reports``), for the HTTP API, the status page
and the metrics.

A drill's row is inserted when it starts (``outcome`` ``running``, with the time by which it
must have ended) and finished once with its report (``passed`` or ``failed``). The ledger only
stores what the drill says: which figures are detection and recovery is the drill's decision
(:mod:`skyfeast.scheduler.drills.drill`). Unfenced, like the audit: a drill is recorded whichever
process ran it (``skyfeast drill``, or a daemon of an HA pair through ``POST /api/drills``).

A drill whose process died (SIGKILL, a host crash) never finishes its row. Such a row is
*abandoned* once its deadline has passed: every read lists it as ``failed`` with
``abandoned: true`` and says why (the stored row is left as it is, so a read never writes), and
:meth:`DrillBook.close_abandoned_drills`, which every new drill calls first, writes that verdict.
A row still ``running`` before its deadline is listed as running, with its start time.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from skyfeast.scheduler.ledger.schema import drill_reports_t

UTC = timezone.utc
OUTCOMES = ("running", "passed", "failed")
MAX_LIMIT = 1000
ABANDONED = "the drill stopped before it reported: its process ended (no report by its deadline {deadline})"


class DrillBook:
    """Mixed into :class:`skyfeast.scheduler.ledger.Ledger` (uses its ``engine`` and ``owner``)."""

    engine: sa.Engine
    owner: str

    def start_drill(self, job: str, provider: str, mode: str, *, deadline: datetime) -> int:
        """Insert a ``running`` row for a drill of ``job`` on ``provider`` that must end by ``deadline``
        (an aware datetime); returns its id. One statement."""
        report = {"job": job, "provider": provider, "mode": mode, "owner": self.owner,
                  "deadline": deadline.astimezone(UTC).isoformat()}
        values = {"job": job[:128], "provider": provider[:64], "mode": mode[:32], "started_at": datetime.now(UTC),
                  "outcome": "running", "report": json.dumps(report)}
        with self.engine.begin() as conn:
            return int(conn.execute(drill_reports_t.insert().values(**values)).inserted_primary_key[0])

    def set_drill_run(self, drill_id: int, run_id: int) -> None:
        """Name the drill's run (job ``drill:<job>``) once it exists, while the drill runs."""
        with self.engine.begin() as conn:
            conn.execute(drill_reports_t.update().where(drill_reports_t.c.id == drill_id)
                         .values(run_id=run_id))

    def finish_drill(self, drill_id: int, report: dict[str, Any], *, outcome: str, detection_s: float | None,
                     recovery_s: float | None, run_id: int | None = None) -> bool:
        """Store the drill's final ``report`` (JSON-able) and its verdict (``passed`` or ``failed``).
        Only a ``running`` row changes (a row closed as abandoned or interrupted keeps that verdict);
        returns whether this one did."""
        if outcome not in OUTCOMES[1:]:
            raise ValueError(f"a finished drill's outcome is passed or failed, not {outcome!r}")
        values: dict[str, Any] = {"ended_at": datetime.now(UTC), "outcome": outcome, "detection_s": detection_s,
                                  "recovery_s": recovery_s, "report": json.dumps(report, default=str)}
        if run_id is not None:
            values["run_id"] = run_id
        q = drill_reports_t.update().where(drill_reports_t.c.id == drill_id, drill_reports_t.c.outcome == "running")
        with self.engine.begin() as conn:
            return conn.execute(q.values(**values)).rowcount == 1

    def drill_reports(self, limit: int = 20, *, now: datetime | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` drills (1 to :data:`MAX_LIMIT`), newest first (:func:`shown` each)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        q = sa.select(drill_reports_t).order_by(drill_reports_t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [shown(r, now) for r in conn.execute(q)]

    def drill_report(self, drill_id: int, *, now: datetime | None = None) -> dict[str, Any] | None:
        """One drill (:func:`shown`), or None."""
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(drill_reports_t).where(drill_reports_t.c.id == drill_id)).first()
        return None if r is None else shown(r, now)

    def latest_drills(self) -> list[dict[str, Any]]:
        """The latest finished drill (passed or failed) of each (provider, mode), as :func:`shown`. One query."""
        t = drill_reports_t
        latest = (sa.select(sa.func.max(t.c.id)).where(t.c.outcome.in_(OUTCOMES[1:]))
                  .group_by(t.c.provider, t.c.mode))
        with self.engine.connect() as conn:
            return [shown(r) for r in conn.execute(sa.select(t).where(t.c.id.in_(latest)).order_by(t.c.id))]

    def close_abandoned_drills(self, now: datetime | None = None) -> list[int]:
        """Mark ``failed`` the ``running`` drills whose deadline has passed (their process is gone);
        returns their ids. Their report keeps what the start recorded, with the reason added."""
        now = now or datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(drill_reports_t).where(drill_reports_t.c.outcome == "running")).all()
            closed = []
            for r in rows:
                d = shown(r, now)
                if not d["abandoned"]:
                    continue
                q = drill_reports_t.update().where(drill_reports_t.c.id == r.id,
                                                   drill_reports_t.c.outcome == "running")
                if conn.execute(q.values(outcome="failed", ended_at=now,
                                         report=json.dumps(d["report"]))).rowcount:
                    closed.append(r.id)
        return closed


def shown(r: Any, now: datetime | None = None) -> dict[str, Any]:
    """A row as the API shows it: times in ISO-8601, ``report`` decoded, and ``abandoned`` (a
    ``running`` row past its deadline, listed as ``failed`` with the reason in ``report.error``)."""
    m = r._mapping
    report = json.loads(m["report"] or "{}")
    outcome, abandoned = m["outcome"], False
    if outcome == "running":
        deadline = report.get("deadline")
        if deadline and datetime.fromisoformat(deadline) < (now or datetime.now(UTC)):
            outcome, abandoned = "failed", True
            report = {**report, "ok": False, "error": ABANDONED.format(deadline=deadline)}
    return {"id": m["id"], "run_id": m["run_id"], "job": m["job"], "provider": m["provider"], "mode": m["mode"],
            "started_at": m["started_at"].isoformat(), "ended_at": m["ended_at"] and m["ended_at"].isoformat(),
            "outcome": outcome, "abandoned": abandoned, "detection_s": m["detection_s"],
            "recovery_s": m["recovery_s"], "report": report}


__all__ = ["ABANDONED", "MAX_LIMIT", "OUTCOMES", "DrillBook", "shown"]
