"""Ledger record of the actions taken through the daemon's HTTP API (the audit trail).

One row per action request that passed authentication, accepted or refused (an
unknown job, a window off the schedule, ...): what was asked, of what, with which
parameters, from which address, by whom (``token`` or ``loopback``), and how it
ended. Rows are only ever appended. The caller strips secrets from ``params``;
nothing here knows which keys are secret. Unfenced, like cordons: an operator's
action is recorded whichever daemon of an HA pair received it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from skyfeast.scheduler.ledger.schema import actions_t

OUTCOMES = ("accepted", "refused", "failed")
MAX_LIMIT = 1000


class ActionBook:
    """Mixed into :class:`skyfeast.scheduler.ledger.Ledger` (uses its ``engine``)."""

    engine: sa.Engine

    def record_action(self, action: str, target: str, params: dict[str, Any], *, source: str | None, actor: str,
                      outcome: str, error: str | None = None) -> int:
        """Append one action (one statement); returns its id. ``outcome`` is one of :data:`OUTCOMES`."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        values = {"at": datetime.now(timezone.utc), "action": action[:32], "target": str(target)[:256],
                  "params": json.dumps(params, default=str, sort_keys=True), "source": (source or None) and source[:64],
                  "actor": actor[:32], "outcome": outcome, "error": None if error is None else error[:2000]}
        with self.engine.begin() as conn:
            return int(conn.execute(actions_t.insert().values(**values)).inserted_primary_key[0])

    def actions(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest ``limit`` actions (1 to :data:`MAX_LIMIT`), newest first; ``params`` decoded."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        q = sa.select(actions_t).order_by(actions_t.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [{**r._mapping, "at": r.at.isoformat(), "params": json.loads(r.params)} for r in conn.execute(q)]
