"""Ledger schema upgrades: a v1 (or v5, v6, v7, v9) ledger is migrated in place, keeping its rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from skyfeast.featurestore.models import ModelRegistry
from skyfeast.featurestore.models.tables import TABLES
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.ledger.schema import SCHEMA_VERSION

UTC = timezone.utc

V1_DDL = [
    "CREATE TABLE skyfeast_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL)",
    """CREATE TABLE skyfeast_runs (
        id INTEGER PRIMARY KEY, job VARCHAR(128) NOT NULL, window_start TIMESTAMP NOT NULL,
        window_end TIMESTAMP NOT NULL, status VARCHAR(16) NOT NULL, trigger VARCHAR(16) NOT NULL,
        provider VARCHAR(64), owner VARCHAR(128), lease_until TIMESTAMP, created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP, ended_at TIMESTAMP, attempts INTEGER NOT NULL, rows_written BIGINT,
        failure_class VARCHAR(32), error TEXT,
        CONSTRAINT uq_run_window UNIQUE (job, window_start, window_end))""",
    """CREATE TABLE skyfeast_attempts (
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES skyfeast_runs(id) ON DELETE CASCADE,
        number INTEGER NOT NULL, provider VARCHAR(64) NOT NULL, started_at TIMESTAMP NOT NULL,
        ended_at TIMESTAMP, outcome VARCHAR(16), failure_class VARCHAR(32), error TEXT, rows_written BIGINT)""",
    "INSERT INTO skyfeast_meta VALUES ('schema_version', '1')",
    """INSERT INTO skyfeast_runs (id, job, window_start, window_end, status, trigger, provider, created_at,
        started_at, ended_at, attempts, rows_written) VALUES (1, 'user_features', '2026-01-01 00:00:00.000000',
        '2026-01-01 01:00:00.000000', 'succeeded', 'schedule', 'aws', '2026-01-01 01:00:05.000000', '2026-01-01 01:00:05.000000',
        '2026-01-01 01:00:40.000000', 1, 5000)""",
    """INSERT INTO skyfeast_runs (id, job, window_start, window_end, status, trigger, created_at, attempts)
        VALUES (2, 'user_features', '2026-01-01 01:00:00.000000', '2026-01-01 02:00:00.000000', 'failed', 'schedule',
        '2026-01-01 02:00:05.000000', 1)""",
]


def test_v1_ledger_is_migrated_and_keeps_its_runs(ledger_url):
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        for stmt in V1_DDL:
            if engine.dialect.name == "postgresql" and "CREATE TABLE skyfeast_attempts" in stmt:
                stmt = stmt.replace("id INTEGER PRIMARY KEY", "id SERIAL PRIMARY KEY")  # as v1 created it there
            conn.execute(sa.text(stmt))
    engine.dispose()

    ledger = Ledger(ledger_url)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION == 10
        (old,) = [r for r in ledger.runs() if r.id == 1]
        assert (old.status, old.rows_written, old.provider, old.partitions) == ("succeeded", 5000, "aws", None)
        assert old.window_end == datetime(2026, 1, 1, 1, tzinfo=UTC)
        # v2 features work on the migrated ledger
        start, end = datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC)
        rid, how = ledger.claim("user_features", start, end, trigger="manual", lease=timedelta(seconds=30))
        assert (rid, how) == (2, "claimed")
        ledger.set_partitions(rid, 4, '{"common": "01", "bounds": ["7", "9"]}')
        ledger.record_chunk(rid, 0, {"rows_out": 10})
        assert ledger.chunks(rid)[0]["rows_out"] == 10
        # v5: the key-range split is kept beside the chunk count, and fixed by the first caller
        ledger.set_partitions(rid, 2)
        assert ledger.get_run(rid).partitions == 4
        assert ledger.key_ranges(rid) == '{"common": "01", "bounds": ["7", "9"]}'
        assert ledger.join_way(rid) is None  # v10's column, empty for a run that joins nothing
        assert ledger.acquire_leader(None, timedelta(seconds=5)) == 1
        assert ledger.claim("user_features", datetime(2026, 1, 1, tzinfo=UTC), start, trigger="manual",
                            lease=timedelta(seconds=30)) == (None, "succeeded")
        # v4: a success can queue its parts for the reconciler, in the same transaction
        aid = ledger.start_attempt(rid, "gcp")
        assert ledger.finish_success(rid, aid, 10, copy_to_primary=True)
        assert [p["run_id"] for p in ledger.pending_copies()] == [rid]
        ledger.finish_copy(rid, error="primary unreachable")
        assert ledger.pending_copies()[0]["tries"] == 1
        ledger.finish_copy(rid)
        assert ledger.pending_copies() == [] and ledger.copy_states() == {"done": 1}
        # v6: each provider's latest probe
        ledger.record_probe("aws", "healthy", workers=2)
        assert ledger.probes()["aws"]["state"] == "healthy"
        # v7: the model registry
        registry = ModelRegistry(ledger.engine)
        registry.register("churn", artifact_key="models/churn/v1/m.joblib", sha256="0" * 64, size=1, created_by="t")
        assert registry.get("churn").version == 1
    finally:
        ledger.close()
    again = Ledger(ledger_url)  # idempotent: opening a current ledger changes nothing
    try:
        assert again.schema_version() == 10 and len(again.runs()) == 2
    finally:
        again.close()


def test_v5_ledger_gains_the_probe_table_and_keeps_its_rows(ledger_url):
    """The ledger of the previous release (v5: no skyfeast_provider_probes) is upgraded in place."""
    ledger = Ledger(ledger_url)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    rid, _ = ledger.claim("user_features", start, end, trigger="manual", lease=timedelta(seconds=30))
    ledger.cordon("gcp", reason="maintenance")
    ledger.close()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:  # back to what v5 created
        conn.execute(sa.text("DROP TABLE skyfeast_provider_probes"))
        conn.execute(sa.text("DROP TABLE skyfeast_actions"))
        _drop_registry(conn)
        conn.execute(sa.text("UPDATE skyfeast_meta SET value = '5' WHERE key = 'schema_version'"))
    engine.dispose()

    ledger = Ledger(ledger_url)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION
        assert ledger.get_run(rid).status == "running" and "gcp" in ledger.cordons()
        assert ledger.probes() == {}
        ledger.record_probe("aws", "down", error="refused")
        assert ledger.probes()["aws"]["error"] == "refused"
    finally:
        ledger.close()


def _drop_registry(conn: sa.Connection) -> None:
    for table in reversed(TABLES):  # what a ledger before v7 did not have
        conn.execute(sa.text(f"DROP TABLE {table.name}"))


def test_v6_ledger_gains_the_model_registry_and_keeps_its_rows(ledger_url):
    """The ledger of the previous release (v6: no registry tables) is upgraded in place."""
    ledger = Ledger(ledger_url)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    rid, _ = ledger.claim("user_features", start, end, trigger="manual", lease=timedelta(seconds=30))
    ledger.record_probe("aws", "healthy", workers=2)
    ledger.close()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:  # back to what v6 created
        conn.execute(sa.text("DROP TABLE skyfeast_actions"))
        _drop_registry(conn)
        conn.execute(sa.text("UPDATE skyfeast_meta SET value = '6' WHERE key = 'schema_version'"))
        assert not sa.inspect(conn).has_table("skyfeast_models")
    engine.dispose()

    ledger = Ledger(ledger_url)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION == 10
        assert ledger.get_run(rid).status == "running" and ledger.probes()["aws"]["workers"] == 2
        names = set(sa.inspect(ledger.engine).get_table_names())
        assert {t.name for t in TABLES} <= names
        registry = ModelRegistry(ledger.engine)
        assert registry.list_models() == []
        v = registry.register("churn", artifact_key="k", sha256="a" * 64, size=3, created_by="t")
        assert registry.promote("churn", v.version, actor="t").to_version == 1
    finally:
        ledger.close()


def test_v7_ledger_gains_the_action_audit_and_keeps_its_rows(ledger_url):
    """The ledger of the previous release (v7: no skyfeast_actions) is upgraded in place."""
    ledger = Ledger(ledger_url)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    rid, _ = ledger.claim("user_features", start, end, trigger="manual", lease=timedelta(seconds=30))
    ModelRegistry(ledger.engine).register("churn", artifact_key="k", sha256="b" * 64, size=1, created_by="t")
    ledger.close()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:  # back to what v7 created
        conn.execute(sa.text("DROP TABLE skyfeast_actions"))
        conn.execute(sa.text("UPDATE skyfeast_meta SET value = '7' WHERE key = 'schema_version'"))
    engine.dispose()

    ledger = Ledger(ledger_url)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION == 10
        assert ledger.get_run(rid).status == "running"
        assert ModelRegistry(ledger.engine).get("churn").version == 1
        assert ledger.actions() == []
        first = ledger.record_action("cordon", "gcp", {"reason": "quota"}, source="127.0.0.1", actor="loopback",
                                     outcome="accepted")
        second = ledger.record_action("trigger", "nope", {"job": "nope"}, source="::1", actor="token",
                                      outcome="refused", error="unknown job 'nope'")
        assert second > first
        rows = ledger.actions()
        assert [(r["id"], r["action"], r["outcome"], r["error"]) for r in rows] == [
            (second, "trigger", "refused", "unknown job 'nope'"), (first, "cordon", "accepted", None)]
        assert rows[1]["params"] == {"reason": "quota"} and rows[1]["actor"] == "loopback"
        assert datetime.fromisoformat(rows[0]["at"]).tzinfo is not None
        assert ledger.actions(limit=1) == rows[:1]
    finally:
        ledger.close()


def test_v9_ledger_gains_the_join_column_and_keeps_its_chunking(ledger_url):
    """A v9 ledger (no ``join_way``) is upgraded in place: a run resumed from it keeps its chunk count and
    reads as joining no way (a broadcast, the only way before), and new runs record theirs once."""
    ledger = Ledger(ledger_url)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    old, _ = ledger.claim("scores", start, end, trigger="manual", lease=timedelta(seconds=30))
    ledger.set_partitions(old, 4)
    ledger.close()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:  # back to what v9 created
        conn.execute(sa.text("ALTER TABLE skyfeast_runs DROP COLUMN join_way"))
        conn.execute(sa.text("UPDATE skyfeast_meta SET value = '9' WHERE key = 'schema_version'"))
    engine.dispose()

    ledger = Ledger(ledger_url)
    try:
        assert ledger.schema_version() == SCHEMA_VERSION == 10
        assert (ledger.get_run(old).partitions, ledger.join_way(old)) == (4, None)
        new, _ = ledger.claim("scores", end, end + timedelta(hours=1), trigger="manual", lease=timedelta(seconds=30))
        ledger.set_partitions(new, 3, None, "shuffle")
        ledger.set_partitions(new, 5, None, "broadcast")  # fixed by the first caller
        assert (ledger.get_run(new).partitions, ledger.join_way(new)) == (3, "shuffle")
    finally:
        ledger.close()
