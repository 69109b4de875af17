"""``skyfeast materialize`` stores exactly what ``feast materialize`` stores, byte for byte, on mixed types.

Issue 17, must-show 2.  One parquet source holds float32, float64, int64, string
and bool features; nullable float64, int64 (which pandas reads as float64),
string and bool columns; entities whose second or third row is *older* than their
newest and comes after it in the file (late data); equal event times broken by
the created timestamp; rows outside the range.  For every online store the
writer contract covers (SQLite, Redis, PostgreSQL; see
``tests/contract/test_online_writers.py``), vanilla ``FeatureStore.materialize``
fills a reference store, and skyfeast fills the same store kind twice:

* ``skyfeast materialize`` run as a process, which writes this small input in
  the process (``mode: in-process``);
* :func:`skyfeast.featurestore.materialize.materialize` on a real LocalCluster
  (the cluster path: shuffle, partitions written by the workers).

Each must equal the reference: every SQL row, every Redis hash and its TTL.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.contract.test_online_writers import Store, _online_config, _redis

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore")]

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=1)
VIEW = "mixed"
ENTITIES = 1_500
BIN = Path(sys.executable).parent
REDIS_DBS = {"a": 5, "b": 6}
SCHEMA = {"f32": "Float32", "f64": "Float64", "i64": "Int64", "s": "String", "b": "Bool",
          "x_f64": "Float64", "x_i64": "Int64", "x_s": "String", "x_b": "Bool"}


def mixed_rows(rng: np.random.Generator) -> pa.Table:
    """One row per entity, a late (older) row for a fifth of them and a third for some, equal event
    times for a few (the created timestamp decides), rows outside [START, END)."""
    users = rng.permutation(ENTITIES).astype(np.int64) * 104_729 - 2**40
    secs = rng.integers(3_600, 80_000, ENTITIES)
    late = rng.choice(ENTITIES, ENTITIES // 5, replace=False)
    third = late[: ENTITIES // 20]
    tie = rng.choice(np.setdiff1d(np.arange(ENTITIES), late), 30, replace=False)
    outside = rng.choice(ENTITIES, 40, replace=False)
    idx = np.r_[np.arange(ENTITIES), late, third, tie, outside]
    offsets = np.r_[secs, secs[late] - rng.integers(1, 3_000, len(late)), secs[third] - 3_500, secs[tie],
                    rng.choice([-7_200, 90_000], len(outside))]
    n = len(idx)
    created = offsets + rng.integers(1, 600, n)
    at = ENTITIES + len(late) + len(third)
    created[at : at + len(tie)] = secs[tie] + 900  # equal event times: the later-created row is the newer
    base = pd.Timestamp(START).value // 1_000

    def nullable(values, share=0.25):
        return pa.array(values, mask=rng.random(n) < share)

    return pa.table({
        "user_id": pa.array(users[idx]),
        "event_ts": pa.array(base + offsets * 1_000_000, pa.timestamp("us", "UTC")),
        "created_ts": pa.array(base + created * 1_000_000, pa.timestamp("us", "UTC")),
        "f32": pa.array(rng.normal(0, 1e3, n).astype(np.float32)),
        "f64": pa.array(rng.normal(0, 1e9, n)),
        "i64": pa.array(rng.integers(-2**50, 2**50, n)),
        "s": pa.array([f"s-{v}-ü" * int(v % 3) for v in rng.integers(0, 10**6, n).tolist()]),
        "b": pa.array(rng.random(n) < 0.5),
        "x_f64": nullable(rng.normal(size=n)),
        "x_i64": nullable(rng.integers(-10**9, 10**9, n)),
        "x_s": nullable([f"t{v}" for v in rng.integers(0, 999, n).tolist()]),
        "x_b": nullable(rng.random(n) < 0.5),
    })


def make_repo(kind: str, tag: str, root: Path, project: str, data: Path, request) -> Store:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast import types as ft

    repo = root / f"{kind}_{tag}"
    repo.mkdir()
    online = _online_config(kind, tag, request)
    if kind == "redis":  # dbs of their own: the contract suite's pairs use 7 and 8
        online["connection_string"] = online["connection_string"].rsplit("db=", 1)[0] + f"db={REDIS_DBS[tag]}"
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "registry": "registry.db", "provider": "local", "online_store": online,
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
    }))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    fv = FeatureView(name=VIEW, entities=[user], ttl=timedelta(0),
                     source=FileSource(path=str(data), timestamp_field="event_ts", created_timestamp_column="created_ts"),
                     schema=[Field(name="user_id", dtype=ft.Int64),
                             *(Field(name=k, dtype=getattr(ft, v)) for k, v in SCHEMA.items())])
    store = Store(kind, repo, project, online)
    store.feature_store().apply([user, fv])
    return store


def clear(store: Store) -> None:
    table = f"{store.project}_{VIEW}"
    if store.kind == "sqlite":
        with sqlite3.connect(store.repo / "online.db") as conn:
            conn.execute(f'DELETE FROM "{table}"')
    elif store.kind == "redis":
        client = _redis(int(store.online["connection_string"].rsplit("db=", 1)[1]))
        try:
            keys = list(client.scan_iter(match=b"*" + store.project.encode(), count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    else:
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=store.online["database"]) as conn:
            conn.execute(f'TRUNCATE "{store.online["db_schema"]}"."{table}"')


@pytest.fixture(scope="module")
def cluster_client():
    from skyfeast.adapters.clusters.local import LocalConnector, Preload

    conn = LocalConnector(workers=2, threads=1, memory_limit="auto", name="test-identity",
                          preload=Preload(workers=("skyfeast.featurestore._typechecks",)))
    yield conn.connect()
    conn.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_skyfeast_stores_what_feast_stores(kind, tmp_path, request, cluster_client):
    from skyfeast.featurestore.materialize import materialize

    data = tmp_path / "events.parquet"
    pq.write_table(mixed_rows(np.random.default_rng(20261206)), data, row_group_size=700)
    project = f"id_{uuid.uuid4().hex[:8]}"
    ours, ref = (make_repo(kind, tag, tmp_path, project, data, request) for tag in ("a", "b"))
    try:
        ref.feature_store().materialize(START, END, feature_views=[VIEW])
        want = ref.dump()
        table = next(iter(want)) if kind != "redis" else None
        assert (len(want[table]) if table else len(want)) >= ENTITIES - 40  # it compared something

        proc = subprocess.run([str(BIN / "skyfeast"), "materialize", "--feast-repo", str(ours.repo),
                               "--start", START.isoformat(), "--end", END.isoformat(), "--json"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        assert report["mode"] == "in-process" and report["ok"], report
        assert ours.dump() == want, f"{kind}: the in-process command stored other bytes than feast materialize"

        clear(ours)
        result = materialize(ours.repo, [VIEW], START, END, client=cluster_client, partitions=3)
        assert result.per_view[VIEW].partitions == 3
        assert ours.dump() == want, f"{kind}: the cluster path stored other bytes than feast materialize"
    finally:
        if kind == "redis":
            for store in (ours, ref):
                clear(store)
