"""Contract: skyfeast's online writers store exactly what Feast's ``online_write_batch`` stores.

Every store kind gets two real Feast repos with the same project and feature
views: store A is written by skyfeast's writer (all rows, shuffled, stale
duplicates included, several calls, tiny chunks), store B by Feast's own
``online_write_batch`` (the newest row per entity).  The stores must then be
identical byte for byte (SQL rows, Redis hashes) and serve identical
``get_online_features`` results.  Redis pairs are two db numbers of the shared
server, PostgreSQL pairs two schemas of the per-test database.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from skyfeast.adapters.failures import FailureClass, classify
from skyfeast.featurestore.online import OutputSchemaError
from skyfeast.featurestore.repo import FeastRepo
from skyfeast.featurestore.writers import EncodingError, StoreNotReadyError, writer_for
from skyfeast.featurestore.writers.base import StoreUnreachableError
from skyfeast.featurestore.writers.fallback import FallbackWriter
from tests.conftest import REDIS_URL, REQUIRE_SERVICES, need_service
from tests.silent import forwarding_proxy

pytestmark = pytest.mark.filterwarnings("ignore")

REDIS_DBS = (7, 8)
SEED = 20260302


# ---------------------------------------------------------------- the Feast repo under test


def feast_objects(data_path: Path) -> list:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import (
        Bool,
        Bytes,
        Float32,
        Float64,
        Int32,
        Int64,
        String,
        UnixTimestamp,
    )

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.STRING)
    with_created = FileSource(name="with_created", path=str(data_path), timestamp_field="event_ts",
                              created_timestamp_column="created_ts")
    plain = FileSource(name="plain", path=str(data_path), timestamp_field="event_ts")
    forever = timedelta(0)
    return [
        user,
        device,
        FeatureView(name="user_all", entities=[user], ttl=forever, source=with_created, schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="f_f32", dtype=Float32), Field(name="f_f64", dtype=Float64),
            Field(name="f_i32", dtype=Int32), Field(name="f_i64", dtype=Int64),
            Field(name="f_str", dtype=String), Field(name="f_bool", dtype=Bool),
            Field(name="f_bytes", dtype=Bytes), Field(name="f_ts", dtype=UnixTimestamp),
        ]),
        FeatureView(name="user_more", entities=[user], ttl=forever, source=plain, schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="m_f64", dtype=Float64), Field(name="m_str", dtype=String),
        ]),
        FeatureView(name="device_v", entities=[device], ttl=forever, source=plain, schema=[
            Field(name="device_id", dtype=String),
            Field(name="d_i64", dtype=Int64), Field(name="d_f32", dtype=Float32),
        ]),
        FeatureView(name="pair_v", entities=[user, device], ttl=forever, source=with_created, schema=[
            Field(name="user_id", dtype=Int64), Field(name="device_id", dtype=String),
            Field(name="p_f64", dtype=Float64), Field(name="p_bool", dtype=Bool),
        ]),
    ]


VIEWS = ("user_all", "user_more", "device_v", "pair_v")


@dataclass
class Store:
    """One Feast repo and a way to dump its online store completely."""

    kind: str
    repo: Path
    project: str
    online: dict

    def feature_store(self):
        from skyfeast.featurestore.repo import load_store

        return load_store(self.repo)

    def drop_table(self, view: str) -> None:
        table = f"{self.project}_{view}"
        if self.kind == "sqlite":
            with sqlite3.connect(self.repo / self.online["path"]) as conn:
                conn.execute(f'DROP TABLE "{table}"')
        elif self.kind == "postgres":
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.online["database"]) as conn:
                conn.execute(f'DROP TABLE "{self.online["db_schema"]}"."{table}"')

    def dump(self) -> dict:
        return {"sqlite": self._dump_sqlite, "redis": self._dump_redis, "postgres": self._dump_pg}[self.kind]()

    def _dump_sqlite(self) -> dict:
        conn = sqlite3.connect(self.repo / self.online["path"])
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY entity_key, feature_name').fetchall() for n in names}
        finally:
            conn.close()

    def _dump_redis(self) -> dict:
        client = _redis(int(self.online["connection_string"].rsplit("db=", 1)[1]))
        try:
            out = {}
            for key in client.scan_iter(match=b"*" + self.project.encode(), count=1000):
                out[key] = (client.hgetall(key), client.ttl(key) > 0)
            return out
        finally:
            client.close()

    def _dump_pg(self) -> dict:
        import psycopg

        schema = self.online["db_schema"]
        with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=self.online["database"]) as conn:
            names = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
            return {n: conn.execute(
                f'SELECT * FROM "{schema}"."{n}" ORDER BY entity_key, feature_name').fetchall() for n in names}


def _redis(db: int):
    import redis

    url = REDIS_URL.rsplit("/", 1)[0]
    return redis.Redis.from_url(f"{url}/{db}")


def _online_config(kind: str, tag: str, request) -> dict:
    if kind.endswith("+num"):  # Feast then also fills value_num
        return {**_online_config(kind[:-4], tag, request), "enable_openai_compatible_store": True}
    if kind.endswith("+tz"):  # sessions in a zone other than UTC (set on the test's database)
        return _online_config(kind[:-3], tag, request)
    if kind == "sqlite":
        return {"type": "sqlite", "path": "online.db"}
    if kind == "redis":
        from urllib.parse import urlsplit

        u = urlsplit(REDIS_URL)
        need_service("Redis", u.hostname or "127.0.0.1", u.port or 6379)
        db = REDIS_DBS[0 if tag == "a" else 1]
        return {"type": "redis", "connection_string": f"127.0.0.1:6379,db={db}", "key_ttl_seconds": 86_400}
    _need_psycopg_pool()
    from sqlalchemy.engine import make_url

    database = make_url(request.getfixturevalue("pg_url")).database
    return {"type": "postgres", "host": "127.0.0.1", "port": 5432, "database": database, "db_schema": f"store_{tag}",
            "user": "postgres", "password": "", "sslmode": "disable"}


def _need_psycopg_pool() -> None:
    try:
        import psycopg_pool  # noqa: F401  (Feast's PostgreSQL online store imports it)
    except ImportError:
        msg = "psycopg-pool is not installed; Feast's PostgreSQL online store needs it"
        if REQUIRE_SERVICES:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def make_store(config: str, tag: str, root: Path, project: str, request) -> Store:
    repo = root / f"repo_{tag}"
    repo.mkdir()
    online = _online_config(config, tag, request)
    kind = config.removesuffix("+num").removesuffix("+tz")
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "registry": "registry.db", "provider": "local", "online_store": online,
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
    }))
    store = Store(kind, repo, project, online)
    store.feature_store().apply(feast_objects(root / "unused.parquet"))
    return store


@pytest.fixture(params=["sqlite", "redis", "postgres", "fallback", "sqlite+num", "postgres+num", "postgres+tz"])
def pair(request, tmp_path):
    """(skyfeast store, Feast reference store, writer factory) for one store kind.

    ``postgres+tz``: the database's sessions run in America/New_York, where Feast's
    naive-UTC ``timestamp`` parameters are converted in that zone, so the writer must
    take its stage path instead of COPYing straight into Feast's table."""
    config = "sqlite" if request.param == "fallback" else request.param
    kind = config.removesuffix("+num").removesuffix("+tz")
    if config.endswith("+tz"):
        _need_psycopg_pool()
        import psycopg
        from sqlalchemy.engine import make_url

        database = make_url(request.getfixturevalue("pg_url")).database
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=database, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{database}\" SET timezone TO 'America/New_York'")
    project = f"sf_{uuid.uuid4().hex[:10]}"
    stores = [make_store(config, tag, tmp_path, project, request) for tag in ("a", "b")]
    if request.param == "fallback":
        def make_writer(target):
            return FallbackWriter(target, chunk_rows=50)
    else:
        def make_writer(target):
            return writer_for(target, chunk_rows=64)
    make_writer.expected = {"sqlite": "SqliteWriter", "redis": "RedisWriter", "postgres": "PostgresWriter",
                            "fallback": "FallbackWriter"}[request.param.removesuffix("+num").removesuffix("+tz")]
    # PostgreSQL: whether fresh chunks may be COPYed straight into Feast's table (UTC sessions only)
    make_writer.direct = {"postgres": True, "postgres+num": True, "postgres+tz": False}.get(request.param)
    yield stores[0], stores[1], make_writer
    if kind == "redis":
        for db in REDIS_DBS:
            client = _redis(db)
            keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
            if keys:
                client.delete(*keys)
            client.close()


