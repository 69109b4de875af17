"""Ledger bookkeeping of offline outputs that must be copied to the primary storage.

A run that succeeds with any offline part outside the primary provider's
storage (it failed over, or ran elsewhere) is marked ``pending`` in the same
transaction that marks it succeeded, so a crash can never lose the marker.
The reconciler (:mod:`skyfeast.scheduler.run.reconcile`) copies the parts and marks the
run ``done``; a failed copy stays pending with its error and try count.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from skyfeast.scheduler.ledger.schema import offline_copies_t, runs_t


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CopyBook:
    """Mixed into :class:`skyfeast.scheduler.ledger.Ledger` (uses its ``engine`` and ``_write``)."""

    engine: sa.Engine

    @staticmethod
    def mark_copy_pending(conn: sa.Connection, run_id: int) -> None:
        """Inside a caller's transaction: the run's parts need a copy to the primary."""
        conn.execute(offline_copies_t.delete().where(offline_copies_t.c.run_id == run_id))
        conn.execute(offline_copies_t.insert().values(run_id=run_id, state="pending", tries=0, updated_at=_now()))

    def pending_copies(self, limit: int = 50) -> list[dict[str, Any]]:
        """Pending copies of succeeded runs, oldest first."""
        q = (sa.select(offline_copies_t, runs_t.c.job, runs_t.c.window_start, runs_t.c.window_end)
             .join(runs_t, runs_t.c.id == offline_copies_t.c.run_id)
             .where(offline_copies_t.c.state == "pending", runs_t.c.status == "succeeded")
             .order_by(offline_copies_t.c.run_id).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def copy_states(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(offline_copies_t.c.state, sa.func.count())
                                .group_by(offline_copies_t.c.state)).all()
        return {r[0]: int(r[1]) for r in rows}

    def finish_copy(self, run_id: int, *, error: str | None = None) -> None:
        with self._write() as conn:  # type: ignore[attr-defined]
            conn.execute(offline_copies_t.update().where(offline_copies_t.c.run_id == run_id).values(
                state="pending" if error else "done", tries=offline_copies_t.c.tries + 1, error=error,
                updated_at=_now()))
