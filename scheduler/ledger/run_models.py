"""Ledger record of the model versions a model-group run scores with, and of each model's outcome.

A group's selector (names, prefix, tag, at an alias) is resolved once, at the run's first
attempt, and the versions are pinned here (``pin_models``): every later attempt, on any
provider, scores with exactly these versions, even if an alias moved meanwhile.  When the run
ends, each model is marked ``written`` or ``failed`` with its error (``finish_models``).

This is how "which model version scored this customer at 10:00?" is answered: the row's
version-set field (see :func:`skyfeast.featurestore.models.groups.set_id`) names the set, and
``run_models`` of the window's run lists its versions.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from skyfeast.scheduler.ledger.schema import run_models_t


class RunModelBook:
    """Mixed into :class:`skyfeast.scheduler.ledger.Ledger` (uses its ``engine``)."""

    engine: sa.Engine

    def pin_models(self, run_id: int, versions: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
        """Pin ``(model, version, sha256)`` for ``run_id`` unless pinned already; returns what is pinned
        (an earlier attempt's pins win: a failed-over attempt scores with the same versions)."""
        with self.engine.begin() as conn:
            have = conn.execute(sa.select(sa.func.count()).select_from(run_models_t)
                                .where(run_models_t.c.run_id == run_id)).scalar_one()
            if not have and versions:
                try:
                    with conn.begin_nested():
                        conn.execute(run_models_t.insert(), [
                            {"run_id": run_id, "model": m, "version": v, "checksum": c} for m, v, c in versions])
                except IntegrityError:
                    pass  # another attempt pinned first: its pins are read back below
        return [(m, v, c) for m, v, c, *_ in self.run_models(run_id)]

    def run_models(self, run_id: int) -> list[tuple[str, int, str, str | None, str | None]]:
        """``(model, version, sha256, outcome, error)`` pinned for ``run_id``, by model name."""
        t = run_models_t
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(t.c.model, t.c.version, t.c.checksum, t.c.outcome, t.c.error)
                .where(t.c.run_id == run_id).order_by(t.c.model))]

    def fail_models(self, run_id: int, errors: dict[str, str]) -> None:
        """Record models of ``run_id`` that failed (kept across attempts: a resumed attempt knows them)."""
        if not errors:
            return
        t = run_models_t
        with self.engine.begin() as conn:
            for model, err in errors.items():
                conn.execute(t.update().where(t.c.run_id == run_id, t.c.model == model, t.c.outcome.is_(None))
                             .values(outcome="failed", error=err[:2000]))

    def finish_models(self, run_id: int) -> None:
        """Once the run published: every pinned model not marked failed was written."""
        t = run_models_t
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.run_id == run_id, t.c.outcome.is_(None)).values(outcome="written"))

    def model_runs(self, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """run id → its pinned models as dicts (for ``runs --json`` and the API)."""
        if not run_ids:
            return {}
        t = run_models_t
        out: dict[int, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(t).where(t.c.run_id.in_(run_ids)).order_by(t.c.run_id, t.c.model)):
                out.setdefault(r.run_id, []).append(
                    {"model": r.model, "version": r.version, "sha256": r.checksum, "outcome": r.outcome,
                     "error": r.error})
        return out