# ---------------------------------------------------------------- data


def random_rows(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Rows per view: 1-3 per entity (a day apart at least), shuffled, ~15% nulls in every feature."""
    users = rng.choice(np.arange(-2**62, 2**62, 2**40, dtype=np.int64), 120, replace=False)
    devices = [f"dev-{i}-{'é☃𝄞'[i % 3]}" for i in range(80)]
    pairs = [(int(u), d) for u, d in zip(rng.choice(users, 90), rng.choice(devices, 90))]
    pairs = list(dict.fromkeys(pairs))

    def frame(keys: dict, n_entities: int) -> pd.DataFrame:
        reps = rng.integers(1, 4, n_entities)
        idx = np.repeat(np.arange(n_entities), reps)
        days = np.concatenate([rng.choice(np.arange(-4000, 20_000), r, replace=False) for r in reps])
        micros = rng.integers(0, 86_400_000_000, len(idx))
        event = pd.to_datetime(days * 86_400_000_000 + micros, unit="us", utc=True)  # some before 1970
        df = pd.DataFrame({k: [v[i] for i in idx] for k, v in keys.items()})
        df["event_ts"] = event
        df["created_ts"] = event + pd.to_timedelta(rng.integers(0, 10**9, len(idx)), unit="us")
        return df

    def nulls(values, dtype=None) -> pd.arrays.ArrowExtensionArray:
        # Arrow-backed, so int/bool nulls stay nulls (numpy-backed pandas would make them floats).
        return pd.arrays.ArrowExtensionArray(pa.array(values, type=dtype, mask=rng.random(len(values)) < 0.15))

    out = {}
    df = frame({"user_id": users}, len(users))
    n = len(df)
    df["f_f32"] = nulls(np.r_[rng.normal(0, 1e4, n - 3), [np.nan, -0.0, np.inf]].astype(np.float32))
    df["f_f64"] = nulls(np.r_[rng.normal(0, 1e200, n - 3), [np.nan, -0.0, -np.inf]])
    df["f_i32"] = nulls(rng.integers(-2**31, 2**31, n).astype(np.int32))
    df["f_i64"] = nulls(rng.integers(-2**53, 2**53, n))
    df["f_str"] = nulls(["" if k == 0 else "ü𝄞x" * int(k) for k in rng.integers(0, 5, n)])
    df["f_bool"] = nulls(rng.random(n) < 0.5)
    df["f_bytes"] = nulls([bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 9, n)])
    df["f_ts"] = nulls(rng.integers(-2**40, 2**40, n), pa.timestamp("us", tz="UTC"))
    out["user_all"] = df
    df = frame({"user_id": users[:90]}, 90)
    df["m_f64"] = nulls(rng.random(len(df)))
    df["m_str"] = nulls([f"s{i}" for i in range(len(df))])
    out["user_more"] = df
    df = frame({"device_id": devices}, len(devices))
    df["d_i64"] = nulls(rng.integers(-10**12, 10**12, len(df)))
    df["d_f32"] = nulls(rng.random(len(df)).astype(np.float32))
    out["device_v"] = df
    df = frame({"user_id": [p[0] for p in pairs], "device_id": [p[1] for p in pairs]}, len(pairs))
    df["p_f64"] = nulls(rng.normal(size=len(df)))
    df["p_bool"] = nulls(rng.random(len(df)) < 0.5)
    out["pair_v"] = df
    return {name: frame.sample(frac=1.0, random_state=SEED).reset_index(drop=True) for name, frame in out.items()}


def newest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values("event_ts", kind="stable").drop_duplicates(keys, keep="last")


def feast_write(store: Store, view: str, table: pa.Table) -> None:
    """The reference: Feast's converter and the store's own ``online_write_batch``."""
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.utils import _convert_arrow_to_proto

    fs = store.feature_store()
    fv = fs.get_feature_view(view)
    key_types = {ec.name: ec.dtype.to_value_type() for ec in fv.entity_columns}
    online = get_online_store_from_config(fs.config.online_store)
    for batch in table.combine_chunks().to_batches():
        online.online_write_batch(fs.config, fv, _convert_arrow_to_proto(batch, fv, key_types), None)


def arrow_frames(frames: dict[str, pd.DataFrame]) -> dict[str, pa.Table]:
    return {name: pa.Table.from_pandas(df, preserve_index=False) for name, df in frames.items()}


def online_features(store: Store, frames: dict[str, pd.DataFrame]) -> dict:
    fs = store.feature_store()
    out = {}
    for view in VIEWS:
        fv = fs.get_feature_view(view)
        keys = [ec.name for ec in fv.entity_columns]
        rows = newest(frames[view], keys)[keys].to_dict("records")
        rows.append({k: (-1 if k == "user_id" else "missing") for k in keys})
        refs = [f"{view}:{f.name}" for f in fv.features]
        out[view] = fs.get_online_features(features=refs, entity_rows=rows).to_dict()
    return out


# ---------------------------------------------------------------- tests


def test_identical_to_feast(pair):
    ours, ref, make_writer = pair
    rng = np.random.default_rng(SEED)
    frames = random_rows(rng)
    tables = arrow_frames(frames)
    repo = FeastRepo(ours.repo)
    for view, table in tables.items():
        target = repo.write_target(view)
        keys = list(target.join_keys)
        feast_write(ref, view, pa.Table.from_pandas(newest(frames[view], keys), preserve_index=False))
        # Ours: all rows, shuffled, as a multi-chunk table in two calls (stale rows land in both).
        half = table.num_rows // 2
        with make_writer(target) as writer:
            assert type(writer).__name__ == make_writer.expected
            chunked = pa.concat_tables([table.slice(0, half // 2), table.slice(half // 2, half - half // 2)])
            sent = writer.write(chunked) + writer.write(table.slice(half))
            if make_writer.direct is not None:
                assert writer._direct is make_writer.direct
        assert sent <= table.num_rows

    dump_a, dump_b = ours.dump(), ref.dump()
    assert dump_a.keys() == dump_b.keys()
    for name in dump_b:
        assert dump_a[name] == dump_b[name], f"{ours.kind}: {name!r} differs"
    assert sum(len(v) for v in dump_b.values()) > 500  # the comparison compared something

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = online_features(ours, frames)
        assert served == online_features(ref, frames)
    for view, features in (("user_all", ["f_f32", "f_i64", "f_str", "f_bytes", "f_ts"]), ("pair_v", ["p_bool"])):
        for feature in features:
            assert 0 < sum(v is not None for v in served[view][feature]) < len(served[view][feature]), feature


def _late_rows(ts: datetime, value: float, text: str) -> pa.Table:
    return pa.table({
        "user_id": pa.array([7, 8], pa.int64()),
        "event_ts": pa.array([ts, ts], pa.timestamp("us", tz="UTC")),
        "m_f64": pa.array([value, value + 1]),
        "m_str": pa.array([text, text]),
    })


def _read(store: Store) -> dict:
    fs = store.feature_store()
    return fs.get_online_features(features=["user_more:m_f64", "user_more:m_str"],
                                  entity_rows=[{"user_id": 7}, {"user_id": 8}]).to_dict()


def test_newest_wins(pair):
    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    with make_writer(target) as writer:
        writer.write(_late_rows(t_new, 2.0, "new"))
        writer.write(_late_rows(t_old, 1.0, "old"))  # late data: ignored
        assert _read(ours)["m_str"] == ["new", "new"]
        # One call holding both, older last: the newer row still wins.
        both = pa.concat_tables([_late_rows(t_new + timedelta(days=1), 3.0, "newer"), _late_rows(t_old, 1.0, "old")])
        assert writer.write(both) == 2
        assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["newer", "newer"]}
        # An equal timestamp overwrites: re-materialising a corrected interval repairs it.
        writer.write(_late_rows(t_new + timedelta(days=1), 5.0, "fixed"))
        assert _read(ours)["m_str"] == ["fixed", "fixed"]


def test_bad_input_is_named(pair):
    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    rows = _late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "x")
    with make_writer(target) as writer:
        with pytest.raises(OutputSchemaError, match="m_str"):
            writer.write(rows.drop(["m_str"]))
        with pytest.raises(EncodingError, match="user_id"):
            writer.write(rows.set_column(0, "user_id", pa.array([7, None], pa.int64())))
        with pytest.raises(EncodingError, match="event_ts"):
            writer.write(rows.set_column(1, "event_ts", pa.array([None, None], pa.timestamp("us"))))
        assert writer.write(rows.slice(0, 0)) == 0
    if ours.kind in ("sqlite", "postgres") and not isinstance(writer, FallbackWriter):
        ours.drop_table("user_more")
        with make_writer(target) as writer, pytest.raises(StoreNotReadyError, match="feast apply"):
            writer.write(rows)


@pytest.mark.parametrize("pair", ["postgres"], indirect=True)
@pytest.mark.parametrize("direct", [True, False], ids=["copy-into-table", "stage-insert"])
def test_postgres_insert_race_falls_back_to_upsert(pair, direct):
    """The fresh-entities fast paths (COPY straight into Feast's table; the stage's plain
    INSERT when the session is not in UTC) meet rows stored after their probe: the chunk is
    redone as the upsert."""
    from psycopg import sql

    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    with make_writer(target) as writer:
        writer.write(_late_rows(t_new, 2.0, "new"))
        assert writer._direct is True  # the test server runs in UTC, as CI's does
        writer._direct = direct
        insert, upsert, _, copy = writer._upsert
        writer._upsert = (insert, upsert, sql.SQL("SELECT %s IS NULL"), copy)  # the probe sees nothing stored
        writer.write(_late_rows(t_old, 1.0, "old"))  # INSERT fails on the stored keys; the upsert keeps "new"
        assert _read(ours)["m_str"] == ["new", "new"]
        writer.write(_late_rows(t_new + timedelta(days=1), 3.0, "newer"))
        assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["newer", "newer"]}


@pytest.mark.parametrize("pair", ["postgres"], indirect=True)
def test_postgres_fresh_probe_never_scans_the_table(pair):
    """The fresh-chunk probe (``entity_key = ANY($1)``) goes through the index on every chunk,
    including after psycopg has prepared it: a sequential scan compares every stored row
    with every key of the chunk (hours on a large table)."""
    import psycopg

    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    schema, table = ours.online["db_schema"], f"{ours.project}_user_more"

    def rows(ids: np.ndarray) -> pa.Table:
        return pa.table({"user_id": pa.array(ids, pa.int64()),
                         "event_ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * len(ids), pa.timestamp("us", tz="UTC")),
                         "m_f64": pa.array(ids.astype(np.float64)), "m_str": pa.array([f"v{i}" for i in ids])})

    def seq_scans() -> int:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=ours.online["database"]) as conn:
            return conn.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                                (schema, table)).fetchone()[0]

    with make_writer(target) as writer:  # chunks of 64 entities
        writer.write(rows(np.arange(0, 640)))  # 10 chunks: the table is not empty any more
    before = seq_scans()
    with make_writer(target) as writer:
        writer.write(rows(np.arange(640, 1600)))  # 15 fresh chunks, 15 probes on one connection
    assert seq_scans() == before
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=ours.online["database"]) as conn:
        assert conn.execute(f'SELECT COUNT(*) FROM "{schema}"."{table}"').fetchone()[0] == 1600 * 2


@pytest.mark.parametrize("pair", ["postgres"], indirect=True)
def test_postgres_store_that_stops_answering_mid_write_fails_the_chunk_within_its_deadline(pair, monkeypatch):
    """libpq has no read timeout: a server that goes silent after the writer's first contact would hold
    a chunk for good. Each chunk has a deadline (base.chunk_deadline); past it the connection is cut,
    the chunk fails as the store's (infrastructure) failure, nothing of it is stored, and the same
    writer reconnects once the store answers again."""
    from skyfeast.featurestore.writers import base

    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    with forwarding_proxy(("127.0.0.1", 5432)) as (port, frozen):
        target.repo_config.online_store.port = port
        monkeypatch.setattr(base, "CHUNK_BASE_S", 2.0)
        with make_writer(target) as writer:
            writer.write(_late_rows(t_old, 1.0, "old"))  # the first contact and a chunk, answered
            frozen.set()
            t0 = time.monotonic()
            with pytest.raises(StoreUnreachableError) as ei:
                writer.write(_late_rows(t_new, 2.0, "new"))
            took = time.monotonic() - t0
            assert 1.9 < took < 5, took  # without the deadline: for ever
            assert str(ei.value) == (f"the online store (postgres at 127.0.0.1:{port}/{ours.online['database']}) "
                                     "stopped answering: a chunk of 2 rows (4 values) took more than 2 s")
            assert classify(ei.value) is FailureClass.INFRASTRUCTURE
            assert _read(ours)["m_str"] == ["old", "old"]
            frozen.clear()
            writer.write(_late_rows(t_new, 2.0, "new"))
    assert _read(ours) == {"user_id": [7, 8], "m_f64": [2.0, 3.0], "m_str": ["new", "new"]}


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_sqlite_writer_waits_for_a_held_lock_file_no_longer_than_its_busy_timeout(pair):
    """skyfeast's SQLite writers queue on a lock file beside the database. A holder that is stopped
    or hung (here: this process, on a descriptor of its own) keeps it for good; a writer waits for
    it no longer than its busy timeout, then goes on under SQLite's own locking."""
    import fcntl

    ours, _, make_writer = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    with make_writer(target) as writer:
        writer.busy_timeout_s = 1.0
        held = os.open(writer.db_path + ".skyfeast-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            t0 = time.monotonic()
            writer.write(_late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "written"))
            took = time.monotonic() - t0
            t0 = time.monotonic()  # the next chunk does not wait for the lock file again
            writer.write(_late_rows(datetime(2024, 1, 2, tzinfo=UTC), 2.0, "again"))
            again = time.monotonic() - t0
        finally:
            os.close(held)
    assert 0.9 < took < 5, took  # without the bound: for ever
    assert again < 0.9, again
    assert _read(ours)["m_str"] == ["again", "again"]


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_error_reply_leaves_writer_usable(pair):
    ours, _, make_writer = pair
    import redis

    from skyfeast.featurestore.writers._encode import entity_keys

    target = FeastRepo(ours.repo).write_target("user_more")
    rows = _late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "x")
    key = entity_keys(rows, {"user_id": target.feature_view.entity_columns[0].dtype.to_value_type()})[0].as_py()
    client = _redis(REDIS_DBS[0])
    client.set(key + ours.project.encode(), b"not a hash")  # user 7's key now holds a string
    with make_writer(target) as writer:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            writer.write(rows)
        client.delete(key + ours.project.encode())
        writer.write(rows)  # same connection, replies still in step
    client.close()
    assert _read(ours)["m_str"] == ["x", "x"]


