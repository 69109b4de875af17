"""Tables of the run ledger, and migrations between schema versions.

Version history:

* 1 – runs, attempts, meta.
* 2 – runs gain ``partitions`` and ``cancel_requested``; new tables
  ``skyfeast_chunks`` (resume), ``skyfeast_job_state`` (last dispatched fire,
  for catch-up) and ``skyfeast_leader`` (leader lease + fencing token).
* 3 – ``skyfeast_cordons`` (operators' cordons).
* 4 – ``skyfeast_offline_copies``: runs whose offline parts are (partly) off the
  primary provider's storage, until the reconciler has copied them there.
* 5 – runs gain ``key_ranges`` (JSON): the key-range split of a run whose chunks
  are slices of the online store's key order, kept for resume like ``partitions``.
* 6 – ``skyfeast_provider_probes``: each provider's latest health probe (state,
  time, workers, error, and which process probed), so ``status`` can show it.
* 7 – the model registry's tables (``skyfeast_models``, ``skyfeast_model_versions``,
  ``skyfeast_model_aliases``, ``skyfeast_model_alias_history``), defined in
  :mod:`skyfeast.featurestore.models.tables` on their own metadata.
* 8 – ``skyfeast_actions``: the audit of actions taken through the daemon's HTTP
  API (trigger, cancel, cordon, promote, ...), accepted or refused.
* 9 – ``skyfeast_run_models``: the model versions a model-group run pinned at its
  first attempt (every attempt, on any provider, scores with them) and each model's
  outcome; ``skyfeast_drill_reports``: each drill's report (detection and recovery
  times, chunks by provider) as JSON, kept for the API and the status page.
* 10 – runs gain ``join_way``: how a composed model job's run joins its upstreams
  (``broadcast`` or ``shuffle``), fixed at its first attempt like ``partitions``.  A
  separate column, so that a daemon of an earlier version, which would chunk such a
  run differently, refuses the ledger instead of resuming the run.

``migrate`` upgrades an older ledger in one transaction, and refuses a newer
one; it never drops data.
"""

from __future__ import annotations

from datetime import timezone

import sqlalchemy as sa

from skyfeast.featurestore.models.tables import UTCDateTime
from skyfeast.featurestore.models.tables import create_tables as create_registry_tables

SCHEMA_VERSION = 10
UTC = timezone.utc


metadata = sa.MetaData()

