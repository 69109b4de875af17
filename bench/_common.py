"""What the end-to-end benches share: their day, their Feast repo, reading back the online store, the
daemon benches' claim timer and jump clock.

``bench/materialize.py`` and ``bench/seed_day.py`` both build a throw-away Feast
repo (file offline store, one online store, entity ``user`` keyed by ``user_id``,
one feature view over a parquet source), then check what a run stored by counting
entities in the online store and remove their Redis keys afterwards.  Imported by
the scripts as ``_common`` (their own folder is on ``sys.path`` when run as
``python bench/NAME.py``).  Nothing here may run on Dask workers: they cannot
import this module.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DAY = datetime(2026, 3, 1, tzinfo=UTC)  # the (first) day of every bench's events
REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


def online_store(kind: str, *, redis_db: int, database: str | None = None) -> dict:
    """Feast ``online_store`` config for ``sqlite`` (``online.db`` in the repo), ``redis`` (db
    ``redis_db``) or ``postgres`` (``database``, user ``postgres``, trust auth)."""
    if kind == "sqlite":
        return {"type": "sqlite", "path": "online.db"}
    if kind == "redis":
        return {"type": "redis", "connection_string": f"{REDIS[0]}:{REDIS[1]},db={redis_db}"}
    if kind == "postgres":
        return {"type": "postgres", "host": POSTGRES[0], "port": POSTGRES[1], "database": database,
                "user": "postgres", "password": "", "sslmode": "disable"}
    raise ValueError(f"unknown online store {kind!r}")


def make_feast_repo(path: Path, project: str, online: dict, *, view: str, source: str, timestamp_field: str,
                    features: Mapping[str, str], ttl: timedelta) -> None:
    """Create ``path`` as a Feast repo of ``project`` and apply entity ``user`` (join key ``user_id``,
    INT64) and feature view ``view`` over the parquet ``source``; ``features`` maps each feature to
    its ``feast.types`` name (``"Float32"``...).  Feast's apply chatter is swallowed."""
    path.mkdir(parents=True)
    (path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "registry": "registry.db", "provider": "local", "online_store": online,
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
    }))
    import feast.types
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    fv = FeatureView(
        name=view, entities=[user], ttl=ttl,
        source=FileSource(path=source, timestamp_field=timestamp_field),
        schema=[Field(name="user_id", dtype=feast.types.Int64)]
        + [Field(name=name, dtype=getattr(feast.types, dtype)) for name, dtype in features.items()],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        FeatureStore(repo_path=str(path)).apply([user, fv])


def sqlite_entities(db: Path, table: str) -> int:
    """Distinct entities in a Feast SQLite online table."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()[0]


def _redis_keys(client, project: str):
    return client.scan_iter(match=b"*" + project.encode(), count=10_000)  # Feast's keys end with the project


def redis_entities(db: int, project: str) -> int:
    """Entities (hashes) Feast's Redis store holds for ``project``."""
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=db)
    try:
        return sum(1 for _ in _redis_keys(client, project))
    finally:
        client.close()


def clear_redis(db: int, project: str) -> None:
    """Remove every key of ``project`` from Redis db ``db``."""
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=db)
    try:
        keys = list(_redis_keys(client, project))
        for i in range(0, len(keys), 10_000):
            client.unlink(*keys[i : i + 10_000])
    finally:
        client.close()


def time_claims(ledger) -> list[tuple[float, int]]:
    """Wrap ``ledger.claim_many`` (the daemon's batch claim of a tick's due runs) so that each call's
    seconds and number of runs are appended to the returned list."""
    import time

    calls: list[tuple[float, int]] = []
    real = ledger.claim_many

    def timed(items, **kw):
        t = time.perf_counter()
        try:
            return real(items, **kw)
        finally:
            calls.append((time.perf_counter() - t, len(items)))

    ledger.claim_many = timed
    return calls


class JumpClock:
    """A daemon clock (``Daemon(clock=...)``) that runs at real speed, shifted by an offset the bench
    moves: a bench makes a due instant come ``lead`` seconds from now instead of waiting for the wall
    clock to reach it.  The daemon still sleeps and wakes on its own (its loop waits until the clock
    shows the next fire), so the time from due to done is measured as a daemon that was up at that
    instant would live it."""

    def __init__(self, at: datetime, lead: float = 1.5):
        self.lead = lead
        self.offset = at - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump(self, due: datetime) -> datetime:
        """Make ``due`` come ``lead`` seconds from now; returns the real instant at which it does."""
        self.offset = due - timedelta(seconds=self.lead) - datetime.now(UTC)
        return datetime.now(UTC) + timedelta(seconds=self.lead)