def test_redis_script_reloaded_after_flush(tmp_path):
    """NOSCRIPT (server restarted or SCRIPT FLUSH) is handled by reloading: on a private server."""
    import shutil
    import socket
    import subprocess
    import time

    import redis

    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed", pytrace=False)
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        project = f"sf_{uuid.uuid4().hex[:10]}"
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": project, "registry": "registry.db", "provider": "local", "offline_store": {"type": "file"},
            "online_store": {"type": "redis", "connection_string": f"127.0.0.1:{port},db=0"},
        }))
        store = Store("redis", repo, project, {})
        store.feature_store().apply(feast_objects(tmp_path / "unused.parquet"))
        with writer_for(FeastRepo(repo).write_target("user_more")) as writer:
            writer.write(_late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "before"))
            client.script_flush()
            writer.write(_late_rows(datetime(2024, 1, 2, tzinfo=UTC), 2.0, "after"))
        assert _read(store)["m_str"] == ["after", "after"]
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


# ---------------------------------------------------------------- encodings, no server needed


def _feast_bytes(arr: pa.Array, vtype) -> list[bytes]:
    from feast.type_map import python_values_to_proto_values

    return [v.SerializeToString() for v in python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vtype)]


def _edge_columns():
    from feast.value_type import ValueType as V

    rng = np.random.default_rng(SEED)
    n = 600

    def m():
        return rng.random(n) < 0.2

    yield V.FLOAT, pa.array(np.r_[rng.normal(0, 1e30, n - 5), [np.nan, -0.0, np.inf, -np.inf, 1e-45]]
                            .astype(np.float32), mask=m())
    yield V.DOUBLE, pa.array(np.r_[rng.normal(0, 1e300, n - 4), [np.nan, -0.0, np.inf, 5e-324]], mask=m())
    yield V.INT32, pa.array(np.r_[rng.integers(-2**31, 2**31, n - 3), [-2**31, 2**31 - 1, 0]].astype(np.int32),
                            mask=m())
    yield V.INT64, pa.array(np.r_[rng.integers(-2**63, 2**63 - 1, n - 3), [-2**63, 2**63 - 1, 0]])
    yield V.INT64, pa.array(np.r_[rng.integers(-2**53, 2**53, n - 1), [0]], mask=m())
    yield V.INT64, pa.array(rng.integers(-100, 100, n).astype(np.int16))
    yield V.BOOL, pa.array(rng.random(n) < 0.5, mask=m())
    yield V.BOOL, pa.array(rng.random(n) < 0.5)
    yield V.STRING, pa.array(["" if k == 0 else "é☃𝄞\x00" * int(k) for k in rng.integers(0, 40, n)], mask=m())
    yield V.STRING, pa.array(["x" * int(k) for k in rng.integers(100, 300, n)], pa.large_string())
    yield V.BYTES, pa.array([bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 200, n)],
                            mask=m())
    yield V.BYTES, pa.array([b"", None, b""])  # Feast: no non-empty sample → all null
    for unit in ("s", "ms", "us", "ns"):
        yield V.UNIX_TIMESTAMP, pa.array(rng.integers(-2**42, 2**42, n), pa.timestamp(unit, tz="UTC"), mask=m())
    yield V.DOUBLE, pa.array(rng.random(n).astype(np.float32))  # no fast path: Feast's own conversion
    yield V.STRING, pa.array(rng.integers(0, 10, n))