meta_t = sa.Table(
    "skyfeast_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

runs_t = sa.Table(
    "skyfeast_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(128), nullable=False),
    sa.Column("window_start", UTCDateTime, nullable=False),
    sa.Column("window_end", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(64)),
    sa.Column("owner", sa.String(128)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("rows_written", sa.BigInteger),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("partitions", sa.Integer),
    sa.Column("key_ranges", sa.Text),  # JSON of featurestore.partitioning.KeyRanges, or NULL: hash chunks
    sa.Column("join_way", sa.String(16)),  # a composed model job's join (broadcast | shuffle), or NULL
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.UniqueConstraint("job", "window_start", "window_end", name="uq_run_window"),
)
sa.Index("ix_runs_job_end", runs_t.c.job, runs_t.c.window_end)
sa.Index("ix_runs_status_lease", runs_t.c.status, runs_t.c.lease_until)

attempts_t = sa.Table(
    "skyfeast_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("skyfeast_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("outcome", sa.String(16)),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("rows_written", sa.BigInteger),
)

chunks_t = sa.Table(
    "skyfeast_chunks", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("skyfeast_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("attempt_id", sa.Integer),
    sa.Column("rows_in", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_out", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_online", sa.BigInteger, nullable=False, default=0),
    sa.Column("file", sa.Text),
    sa.Column("done_at", UTCDateTime, nullable=False),
)

job_state_t = sa.Table(
    "skyfeast_job_state", metadata,
    sa.Column("job", sa.String(128), primary_key=True),
    sa.Column("last_fire", UTCDateTime, nullable=False),
)

leader_t = sa.Table(
    "skyfeast_leader", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("lease_until", UTCDateTime, nullable=False),
)


cordons_t = sa.Table(
    "skyfeast_cordons", metadata,
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("reason", sa.Text),
    sa.Column("by", sa.String(128)),
    sa.Column("at", UTCDateTime, nullable=False),
)


offline_copies_t = sa.Table(
    "skyfeast_offline_copies", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("skyfeast_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done
    sa.Column("tries", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
sa.Index("ix_copies_state", offline_copies_t.c.state, offline_copies_t.c.run_id)


provider_probes_t = sa.Table(
    "skyfeast_provider_probes", metadata,
    sa.Column("provider", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # a ProviderState value
    sa.Column("checked_at", UTCDateTime, nullable=False),
    sa.Column("workers", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("by", sa.String(128), nullable=False),  # the probing process's ledger owner
)


actions_t = sa.Table(
    "skyfeast_actions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # trigger | cancel | cordon | uncordon | promote | rollback
    sa.Column("target", sa.String(256), nullable=False),  # the job, run id, provider or model acted on
    sa.Column("params", sa.Text, nullable=False),  # JSON of the request's parameters (never a secret)
    sa.Column("source", sa.String(64)),  # the client's address
    sa.Column("actor", sa.String(32), nullable=False),  # token | loopback
    sa.Column("outcome", sa.String(16), nullable=False),  # accepted | refused | failed
    sa.Column("error", sa.Text),
)


run_models_t = sa.Table(
    "skyfeast_run_models", metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("skyfeast_runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),  # pinned at the run's first attempt
    sa.Column("checksum", sa.String(80), nullable=False),
    sa.Column("outcome", sa.String(16)),  # NULL until the run ends; then written | failed
    sa.Column("error", sa.Text),
)


drill_reports_t = sa.Table(
    "skyfeast_drill_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer),  # the drill's run (job ``drill:<job>``), if it got that far
    sa.Column("job", sa.String(128), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),  # the provider the fault was put on
    sa.Column("mode", sa.String(32), nullable=False),  # kill | hang | partition | storage ...
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("outcome", sa.String(16), nullable=False),  # running | passed | failed
    sa.Column("detection_s", sa.Float),
    sa.Column("recovery_s", sa.Float),
    sa.Column("report", sa.Text, nullable=False),  # the drill's JSON report
)


class SchemaTooNew(Exception):
    def __init__(self, found: int):
        self.found = found
        super().__init__(f"schema version {found} is newer than this skyfeast understands ({SCHEMA_VERSION})")


def _v1_to_v2(conn: sa.Connection) -> None:
    cols = {c["name"] for c in sa.inspect(conn).get_columns("skyfeast_runs")}
    if "partitions" not in cols:
        conn.execute(sa.text("ALTER TABLE skyfeast_runs ADD COLUMN partitions INTEGER"))
    if "cancel_requested" not in cols:
        conn.execute(sa.text("ALTER TABLE skyfeast_runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE"))


def _v2_to_v3(conn: sa.Connection) -> None:
    pass  # only a new table, created by create_all below


def _v3_to_v4(conn: sa.Connection) -> None:
    pass  # only a new table, created by create_all below


def _v4_to_v5(conn: sa.Connection) -> None:
    if "key_ranges" not in {c["name"] for c in sa.inspect(conn).get_columns("skyfeast_runs")}:
        conn.execute(sa.text("ALTER TABLE skyfeast_runs ADD COLUMN key_ranges TEXT"))


def _v5_to_v6(conn: sa.Connection) -> None:
    pass  # only a new table, created by create_all below


def _v6_to_v7(conn: sa.Connection) -> None:
    pass  # only the registry's new tables, created below


def _v7_to_v8(conn: sa.Connection) -> None:
    pass  # only a new table, created by create_all below


def _v8_to_v9(conn: sa.Connection) -> None:
    pass  # only new tables, created by create_all below


def _v9_to_v10(conn: sa.Connection) -> None:
    if "join_way" not in {c["name"] for c in sa.inspect(conn).get_columns("skyfeast_runs")}:
        conn.execute(sa.text("ALTER TABLE skyfeast_runs ADD COLUMN join_way VARCHAR(16)"))


MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7, 7: _v7_to_v8,
              8: _v8_to_v9, 9: _v9_to_v10}


def migrate(conn: sa.Connection) -> int:
    """Create or upgrade the schema inside ``conn``'s transaction. Returns the version found (0 = new)."""
    insp = sa.inspect(conn)
    if not insp.has_table("skyfeast_meta"):
        metadata.create_all(conn)
        create_registry_tables(conn)
        conn.execute(meta_t.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        return 0
    found = int(conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one())
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found)
    for v in range(found, SCHEMA_VERSION):
        MIGRATIONS[v](conn)
    metadata.create_all(conn)  # new tables of later versions
    create_registry_tables(conn)  # v7
    if found != SCHEMA_VERSION:
        conn.execute(meta_t.update().where(meta_t.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    return found
