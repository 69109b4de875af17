"""Ledger record of each provider's latest health probe, for ``skyfeast status``.

One row per provider, overwritten by every recorded probe (an upsert, never a
history). Probes are observations, not decisions: any process that probes (the
leader, a standby, a one-shot ``run``) records them, unfenced, and names itself
in ``by``. Callers keep the write rate down (the health monitor records a
provider at most once per probe interval unless its state changes).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from skyfeast.scheduler.ledger.schema import provider_probes_t


class ProbeBook:
    """Mixed into :class:`skyfeast.scheduler.ledger.Ledger` (uses its ``engine``, ``is_pg`` and ``owner``)."""

    engine: sa.Engine
    is_pg: bool
    owner: str

    def record_probe(self, provider: str, state: str, *, workers: int | None = None, error: str | None = None,
                     at: datetime | None = None) -> None:
        """Store ``provider``'s latest probe result (one statement, insert or overwrite)."""
        values = {"provider": provider, "state": state, "checked_at": at or datetime.now(timezone.utc),
                  "workers": workers, "error": None if error is None else error[:2000], "by": self.owner}
        dialect = sa.dialects.postgresql if self.is_pg else sa.dialects.sqlite
        stmt = dialect.insert(provider_probes_t).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["provider"],
                                          set_={k: stmt.excluded[k] for k in values if k != "provider"})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def probes(self) -> dict[str, dict[str, Any]]:
        """provider → ``{"state", "checked_at" (aware UTC datetime), "workers", "error", "by"}``."""
        with self.engine.connect() as conn:
            return {r.provider: {k: v for k, v in r._mapping.items() if k != "provider"}
                    for r in conn.execute(sa.select(provider_probes_t))}