@pytest.mark.parametrize("vtype,arr", list(_edge_columns()), ids=lambda v: getattr(v, "name", None))
def test_value_encoding_matches_feast(vtype, arr):
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    from skyfeast.featurestore.writers._encode import FeatureColumn

    try:
        expected = _feast_bytes(arr, vtype)
    except (AssertionError, TypeError, ValueError) as exc:  # Feast refuses: so must we, the same way
        with pytest.raises(type(exc)):
            _ = FeatureColumn("x", arr, vtype).proto_bytes
        return
    column = FeatureColumn("x", arr, vtype)
    assert column.proto_bytes.to_pylist() == expected
    protos = python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), vtype)
    text_num = [extract_text_and_num(p, True) for p in protos]
    assert column.sql_text == [t for t, _ in text_num]
    assert column.sql_text_array().to_pylist() == [t for t, _ in text_num]
    assert column.sql_num == [x for _, x in text_num]
    nums, present = column.sql_num_array()
    assert [x if p else None for x, p in zip(nums.tolist(), present.tolist())] == [x for _, x in text_num]


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Europe/London"])
def test_sqlite_seconds_match_feasts_adapter(zone, monkeypatch):
    """Feast stores ``int(naive_utc.timestamp())``, which Python reads in the local zone."""
    import time

    from skyfeast.featurestore.writers._encode import sqlite_seconds

    rng = np.random.default_rng(SEED)
    micros = np.r_[rng.integers(-2 * 10**15, 4 * 10**15, 500), [-1, -999_999, -1_000_000, 0, 1, 999_999]]
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        epoch = datetime(1970, 1, 1)
        expected = [int((epoch + timedelta(microseconds=int(u))).timestamp()) for u in micros]
        present = np.ones(len(micros), dtype=bool)
        present[3] = False
        expected[3] = None
        assert sqlite_seconds(micros, present) == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_int64_with_nulls_stays_exact():
    """A documented difference: Feast rounds int64 beyond 2**53 when the column has nulls; we don't."""
    from feast.value_type import ValueType

    from skyfeast.featurestore.writers._encode import FeatureColumn

    arr = pa.array([2**60 + 1, None], pa.int64())
    ours = FeatureColumn("x", arr, ValueType.INT64).proto_bytes.to_pylist()
    from feast.protos.feast.types.Value_pb2 import Value

    assert ours == [Value(int64_val=2**60 + 1).SerializeToString(), b""]
    assert _feast_bytes(arr, ValueType.INT64)[0] == Value(int64_val=2**60).SerializeToString()


