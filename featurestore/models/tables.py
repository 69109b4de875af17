"""Tables of the model registry (SQLAlchemy Core), kept in the ledger's database.

They live on their own :data:`metadata` so this package needs nothing from the
scheduler; the ledger's schema migration (v7) creates them next to its own
tables, so an HA pair sharing a ledger shares the registry too.

* ``skyfeast_models`` – one row per model name;
* ``skyfeast_model_versions`` – immutable versions, numbered 1, 2, ... per model;
* ``skyfeast_model_aliases`` – where each alias (``champion``, ...) points now;
* ``skyfeast_model_alias_history`` – every alias move, append-only (rollback reads it).

Nullable lineage columns (parent version, metrics, training window, data
fingerprint) are there for continual learning (train → gate → promote →
shadow → roll back), which is built on top of this later.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

UTC = timezone.utc


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, returns aware UTC (SQLite has no time zones). The ledger's tables use it too
    (the scheduler may import this layer, not the other way round)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger (UTCDateTime column)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()

models_t = sa.Table(
    "skyfeast_models", metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("tags", sa.JSON),
)

model_versions_t = sa.Table(
    "skyfeast_model_versions", metadata,
    sa.Column("model", sa.String(128), sa.ForeignKey("skyfeast_models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),  # unique (model, version)
    sa.Column("artifact_key", sa.Text, nullable=False),  # key in a provider's object store
    sa.Column("artifact_uri", sa.Text),  # where it was written at registration (for people)
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("flavour", sa.String(32), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),  # input feature names, in order
    sa.Column("outputs", sa.JSON, nullable=False),  # output field names
    sa.Column("parent_version", sa.Integer),  # the version this one was trained from
    sa.Column("metrics", sa.JSON),
    sa.Column("train_start", UTCDateTime),
    sa.Column("train_end", UTCDateTime),
    sa.Column("data_fingerprint", sa.String(128)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),  # cli:<user> or run:<id>
)

model_aliases_t = sa.Table(
    "skyfeast_model_aliases", metadata,
    sa.Column("model", sa.String(128), sa.ForeignKey("skyfeast_models.name"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("moved_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.ForeignKeyConstraint(["model", "version"], ["skyfeast_model_versions.model", "skyfeast_model_versions.version"],
                            name="fk_alias_version"),
)

model_alias_history_t = sa.Table(
    "skyfeast_model_alias_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # the order of moves
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("from_version", sa.Integer),  # None: the alias's first move
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("moved_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.String(128), nullable=False),
)
sa.Index("ix_alias_history", model_alias_history_t.c.model, model_alias_history_t.c.alias, model_alias_history_t.c.id)

TABLES = (models_t, model_versions_t, model_aliases_t, model_alias_history_t)


def create_tables(conn: sa.Connection | sa.Engine) -> None:
    """Create the registry's tables that are missing (the ledger's migration calls this)."""
    metadata.create_all(conn)