def test_entity_keys_and_timestamps_match_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType as V
    from google.protobuf.timestamp_pb2 import Timestamp

    from skyfeast.featurestore.writers._encode import entity_keys, timestamp_proto, utc_micros

    rng = np.random.default_rng(SEED)
    n = 500
    table = pa.table({
        "zz": rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64),
        "a": [f"k☃{i}" * (i % 4) for i in range(n)],
        "i32": rng.integers(-2**31, 2**31, n).astype(np.int32),
        "b": [bytes([i % 256]) * (i % 5) for i in range(n)],
        "t": pa.array(rng.integers(-2**45, 2**45, n), pa.timestamp("ns")),
    })
    types = {"zz": V.INT64, "a": V.STRING, "i32": V.INT32, "b": V.BYTES, "t": V.UNIX_TIMESTAMP}
    for keys in (["zz"], ["a"], ["zz", "a"], list(types)):
        values = {k: python_values_to_proto_values(table[k].to_numpy(zero_copy_only=False), types[k]) for k in keys}
        expected = [serialize_entity_key(EntityKey(join_keys=keys, entity_values=[values[k][i] for k in keys]), 3)
                    for i in range(n)]
        assert entity_keys(table, {k: types[k] for k in keys}).to_pylist() == expected, keys

    micros, present = utc_micros(table["t"], "t")
    assert present.all()
    expected = []
    for ts in pd.to_datetime(table["t"].to_numpy()):
        proto = Timestamp()
        proto.FromDatetime(ts.to_pydatetime().replace(tzinfo=UTC))
        expected.append(proto.SerializeToString())
    assert timestamp_proto(micros).to_pylist() == expected


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_fresh_path_aborts_when_a_key_is_written_after_its_probe(pair):
    """The fresh-key path (WATCH, EXISTS, MULTI/HSET/EXEC) meets a newer row written by another
    client after its probe: EXEC aborts, the group goes through the stored-key path (newest wins),
    and the newer row survives; with no race the fresh path writes the group itself."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)

    class Racing(RedisWriter):
        def _watched(self, start, stop):
            with RedisWriter(target, fresh_group=0, restore=False) as other:  # the script, another connection
                other.write(_late_rows(t_new, 2.0, "new"))

    with Racing(target, restore=False) as writer:
        writer.write(_late_rows(t_old, 1.0, "old"))
        assert writer.fresh_groups == 0  # the EXEC aborted
    assert _read(ours)["m_str"] == ["new", "new"]
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    try:
        client.delete(*list(client.scan_iter(match=b"*" + ours.project.encode())))
    finally:
        client.close()
    with RedisWriter(target, restore=False) as writer:
        writer.write(_late_rows(t_old, 1.0, "old"))
        assert writer.fresh_groups == 1 and writer.written == 2
        writer.write(_late_rows(t_new, 5.0, "again"))  # keys stored: the stored-key path, newest wins
        assert writer.fresh_groups == 1 and writer.written == 4
    assert _read(ours)["m_str"] == ["again", "again"]


def _clear_project(store: Store) -> None:
    client = _redis(int(store.online["connection_string"].rsplit("db=", 1)[1]))
    try:
        keys = list(client.scan_iter(match=b"*" + store.project.encode()))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_restore_creates_new_hashes_like_hset_and_never_replaces(pair):
    """New entities are created by RESTORE: the same hash, TTL and encoding as Feast's HSET; a key
    that exists (another writer got there first) answers BUSYKEY and goes through the newest-wins
    stored-key path, so a newer stored row survives an older RESTORE attempt."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, ref, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    rows = _late_rows(t_old, 1.0, "old")
    with RedisWriter(target) as writer:
        assert writer.write(rows) == 2
        assert writer.restored == 2 and writer.fresh_groups == 0
    feast_write(ref, "user_more", rows)
    db = int(ours.online["connection_string"].rsplit("db=", 1)[1])
    client = _redis(db)
    try:
        ours_keys = sorted(client.scan_iter(match=b"*" + ours.project.encode()))
        ref_keys = sorted(client.scan_iter(match=b"*" + ref.project.encode()))
        assert len(ours_keys) == len(ref_keys) == 2
        for a, b in zip(ours_keys, ref_keys):
            assert client.hgetall(a) == client.hgetall(b)
            assert client.object("encoding", a) == client.object("encoding", b)
            assert abs(client.ttl(a) - client.ttl(b)) <= 2 and client.ttl(a) > 0
    finally:
        client.close()

    _clear_project(ours)
    with RedisWriter(target, restore=False) as other:
        other.write(_late_rows(t_new, 2.0, "new"))
    with RedisWriter(target) as writer:
        writer.write(rows)  # both keys stored: the probe sends them to the stored-key path, which keeps the newer
        assert writer.restored == 0 and writer.written == 0
    assert _read(ours)["m_str"] == ["new", "new"]

    # One stored key and one new key in a chunk: RESTORE creates the new one, the stored one
    # goes to the stored-key path (newer data wins there too).
    _clear_project(ours)
    with RedisWriter(target, restore=False) as other:
        other.write(_late_rows(t_new, 2.0, "new").slice(0, 1))  # user 7 only
    with RedisWriter(target) as writer:
        writer.write(_late_rows(t_new + timedelta(days=1), 3.0, "newer"))
        assert writer.restored == 1 and writer.written == 2
    assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["newer", "newer"]}


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_restore_refused_falls_back_to_the_other_paths(pair, monkeypatch):
    """A server that refuses the payload (here: a DUMP version it does not know) turns RESTORE off
    for the writer; the rows are still written, new keys through the fresh-key path."""
    import skyfeast.featurestore.writers.redis as redis_writer

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    monkeypatch.setattr(redis_writer, "_RDB_VERSION", 999)
    with redis_writer.RedisWriter(target) as writer:
        writer.write(_late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "old"))
        assert writer.restored == 0 and writer._restore is False and writer.written == 2
        assert writer.fresh_groups == 1  # refused RESTORE: the new keys took the fresh-key path
        writer.write(_late_rows(datetime(2024, 2, 1, tzinfo=UTC), 3.0, "later"))
    assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["later", "later"]}


def _many_rows(users: np.ndarray, ts: datetime, value: float) -> pa.Table:
    n = len(users)
    return pa.table({
        "user_id": pa.array(users, pa.int64()),
        "event_ts": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
        "m_f64": pa.array(value + np.arange(n, dtype=np.float64)),
        "m_str": pa.array([f"v{value}-{u}" for u in users]),
    })


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_rematerialisation_goes_straight_to_the_stored_key_path(pair):
    """A chunk whose keys are mostly stored (a re-materialisation) is sent to the newest-wins
    stored-key path after one EXISTS of a sample, without RESTORE payloads; the stored hashes then equal Feast's own
    write of the same rows, and an older rewrite changes nothing.  A chunk of mostly new keys still
    creates them with RESTORE."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, ref, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    users = np.arange(1000, 1300)
    with RedisWriter(target) as writer:
        writer.write(_many_rows(users, t_old, 1.0))
        assert writer.restored == 300 and writer.probed_stored == 0
        newer = _many_rows(users, t_new, 5.0)
        assert writer.write(newer) == 300
        assert writer.probed_stored == 1 and writer.restored == 300 and writer.written == 600
        writer.write(_many_rows(users, t_old, 9.0))  # late data over stored keys: nothing written
        assert writer.probed_stored == 2 and writer.written == 600
        # 280 new keys and 20 stored ones: the sample finds few stored, RESTORE creates the new keys
        mixed = _many_rows(np.arange(1280, 1580), t_new + timedelta(days=1), 7.0)
        writer.write(mixed)
        assert writer.probed_stored == 2 and writer.restored == 580 and writer.written == 900
    feast_write(ref, "user_more", _many_rows(users, t_old, 1.0))
    feast_write(ref, "user_more", newer)
    feast_write(ref, "user_more", mixed)
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    try:
        ours_keys = sorted(client.scan_iter(match=b"*" + ours.project.encode(), count=1000))
        ref_keys = sorted(client.scan_iter(match=b"*" + ref.project.encode(), count=1000))
        assert len(ours_keys) == len(ref_keys) == 580
        for a, b in zip(ours_keys, ref_keys):
            assert a[: -len(ours.project)] == b[: -len(ref.project)]
            assert client.hgetall(a) == client.hgetall(b)
    finally:
        client.close()
    got = ours.feature_store().get_online_features(
        features=["user_more:m_f64", "user_more:m_str"], entity_rows=[{"user_id": 1000}, {"user_id": 1290}]).to_dict()
    assert got["m_f64"] == [5.0, 7.0 + 10] and got["m_str"] == ["v5.0-1000", "v7.0-1290"]


def test_redis_wide_view_into_stored_hashes_converts_them_first_and_stores_what_feast_stores(pair):
    """A view whose fields would push stored listpack hashes past ``hash-max-listpack-entries``: the
    stored-key path makes Redis convert each hash before its HSET (a field longer than the value
    limit, set before it and deleted after it in the same MULTI; the script does the same), which spares the quadratic listpack inserts of a wide view; new keys
    of a view too wide for a listpack get the same field in their HSET and an HDEL in the same
    MULTI.  The hashes then hold exactly what Feast's own writes of the same rows hold.  Here the
    limit the writer believes in is lowered to 4 entries, so both views are "wide"."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, ref, _ = pair
    if ours.kind != "redis":
        pytest.skip("Redis only")
    frames = random_rows(np.random.default_rng(SEED))
    tables = arrow_frames(frames)
    repo = FeastRepo(ours.repo)
    for view in ("user_all", "user_more"):  # user_more's users all have user_all's fields already
        keys = list(repo.write_target(view).join_keys)
        feast_write(ref, view, pa.Table.from_pandas(newest(frames[view], keys), preserve_index=False))
        with RedisWriter(repo.write_target(view), restore=False) as writer:
            writer._limits = (4, 64)
            writer.write(tables[view])
            if view == "user_all":
                assert writer.fresh_groups >= 1  # new keys: WATCH, EXISTS, MULTI, HSET and HDEL, EXEC
            else:
                assert writer.probed_stored >= 1 and writer.guarded_groups >= 1  # stored keys
    assert ours.dump() == ref.dump()
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    try:
        encodings = {client.object("encoding", k) for k in client.scan_iter(match=b"*" + ours.project.encode())}
        assert encodings == {b"hashtable"}  # converted first (Feast's small hashes stay listpacks)
    finally:
        client.close()


def _user_key(store: Store, target, user: int) -> bytes:
    from skyfeast.featurestore.writers._encode import entity_keys

    rows = pa.table({"user_id": pa.array([user], pa.int64())})
    vtype = target.feature_view.entity_columns[0].dtype.to_value_type()
    return entity_keys(rows, {"user_id": vtype})[0].as_py() + store.project.encode()


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_stored_keys_take_guarded_hsets_newest_wins_and_ttl(pair):
    """Stored keys are written by WATCH, HGET of the view's timestamp, MULTI/HSET/EXPIRE/EXEC: an
    older row never overwrites a newer stored one (and re-arms no TTL), an equal timestamp
    rewrites, a newer one writes and re-arms the TTL; the hashes equal Feast's own writes."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, ref, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    key7 = _user_key(ours, target, 7)
    try:
        with RedisWriter(target) as writer:
            writer.write(_late_rows(t_new, 2.0, "new"))  # new keys: RESTORE
            assert writer.restored == 2 and writer.guarded_groups == 0
            client.persist(key7)
            assert writer.write(_late_rows(t_old, 1.0, "old")) == 2  # rows sent, none written
            assert writer.written == 2 and writer.guarded_groups == 0 and writer.probed_stored == 1
            assert client.ttl(key7) == -1  # a skipped key's TTL is not re-armed (the script's rule)
            assert _read(ours)["m_str"] == ["new", "new"]
            writer.write(_late_rows(t_new, 3.0, "same ts"))  # equal timestamp: rewrites
            assert writer.written == 4 and writer.guarded_groups == 1
            assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["same ts", "same ts"]}
            assert client.ttl(key7) > 0
            # one call holding a newer row for user 7 and an older one for user 8
            mixed = pa.concat_tables([_late_rows(t_new + timedelta(microseconds=1), 5.0, "newer").slice(0, 1),
                                      _late_rows(t_new - timedelta(microseconds=1), 9.0, "older").slice(1, 1)])
            writer.write(mixed)
            assert writer.written == 5 and writer.guarded_groups == 2 and writer.guard_aborts == 0
        assert _read(ours) == {"user_id": [7, 8], "m_f64": [5.0, 4.0], "m_str": ["newer", "same ts"]}
        feast_write(ref, "user_more", _late_rows(t_new, 3.0, "same ts"))
        feast_write(ref, "user_more", mixed.slice(0, 1))
        ours_h = {k[: -len(ours.project)]: client.hgetall(k) for k in client.scan_iter(match=b"*" + ours.project.encode())}
        ref_h = {k[: -len(ref.project)]: client.hgetall(k) for k in client.scan_iter(match=b"*" + ref.project.encode())}
        assert ours_h == ref_h and len(ours_h) == 2
    finally:
        client.close()


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
@pytest.mark.parametrize("theirs", ["newer", "older"])
def test_redis_guarded_group_falls_back_to_the_script_when_a_watched_key_changes(pair, theirs):
    """Another client writes a key of the group (a newer or an older row, through the script on its
    own connection) after the group's HGETs and before its MULTI: EXEC aborts, the group goes to the
    newest-wins script, and the newest row is what stays."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ts_ours = t0 + timedelta(days=2)
    ts_theirs = t0 + timedelta(days=3 if theirs == "newer" else 1)
    races = []

    class Racing(RedisWriter):
        def _guarded(self, start, stop):
            races.append((start, stop))
            if len(races) == 1:
                with RedisWriter(target, guard_group=0) as other:  # the script, another connection
                    other.write(_late_rows(ts_theirs, 20.0, theirs).slice(1, 1))  # user 8 only
                    assert other.guarded_groups == 0 and other.written == 1

    with RedisWriter(target) as writer:
        writer.write(_late_rows(t0, 1.0, "first"))
    with Racing(target) as writer:
        writer.write(_late_rows(ts_ours, 2.0, "ours"))
        assert races == [(0, 2)] and writer.guard_aborts == 1 and writer.guarded_groups == 0
        assert writer.written == (2 if theirs == "older" else 1)  # by the script
    expect = ["ours", theirs] if theirs == "newer" else ["ours", "ours"]
    assert _read(ours)["m_str"] == expect


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_wide_views_into_stored_listpacks_by_guarded_hsets_store_what_feast_stores(pair):
    """Views wider than ``hash-max-listpack-entries`` (here the limit the writer believes in is 4)
    written into stored keys that are listpacks, by the guarded path: user_all (8 + 1 fields, more
    than the limit whatever the hash holds) into the listpacks Feast's user_more writes left.  Keys
    are widened before their HSET, as the script does; the hashes hold what Feast's own writes hold,
    and newer user_more rows over them (view timestamp stored: no widening) too.  The HLEN branch
    of the rule: the next test."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, ref, _ = pair
    frames = random_rows(np.random.default_rng(SEED))
    tables = arrow_frames(frames)
    repo = FeastRepo(ours.repo)
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    try:
        # user_more first (by Feast in both stores): small listpacks; then the wide views over them
        for view in ("user_more", "user_all"):
            keys = list(repo.write_target(view).join_keys)
            latest = pa.Table.from_pandas(newest(frames[view], keys), preserve_index=False)
            feast_write(ref, view, latest)
            if view == "user_more":
                feast_write(ours, view, latest)
                assert {client.object("encoding", k) for k in client.scan_iter(match=b"*" + ours.project.encode())} \
                    == {b"listpack"}
                continue
            with RedisWriter(repo.write_target(view), fresh_group=0, restore=False, keys_per_call=7) as writer:
                writer._limits = (4, 64)
                writer.guard_group = 16
                writer.write(tables[view])
                assert writer.guarded_groups >= 1 and writer.guard_aborts == 0
        assert ours.dump() == ref.dump()
        # user_more again, newer rows into hashes that now hold both views
        more = frames["user_more"].copy()
        more["event_ts"] = more["event_ts"] + pd.Timedelta(days=40_000)
        more["m_str"] = pd.arrays.ArrowExtensionArray(pa.array([f"again{i}" for i in range(len(more))]))
        keys = list(repo.write_target("user_more").join_keys)
        feast_write(ref, "user_more", pa.Table.from_pandas(newest(more, keys), preserve_index=False))
        with RedisWriter(repo.write_target("user_more"), restore=False) as writer:
            writer._limits = (4, 64)
            writer.write(pa.Table.from_pandas(more, preserve_index=False))
            assert writer.guarded_groups >= 1 and writer.written == more["user_id"].nunique()
        assert ours.dump() == ref.dump()
        encodings = {client.object("encoding", k) for k in client.scan_iter(match=b"*" + ours.project.encode())}
        assert encodings == {b"hashtable"}  # user_all's keys: converted before their HSET
    finally:
        client.close()


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_guarded_widening_follows_the_scripts_hlen_rule(pair):
    """A key lacking the view's timestamp is widened only when its fields and the view's pass the
    limit (HLEN + features + 1 > entries), exactly as the script decides: with the limit at 5, a
    user_more row (2 + 1 fields) into a hash of 2 fields stays a listpack, into one of 3 does not."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    client = _redis(int(ours.online["connection_string"].rsplit("db=", 1)[1]))
    k7, k8 = _user_key(ours, target, 7), _user_key(ours, target, 8)
    try:
        client.hset(k7, mapping={b"a": b"1", b"b": b"2"})
        client.hset(k8, mapping={b"a": b"1", b"b": b"2", b"c": b"3"})
        for guard_group in (16, 0):  # the guarded path, then the script over fresh copies
            with RedisWriter(target, restore=False, fresh_group=0, guard_group=guard_group) as writer:
                writer._limits = (5, 64)
                writer.write(_late_rows(datetime(2024, 1, 1, tzinfo=UTC), 1.0, "x"))
                assert writer.guarded_groups == (1 if guard_group else 0)
            assert client.object("encoding", k7) == b"listpack"
            assert client.object("encoding", k8) == b"hashtable"
            assert client.hlen(k7) == 5 and client.hlen(k8) == 6 and not client.hexists(k8, b"_skyfeast_widen")
            client.delete(k7, k8)
            client.hset(k7, mapping={b"a": b"1", b"b": b"2"})
            client.hset(k8, mapping={b"a": b"1", b"b": b"2", b"c": b"3"})
    finally:
        client.close()


@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_redis_guarded_race_aborts_only_its_group_among_many_in_flight(pair):
    """300 stored keys in groups of 16, two groups in flight on two connections: another client
    writes newer rows to two keys while the fourth group waits between its HGETs and its MULTI.
    The groups that had read one of them (that one, and the next one when it is in flight) abort
    and go to the script, the others are written; every key ends with the newest row."""
    from skyfeast.featurestore.writers.redis import RedisWriter

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    users = np.arange(1000, 1300)
    seen = []

    class Racing(RedisWriter):
        def _guarded(self, start, stop):
            seen.append((start, stop))
            if (start, stop) == (48, 64):
                with RedisWriter(target, guard_group=0) as other:
                    other.write(_many_rows(users[[50, 60]], t0 + timedelta(days=9), 900.0))

    with RedisWriter(target) as writer:
        writer.write(_many_rows(users, t0, 1.0))
    with Racing(target, guard_group=16) as writer:
        writer.write(_many_rows(users, t0 + timedelta(days=1), 2.0))
        # the chunk is in key order, not user order: a raced key may sit in a group written before
        assert 1 <= writer.guard_aborts <= 2 and writer.guarded_groups + writer.guard_aborts == 19
        assert writer.written in (298, 299)
    assert len(seen) == 19
    got = ours.feature_store().get_online_features(features=["user_more:m_f64"],
                                                   entity_rows=[{"user_id": int(u)} for u in users]).to_dict()
    expect = 2.0 + np.arange(300, dtype=np.float64)
    expect[[50, 60]] = [900.0, 901.0]
    assert got["m_f64"] == expect.tolist()


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_sqlite_lanes_upsert_in_chunk_order_and_store_what_one_lane_stores(pair):
    """Ten chunks of 30 entities, the first split 7 + 23 so that the first upsert starts early: with
    lanes (chunk k encoded and staged on lane k % 2 while the one before is upserted) the store
    holds byte for byte what one lane stores, encodings and upserts each run one at a time in
    chunk order, and both lanes did work."""
    from skyfeast.featurestore.writers.sqlite import SqliteWriter

    ours, ref, _ = pair
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    users = np.arange(5000, 5300)
    rows = pa.concat_tables([_many_rows(users, t0, 1.0), _many_rows(users[::7], t0 - timedelta(days=1), 0.0)])
    upserts, lanes_used, active, encoding, encoded = [], set(), [], [], []

    class Recording(SqliteWriter):
        def _encode(self, chunk):
            encoding.append(1)
            assert len(encoding) == 1, "two encodings at once"
            encoded.append(len(chunk))
            time.sleep(0.002)  # long enough for a second encoding to overlap, were it allowed
            try:
                return super()._encode(chunk)
            finally:
                encoding.pop()

        def _upsert(self, conn, groups, **options):
            active.append(1)
            assert len(active) == 1, "two upserts at once"
            upserts.append(groups[0][2][0][0])  # the chunk's first entity key
            lanes_used.add(self._conns.index(conn))
            try:
                super()._upsert(conn, groups, **options)
            finally:
                active.pop()

    with Recording(FeastRepo(ours.repo).write_target("user_more"), chunk_rows=30, lanes=True) as writer:
        assert writer.write(rows) == 300
    with SqliteWriter(FeastRepo(ref.repo).write_target("user_more"), chunk_rows=30, lanes=False) as writer:
        assert writer.write(rows) == 300
    assert encoded == [7, 23] + [30] * 9
    assert len(upserts) == 11 and upserts == sorted(upserts) and lanes_used == {0, 1}
    dump_a, dump_b = ours.dump(), ref.dump()
    name = f"{ours.project}_user_more"
    assert len(dump_a[name]) == 600 and dump_a[name] == dump_b[name]


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
@pytest.mark.parametrize("failing", [2, 3], ids=["lane-0", "lane-1"])
def test_sqlite_lane_failure_stops_the_chunks_after_it_and_is_raised(pair, failing):
    """The upsert of chunk ``failing`` raises: the chunks before it stay written, none after it is
    upserted, and the caller gets that error; the writer then writes again.  (Chunks of 30
    entities, the first split 7 + 23.)"""
    from skyfeast.featurestore.writers.sqlite import SqliteWriter

    ours, _, _ = pair
    target = FeastRepo(ours.repo).write_target("user_more")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    users = np.arange(7000, 7300)
    calls = []

    class Failing(SqliteWriter):
        def _upsert(self, conn, groups, **options):
            calls.append(len(calls))
            if len(calls) - 1 == failing:
                raise sqlite3.OperationalError("injected: disk I/O error")
            super()._upsert(conn, groups, **options)

    with Failing(target, chunk_rows=30, lanes=True) as writer:
        with pytest.raises(sqlite3.OperationalError, match="injected"):
            writer.write(_many_rows(users, t0, 1.0))
        assert calls == list(range(failing + 1))
        table = f"{ours.project}_user_more"
        stored = ours.dump()[table]
        assert len({r[0] for r in stored}) == 30 * (failing - 1)
        calls.append("again")  # past the failing index: the next write goes through
        assert writer.write(_many_rows(users, t0 + timedelta(days=1), 2.0)) == 300
    assert len({r[0] for r in ours.dump()[table]}) == 300


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_sqlite_lanes_by_default_only_outside_a_dask_worker(pair, monkeypatch):
    """Two lanes where the process writes alone; one inside a Dask task, where other workers keep
    the cores busy (``distributed.get_worker`` answers there, and raises ValueError elsewhere)."""
    import distributed

    from skyfeast.featurestore.writers.sqlite import SqliteWriter

    target = FeastRepo(pair[0].repo).write_target("user_more")
    with SqliteWriter(target) as writer:
        assert writer._lanes() is True
    monkeypatch.setattr(distributed, "get_worker", lambda: object())
    with SqliteWriter(target) as writer:
        assert writer._lanes() is False
    with SqliteWriter(target, lanes=True) as writer:
        assert writer._lanes() is True


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_sqlite_fresh_key_ranges_take_the_plain_insert_and_store_what_the_upsert_stores(pair):
    """A chunk whose key range holds no stored row goes in by a plain INSERT; one over stored rows
    takes the newest-wins upsert. The same writes with the upsert forced for every chunk leave the
    same bytes."""
    from skyfeast.featurestore.writers.sqlite import SqliteWriter

    ours, ref, _ = pair
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    users = np.arange(1000, 1300)
    writes = [_many_rows(users, t0, 1.0),  # cold: ten fresh ranges
              _many_rows(users, t0 - timedelta(days=1), 0.0),  # older, over stored rows: ignored
              _many_rows(users[::3], t0 + timedelta(days=1), 2.0),  # newer, over stored rows: applied
              _many_rows(np.array([9000]), t0, 3.0)]  # one new entity: a range of one key

    class AlwaysUpsert(SqliteWriter):
        def _fresh(self, conn, lo, hi):
            return False

    with SqliteWriter(FeastRepo(ours.repo).write_target("user_more"), chunk_rows=30, lanes=False) as writer:
        counts = []
        for rows in writes:
            writer.write(rows)
            counts.append((writer.inserted, writer.upserted))
    assert counts == [(10, 0), (10, 10), (10, 14), (11, 14)]
    with AlwaysUpsert(FeastRepo(ref.repo).write_target("user_more"), chunk_rows=30, lanes=False) as writer:
        for rows in writes:
            writer.write(rows)
        assert writer.inserted == 0 and writer.upserted == 25
    name = f"{ours.project}_user_more"
    dump_a, dump_b = ours.dump()[name], ref.dump()[name]
    assert len(dump_a) == 602 and dump_a == dump_b
    fs = ours.feature_store()
    got = fs.get_online_features(features=["user_more:m_str"],
                                 entity_rows=[{"user_id": 1000}, {"user_id": 1001}, {"user_id": 9000}]).to_dict()
    assert got["m_str"] == ["v2.0-1000", "v1.0-1001", "v3.0-9000"]


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_sqlite_plain_insert_colliding_with_stored_rows_is_undone_and_upserted(pair):
    """Should a chunk judged fresh still meet stored keys, its INSERT fails on the primary key,
    SQLite undoes that statement alone, and the newest-wins upsert stores the chunk instead."""
    from skyfeast.featurestore.writers.sqlite import SqliteWriter

    class Misjudging(SqliteWriter):
        def _fresh(self, conn, lo, hi):
            return True

    ours, _, _ = pair
    t_old, t_new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    with Misjudging(FeastRepo(ours.repo).write_target("user_more"), lanes=False) as writer:
        writer.write(_late_rows(t_new, 2.0, "new"))
        assert (writer.inserted, writer.upserted) == (1, 0)
        writer.write(_late_rows(t_old, 1.0, "old"))  # collides; the upsert keeps the newer rows
        assert (writer.inserted, writer.upserted) == (1, 1)
        assert _read(ours) == {"user_id": [7, 8], "m_f64": [2.0, 3.0], "m_str": ["new", "new"]}
        writer.write(_late_rows(t_new + timedelta(days=1), 3.0, "newer"))
        assert (writer.inserted, writer.upserted) == (1, 2)
        assert _read(ours) == {"user_id": [7, 8], "m_f64": [3.0, 4.0], "m_str": ["newer", "newer"]}
