"""End-to-end materialisation throughput: ``skyfeast materialize`` vs vanilla ``FeatureStore.materialize``.

Builds one parquet dataset (``--entities`` users, one event each, ``--features``
float32 features) and, per online store, two identical Feast repos over it: one
materialised by :func:`featurestore.materialize.materialize` on a Dask
LocalCluster (2 worker processes, started and warmed up before timing), one by
vanilla ``FeatureStore.materialize`` (local engine, file offline store).  Both
timings include loading the Feast repo; every run starts from an empty online
store.  Vanilla Feast manages ~1,700 rows/s into SQLite, so it is timed on the
first ``--vanilla-entities`` users only and its *rate* is compared (the output
says so).  Peak RSS of each Dask worker (``VmHWM``, reset before the timed
skyfeast runs of each store) is printed beside the skyfeast figures.  After the
timed runs, vanilla ``get_online_features`` reads a sample of entities from each
store and must return the newest values of the window, as computed from the
parquet source.

With ``--update`` the dataset holds a second day of new values for the same
users; each run first stores day one (untimed, by skyfeast) and then times day
two, so every row is an upsert over a stored one: the incremental case
(``materialize-incremental`` every hour).

For Redis the script also measures a raw ingest ceiling: Feast's own hash layout
as prebuilt ``HSET`` commands, sent pipelined over one redis-py connection, no
newest-wins check.  For SQLite and PostgreSQL it measures the same kind of
ceiling: the rows skyfeast stored, prebuilt, loaded into an empty copy of
Feast's table by one connection in one transaction, in primary-key order
(SQLite: one ``INSERT INTO ... SELECT`` from an in-memory table, SQLite's own
insert cost with no Python at all; PostgreSQL: a binary ``COPY``, the server's
bulk path).  PostgreSQL admits parallel writers, so its rows are also split into
``--workers`` key ranges copied by that many connections at once, the most that
skyfeast's parallel writers could reach on the same cores.  With ``--update``
each ceiling is the same load over rows already stored: Redis, the same
``HSET``s over stored hashes; SQLite and PostgreSQL, the newest-wins
``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (PostgreSQL: after a ``COPY``
into a temp stage), every row an update.

    .venv/bin/python bench/materialize.py --entities 200000 --stores sqlite,redis,postgres
    .venv/bin/python bench/materialize.py --entities 1000000 --runs 3 --vanilla-entities 100000
    .venv/bin/python bench/materialize.py --entities 200000 --vanilla-entities 20000 --update
    .venv/bin/python bench/materialize.py --cold --entities 100000 --stores redis,sqlite   # see materialize_cold.py

Needs Redis on 127.0.0.1:6379 (db ``--redis-db``; only this run's keys are
touched and removed) and PostgreSQL on 127.0.0.1:5432 (a throw-away database,
dropped afterwards); a store whose server is down is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from _common import (
    DAY,
    POSTGRES,
    REDIS,
    clear_redis,
    make_feast_repo,
    online_store,
    redis_entities,
    sqlite_entities,
)
from _workers import reset_worker_peaks, worker_peaks

START = DAY
END = START + timedelta(days=1)
END2 = END + timedelta(days=1)  # --update: the second day, over entities the first day stored
VIEW = "bench_fv"
PORTS = {"sqlite": None, "redis": REDIS[1], "postgres": POSTGRES[1]}


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _pg_admin(statement: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(statement)


def make_dataset(root: Path, entities: int, features: int, vanilla_entities: int,
                 days: int = 1) -> tuple[Path, Path]:
    """Full dataset and its first ``vanilla_entities`` users, as parquet: one event per user and
    day, strictly inside [START, START + days), with new values every day."""
    rng = np.random.default_rng(0)
    users = rng.permutation(entities).astype(np.int64) * 7919
    frames = []
    for day in range(days):
        frame = pd.DataFrame({
            "user_id": users,
            "event_ts": pd.Timestamp(START + timedelta(days=day))
            + pd.to_timedelta(rng.integers(1, 86_399, entities), unit="s"),
        })
        for i in range(features):
            frame[f"f{i}"] = rng.random(entities).astype(np.float32)
        frames.append(frame)
    full, subset = root / "full.parquet", root / "subset.parquet"
    for frame_days, path in ((frames, full), ([f.iloc[:vanilla_entities] for f in frames], subset)):
        pd.concat(frame_days, ignore_index=True).to_parquet(path, index=False, row_group_size=100_000)
    return full, subset


def check_reads(repo: "Repo", data: Path, start: datetime, end: datetime, features: int, sample: int = 200) -> None:
    """Vanilla ``get_online_features`` must return, for a sample of entities, the values of
    their newest event in [start, end) as read from the parquet source."""
    from feast import FeatureStore

    frame = pd.read_parquet(data)
    window = frame[(frame["event_ts"] >= pd.Timestamp(start)) & (frame["event_ts"] < pd.Timestamp(end))]
    newest = window.sort_values("event_ts").groupby("user_id").tail(1).set_index("user_id")
    users = newest.index.to_numpy()[np.linspace(0, len(newest) - 1, min(sample, len(newest))).astype(int)]
    names = [f"f{i}" for i in range(features)]
    got = FeatureStore(repo_path=str(repo.path)).get_online_features(
        features=[f"{VIEW}:{n}" for n in names], entity_rows=[{"user_id": int(u)} for u in users]).to_dict()
    for name in names:
        want = newest.loc[users, name].to_numpy(np.float32)
        have = np.array(got[name], dtype=np.float32)
        if not np.array_equal(want, have):
            raise RuntimeError(f"{repo.kind}: Feast reads {name} different from the source's newest values; "
                               "the bench's store is wrong")


class Repo:
    """A Feast repo with one feature view over ``data`` in one online store, and a way to empty it."""

    def __init__(self, kind: str, path: Path, data: Path, features: int, *, redis_db: int, database: str):
        self.kind, self.path, self.redis_db, self.database = kind, path, redis_db, database
        self.project = f"bench_{uuid.uuid4().hex[:8]}"  # distinct Redis keys / PostgreSQL tables per repo
        make_feast_repo(path, self.project, online_store(kind, redis_db=redis_db, database=database), view=VIEW,
                        source=str(data), timestamp_field="event_ts",
                        features={f"f{i}": "Float32" for i in range(features)}, ttl=timedelta(0))

    def clear(self) -> None:
        table = f"{self.project}_{VIEW}"
        if self.kind == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.path / "online.db")) as conn, conn:
                conn.execute(f'DELETE FROM "{table}"')
        elif self.kind == "redis":
            clear_redis(self.redis_db, self.project)
        else:
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
                conn.execute(f'TRUNCATE "{table}"')

    def count(self) -> int:
        """Entities stored (to check that a run wrote what it claims)."""
        table = f"{self.project}_{VIEW}"
        if self.kind == "sqlite":
            return sqlite_entities(self.path / "online.db", table)
        if self.kind == "redis":
            return redis_entities(self.redis_db, self.project)
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
            return conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()[0]


# ---------------------------------------------------------------- the two contenders


def run_skyfeast(repo: Repo, client, start: datetime = START, end: datetime = END,
                 first_writes: list[float] | None = None) -> float:
    """Seconds of one run; appends to ``first_writes`` the seconds from the call to the view's first
    partition write (what reading, sampling and shuffling took before any row could be written)."""
    from skyfeast.featurestore.materialize import materialize

    t, wall = time.perf_counter(), time.time()
    result = materialize(repo.path, [VIEW], start, end, client=client)
    seconds = time.perf_counter() - t
    first = result.per_view[VIEW].first_write_at
    if first_writes is not None and first is not None:
        first_writes.append(first - wall)
    return seconds


def run_vanilla(repo: Repo, start: datetime = START, end: datetime = END) -> float:
    from feast import FeatureStore

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        FeatureStore(repo_path=str(repo.path)).materialize(start, end, feature_views=[VIEW])
    return time.perf_counter() - t


# ---------------------------------------------------------------- Redis ceiling


def resp_hset_commands(data: Path, features: int, project: str, rows: int) -> np.ndarray:
    """One fixed-width RESP ``HSET`` per row, laid out exactly as Feast's Redis store (one uint8 row each)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    frame = pd.read_parquet(data).iloc[:rows]
    n = len(frame)
    probe = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=12345)])
    prefix = serialize_entity_key(probe, 3)[:-8]  # everything before the int64 payload
    ids = frame["user_id"].to_numpy(np.int64)
    assert serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(ids[0]))]), 3) \
        == prefix + ids[0].astype("<i8").tobytes()
    assert Value(float_val=0.5).SerializeToString() == b"\x35" + np.float32(0.5).astype("<f4").tobytes()
    seconds = (frame["event_ts"].astype("int64") // 10**9).to_numpy()
    ts_len = len(Timestamp(seconds=int(seconds[0])).SerializeToString())

    def const(b: bytes) -> np.ndarray:
        return np.broadcast_to(np.frombuffer(b, np.uint8), (n, len(b)))

    def bulk_const(b: bytes) -> np.ndarray:
        return const(b"$%d\r\n%s\r\n" % (len(b), b))

    key_len = len(prefix) + 8 + len(project)
    cols = [const(b"*%d\r\n" % (2 + 2 * (features + 1))), bulk_const(b"HSET"),
            const(b"$%d\r\n" % key_len + prefix), ids.astype("<i8").view(np.uint8).reshape(n, 8),
            const(project.encode() + b"\r\n")]
    values = frame[[f"f{i}" for i in range(features)]].to_numpy(np.float32)
    for i in range(features):
        cols += [bulk_const(_mmh3(f"{VIEW}:f{i}")), const(b"$5\r\n\x35"),
                 values[:, i].astype("<f4").view(np.uint8).reshape(n, 4), const(b"\r\n")]
    stamps = np.frombuffer(b"".join(Timestamp(seconds=int(s)).SerializeToString() for s in seconds), np.uint8)
    if len(stamps) != n * ts_len:
        raise RuntimeError("timestamps of different encoded lengths; pick whole seconds in one range")
    cols += [bulk_const(f"_ts:{VIEW}".encode()), const(b"$%d\r\n" % ts_len), stamps.reshape(n, ts_len),
             const(b"\r\n")]
    return np.ascontiguousarray(np.concatenate(cols, axis=1))


def run_redis_ceiling(commands: np.ndarray, db: int, window: int = 2_000) -> float:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    conn = client.connection_pool.get_connection()
    try:
        t = time.perf_counter()
        for start in range(0, len(commands), window):
            batch = commands[start : start + window]
            conn.send_packed_command([batch.tobytes()], check_health=False)
            for _ in range(len(batch)):
                conn.read_response()
        return time.perf_counter() - t
    finally:
        client.connection_pool.release(conn)
        client.close()


def check_ceiling_layout(commands: np.ndarray, sky_project: str, ceiling_project: str, db: int) -> None:
    """The ceiling's first hash must equal the one skyfeast wrote for the same entity (same bytes Feast reads)."""
    import redis

    parts = bytes(commands[0]).split(b"\r\n", 4)  # *N, $4, HSET, $len, key...
    key = parts[4][: int(parts[3][1:])]
    assert key.endswith(ceiling_project.encode())
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        ours = client.hgetall(key[: -len(ceiling_project)] + sky_project.encode())
        theirs = client.hgetall(key)
    finally:
        client.close()
    if not ours or ours != theirs:
        raise RuntimeError("the ceiling's HSET layout differs from what skyfeast/Feast store; fix the bench")


# ---------------------------------------------------------------- SQL ceilings


def print_runs(kind: str, label: str, times: list[float]) -> None:
    """Every timed run beside the median, when there is more than one."""
    if len(times) > 1:
        print(f"{kind:<9} {label:<16} runs: {', '.join(f'{t:.2f}' for t in times)} s", flush=True)


def _upsert_set(table: str, cols: list[str], excluded: str) -> str:
    """``ON CONFLICT`` clause: newest wins, as skyfeast's and Feast's SQL stores resolve a stored row."""
    updates = ", ".join(f"{c} = {excluded}.{c}" for c in cols if c not in ("entity_key", "feature_name"))
    return (f"ON CONFLICT (entity_key, feature_name) DO UPDATE SET {updates} "
            f'WHERE "{table}".event_ts IS NULL OR {excluded}.event_ts >= "{table}".event_ts')


def _stored_rows(sky: Repo, entities: int, cols: list[str] | None = None) -> tuple[list, list, list, list]:
    """``(ddl, cols, keys, rows)`` of the rows skyfeast stored for its first ``entities`` entities: the
    table's DDL, the columns read (default: all), those entities' keys, and their rows in primary-key
    order (entity, then feature name)."""
    import sqlite3

    table = f"{sky.project}_{VIEW}"
    with contextlib.closing(sqlite3.connect(sky.path / "online.db")) as src:
        ddl = [r[0] for r in src.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL",
                                         (table,))]
        cols = cols or [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
        keys = [r[0] for r in src.execute(f'SELECT DISTINCT entity_key FROM "{table}" ORDER BY entity_key LIMIT ?',
                                          (entities,))]
        rows = src.execute(f'SELECT {", ".join(cols)} FROM "{table}" WHERE entity_key <= ? '
                           "ORDER BY entity_key, feature_name", (keys[-1],)).fetchall()
    return ddl, cols, keys, rows


def _time_in_fresh_db(db: Path, ddl: list[str], table: str, expect: int, prepare) -> float:
    """Seconds of one timed statement in a fresh database ``db`` holding Feast's table (``ddl``):
    ``prepare(conn)`` fills what it reads (untimed) and returns ``(statement, parameters)``; the
    statement runs in one transaction, and the table must then hold ``expect`` rows."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for statement in ddl:
            conn.execute(statement)
        conn.execute("PRAGMA temp_store = MEMORY")
        statement, params = prepare(conn)
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(statement, params)
        conn.execute("COMMIT")
        seconds = time.perf_counter() - t
        if conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] != expect:
            raise RuntimeError(f"a SQLite ceiling lost rows in {db.name}; fix the bench")
    db.unlink()
    return seconds


def sqlite_ceiling(sky: Repo, dest: Path, entities: int, runs: int, upsert: bool = False) -> tuple[float, int]:
    """(median seconds, entities): the rows skyfeast stored for the first ``entities`` entities,
    prebuilt in an in-memory TEMP table in primary-key order, then copied by one ``INSERT INTO
    ... SELECT`` in one transaction into a fresh table with Feast's own DDL (read back from the
    skyfeast repo's database): SQLite's own cost of inserting these rows, with no Python, no
    encoding, no newest-wins check and the most favourable (globally sorted) order, so a
    ceiling no writer of Feast's layout passes on one connection.  With ``upsert`` the table
    already holds the same keys with older rows (loaded untimed) and the timed statement is the
    newest-wins upsert over them, every row an update: the same ceiling for an incremental run."""
    table = f"{sky.project}_{VIEW}"
    ddl, cols, keys, rows = _stored_rows(sky, entities)

    def prepare(conn) -> tuple[str, tuple]:
        conn.execute(f'CREATE TEMP TABLE prebuilt AS SELECT {", ".join(cols)} FROM "{table}" WHERE 0')
        conn.execute("BEGIN")
        conn.executemany(f'INSERT INTO prebuilt VALUES ({", ".join("?" * len(cols))})', rows)
        conn.execute("COMMIT")
        load = f'INSERT INTO "{table}" ({", ".join(cols)}) SELECT * FROM prebuilt'
        if upsert:
            # The stored rows the timed upsert updates: a day older, other value bytes of the
            # same size.  (Rewriting a row with identical bytes lets SQLite skip the page
            # write, which no real update does.)
            older = ["randomblob(length(value))" if c == "value" else "event_ts - 86400" if c == "event_ts"
                     else c for c in cols]
            conn.execute(f'INSERT INTO "{table}" ({", ".join(cols)}) SELECT {", ".join(older)} FROM prebuilt')
            load += " WHERE true " + _upsert_set(table, cols, "excluded")
        return load, ()

    times = [_time_in_fresh_db(dest / f"ceiling-{i}.db", ddl, table, len(rows), prepare) for i in range(runs)]
    print_runs("sqlite", "ceiling", times)
    return statistics.median(times), len(keys)


def sqlite_stage_ceiling(sky: Repo, dest: Path, entities: int, runs: int) -> tuple[float, int]:
    """(median seconds, entities): the same rows as :func:`sqlite_ceiling`, prebuilt instead in the
    skyfeast writer's own wide TEMP stage (one row per entity, each feature's value and text in
    columns), then inserted by the writer's own fresh-range ``INSERT ... SELECT`` (which unpivots the
    stage with a ``CASE`` tree), one transaction, into a fresh table with Feast's DDL: SQLite's cost of
    the statement the writer runs, with no Python, no encoding and no staging (first loads only)."""
    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.featurestore.writers.sqlite import _STAGE, SqliteWriter

    table = f"{sky.project}_{VIEW}"
    writer = SqliteWriter(FeastRepo(sky.path).write_target(VIEW))
    try:  # the writer's own stage DDL and statement (its connection reads the table's columns)
        stage_ddl = [r[0] for r in writer._connect().execute(
            "SELECT sql FROM sqlite_temp_master WHERE name = ?", (_STAGE,))]
        with_num = writer._with_num
        values = ["value", "value_text", *(["value_num"] if with_num else [])]
        ddl, _, keys, rows = _stored_rows(sky, entities, ["entity_key", "feature_name", *values, "event_ts",
                                                          "created_ts"])
        names = sorted({r[1] for r in rows})
        width = len(names)
        sql = writer._upsert_sql(width, upsert=False)
    finally:
        writer.close()
    wide = []
    for i in range(0, len(rows), width):  # every entity has every feature, in name order
        group = rows[i:i + width]
        cells = [c for r in group for c in r[2:2 + len(values)]]
        wide.append((group[0][0], group[0][-2], group[0][-1], *cells))

    def prepare(conn) -> tuple[str, tuple]:
        conn.execute("PRAGMA cache_size = -65536")  # as the writer sets it (the bulk ceiling keeps the default)
        for statement in stage_ddl:  # sqlite_temp_master keeps it as CREATE TABLE: a TEMP table again
            conn.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {_STAGE} VALUES ({', '.join('?' * len(wide[0]))})", wide)
        conn.execute("COMMIT")
        return sql, tuple(names)

    times = [_time_in_fresh_db(dest / f"stage-ceiling-{i}.db", ddl, table, len(rows), prepare) for i in range(runs)]
    print_runs("sqlite", "stage ceiling", times)
    return statistics.median(times), len(keys)


def postgres_ceiling(sky: Repo, entities: int, runs: int, connections: int = 1,
                     upsert: bool = False) -> tuple[float, int]:
    """(median seconds, entities): the rows skyfeast stored for the first ``entities`` entities,
    exported as binary COPY buffers, then ``COPY ... FROM STDIN (FORMAT BINARY)`` into an empty
    ``LIKE ... INCLUDING ALL`` copy of Feast's table (same primary key and indexes): the server's
    bulk-load limit for Feast's layout, no newest-wins check.  With ``connections`` > 1 the rows
    are split into that many contiguous key ranges, each copied by its own connection in its
    own transaction, all at once (what parallel writers could reach at best); the time is the
    wall time until the last one commits.  With ``upsert`` the table already holds the same rows
    (loaded untimed) and each connection times a ``COPY`` into a temp stage plus the newest-wins
    ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` over them, every row an update: the same
    ceiling for an incremental run."""
    import threading

    import psycopg

    table = f"{sky.project}_{VIEW}"
    ceiling = f"ceil_{uuid.uuid4().hex[:8]}"

    def connect():
        return psycopg.connect(host="127.0.0.1", user="postgres", dbname=sky.database)

    with connect() as conn:
        keys = [r[0] for r in conn.execute(f'SELECT entity_key FROM "{table}" GROUP BY entity_key '
                                           "ORDER BY entity_key LIMIT %s", (entities,)).fetchall()]
        bounds = [keys[(len(keys) * (i + 1)) // connections - 1] for i in range(connections)]
        buffers = []
        for i, last in enumerate(bounds):
            low = "" if i == 0 else "entity_key > %(low)s AND "
            buf = bytearray()
            with conn.cursor().copy(f'COPY (SELECT * FROM "{table}" WHERE {low}entity_key <= %(last)s '
                                    "ORDER BY entity_key, feature_name) TO STDOUT (FORMAT BINARY)",
                                    {"low": bounds[i - 1] if i else None, "last": last}) as copy:
                for block in copy:
                    buf += block
            buffers.append(bytes(buf))
        cols = [r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = quote_ident(%s)::regclass "
                                           "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]
        conn.execute(f'CREATE TABLE "{ceiling}" (LIKE "{table}" INCLUDING ALL)')
        conn.commit()
        times = []
        writers = [connect() for _ in buffers]
        stage = "ceiling_stage"
        if upsert:
            for writer in writers:
                writer.execute(f'CREATE TEMP TABLE {stage} (LIKE "{table}") ON COMMIT DELETE ROWS')
                writer.commit()
        target = stage if upsert else f'"{ceiling}"'
        names = ", ".join(cols)
        apply = f'INSERT INTO "{ceiling}" ({names}) SELECT {names} FROM {stage} ' + _upsert_set(ceiling, cols, "EXCLUDED")

        def copy_in(writer, buf: bytes, into: str) -> None:
            with writer.cursor().copy(f"COPY {into} FROM STDIN (FORMAT BINARY)") as copy:
                for start in range(0, len(buf), 1 << 20):
                    copy.write(buf[start : start + (1 << 20)])

        try:
            def load(writer, buf: bytes, errors: list) -> None:
                try:
                    copy_in(writer, buf, target)
                    if upsert:
                        writer.execute(apply)
                    writer.commit()
                except BaseException as exc:  # reported below, on the main thread
                    errors.append(exc)

            for _ in range(runs):
                conn.execute(f'TRUNCATE "{ceiling}"')
                conn.commit()
                if upsert:  # the stored rows the timed upserts update
                    for buf in buffers:
                        copy_in(conn, buf, f'"{ceiling}"')
                    conn.commit()
                errors: list = []
                threads = [threading.Thread(target=load, args=(w, b, errors)) for w, b in zip(writers, buffers)]
                t = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                times.append(time.perf_counter() - t)
                if errors:
                    raise errors[0]
            n = conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{ceiling}"').fetchone()[0]
            if n != len(keys):
                raise RuntimeError("the PostgreSQL ceiling lost rows; fix the bench")
        finally:
            for writer in writers:
                writer.close()
            conn.execute(f'DROP TABLE IF EXISTS "{ceiling}"')
            conn.commit()
    print_runs("postgres", f"ceiling ({connections} conn.)", times)
    return statistics.median(times), len(keys)


# ---------------------------------------------------------------- main


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=1_000_000, help="entities (one event each) for skyfeast")
    ap.add_argument("--features", type=int, default=20, help="float32 features per row (default 20)")
    ap.add_argument("--stores", default="sqlite,redis,postgres", help="comma-separated subset")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per contender; the median is reported")
    ap.add_argument("--vanilla-entities", type=int, default=100_000,
                    help="vanilla Feast is timed on this many entities and its rate compared (default 100000)")
    ap.add_argument("--ceiling-entities", type=int, default=200_000,
                    help="entities loaded for each store's raw ceiling (default 200000)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    ap.add_argument("--update", action="store_true",
                    help="time a second day of new values over entities already stored (an incremental run: "
                         "every row is an upsert) instead of a first load into an empty store")
    ap.add_argument("--redis-db", type=int, default=9)
    ap.add_argument("--start-timeout", type=float, default=600.0,
                    help="seconds to wait for the Dask workers (each imports Feast: minutes on a loaded host)")
    args = ap.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in args.stores if s not in PORTS]
    if unknown or args.runs < 1 or args.entities < 1 or args.vanilla_entities < 1:
        ap.error(f"bad arguments (unknown stores {unknown}?)" if unknown else "counts must be positive")
    return args


@dataclass
class Bench:
    """One invocation: its arguments, scratch space and the state its steps share."""

    args: argparse.Namespace
    tmp: Path
    database: str  # the throw-away PostgreSQL database (created on first use)
    connector: Any  # the LocalConnector skyfeast runs on
    client: Any = None
    full: Path | None = None  # the dataset skyfeast loads
    subset: Path | None = None  # its first vanilla_n entities, which vanilla Feast loads
    made_db: bool = False

    @property
    def vanilla_n(self) -> int:
        return min(self.args.vanilla_entities, self.args.entities)

    @property
    def window(self) -> tuple[datetime, datetime]:
        """The timed window: the first day, or with --update the second."""
        return (END, END2) if self.args.update else (START, END)

    def repo(self, kind: str, path: Path, data: Path) -> Repo:
        return Repo(kind, path, data, self.args.features, redis_db=self.args.redis_db, database=self.database)


def new_bench(args: argparse.Namespace) -> Bench:
    import skyfeast.adapters.clusters.local as local_clusters
    from skyfeast.adapters.clusters.local import LocalConnector, Preload

    local_clusters.START_TIMEOUT = args.start_timeout
    tmp = Path(tempfile.mkdtemp(prefix="skyfeast-bench-mat-"))
    database = f"skyfeast_bench_{uuid.uuid4().hex[:8]}"
    # As the Feast engine's local cluster: Feast imported at scheduler start, the typechecks filter
    # on the workers. Named here, not imported: importing skyfeast.scheduler or .featurestore in
    # this process before Feast would strip vanilla Feast's own runtime typechecks too.
    preload = Preload(scheduler=("skyfeast.featurestore.writers",), workers=("skyfeast.featurestore._typechecks",))
    connector = LocalConnector(workers=args.workers, threads=1, memory_limit="auto", name="bench", preload=preload)
    return Bench(args, tmp, database, connector)


def build_dataset(b: Bench) -> None:
    args = b.args
    t = time.perf_counter()
    b.full, b.subset = make_dataset(b.tmp, args.entities, args.features, b.vanilla_n, days=2 if args.update else 1)
    print(f"dataset: {args.entities:,} entities x {args.features} float32 features, one event each "
          f"{'on each of two days ' if args.update else ''}"
          f"({time.perf_counter() - t:.1f}s to build); vanilla Feast measured on the first {b.vanilla_n:,} entities; "
          f"median of {args.runs} run(s); "
          + ("every run updates a store holding the first day (written untimed by skyfeast)" if args.update
             else "every run into an empty store"), flush=True)


def start_cluster(b: Bench) -> None:
    """Start the Dask cluster and warm it up (untimed)."""
    b.client = b.connector.connect()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warm = b.repo("sqlite", b.tmp / "warmup", b.subset)
    run_skyfeast(warm, b.client)  # workers import Feast and set up the p2p shuffle once, untimed
    print(f"skyfeast: Dask LocalCluster, {b.args.workers} worker processes x 1 thread, warmed up before timing",
          flush=True)


def print_header() -> None:
    print(f"{'store':<9} {'contender':<16} {'entities':>10} {'median s':>9} {'rows/s':>10} {'values/s':>12} "
          f"{'vs vanilla':>10}  peak RSS per worker, MiB", flush=True)


def bench_store(b: Bench, kind: str) -> dict | None:
    """Both contenders and the raw ceiling on one store: its summary row, or None when skipped."""
    if PORTS[kind] and not _reachable(PORTS[kind]):
        print(f"{kind:<9} skipped: nothing listens on 127.0.0.1:{PORTS[kind]}", flush=True)
        return None
    if kind == "postgres" and not b.made_db:
        _pg_admin(f'CREATE DATABASE "{b.database}"')
        b.made_db = True
    sky = b.repo(kind, b.tmp / kind / "skyfeast", b.full)
    van = b.repo(kind, b.tmp / kind / "vanilla", b.subset)
    try:
        rates, peaks = time_contenders(b, kind, sky, van)
        row = {"store": kind, **rates, "worker_peak_mib": max(peaks) if peaks else None}
        if kind == "redis":
            time_redis_ceiling(b, sky, rates, row)
        else:
            time_sql_ceiling(b, kind, sky, rates, row)
        return row
    finally:
        for repo in (sky, van):
            with contextlib.suppress(Exception):
                repo.clear()


def time_contenders(b: Bench, kind: str, sky: Repo, van: Repo) -> tuple[dict[str, float], list[float]]:
    """Vanilla Feast, then skyfeast, ``--runs`` times each from an empty (or first-day) store; prints
    a line per contender. Returns the rows/s of each and the skyfeast workers' peak RSS."""
    args, client, window = b.args, b.client, b.window
    rates: dict[str, float] = {}
    peaks: list[float] = []
    firsts: list[float] = []
    for label, repo, n, fn in (("vanilla Feast", van, b.vanilla_n, lambda r: run_vanilla(r, *window)),
                               ("skyfeast", sky, args.entities,
                                lambda r: run_skyfeast(r, client, *window, first_writes=firsts))):
        times = []
        if label == "skyfeast":
            reset_worker_peaks(client)
        for _ in range(args.runs):
            repo.clear()
            if args.update:  # the first day, already stored when the timed run starts
                run_skyfeast(repo, client, START, END)
            times.append(fn(repo))
            stored = repo.count()
            if stored != n:
                raise RuntimeError(f"{label} on {kind} stored {stored:,} entities, expected {n:,}")
        check_reads(repo, b.subset if repo is van else b.full, *window, args.features)
        median = statistics.median(times)
        rates[label] = _rate(n, median)
        ratio = f"{rates[label] / rates['vanilla Feast']:.1f}x"
        peaks = worker_peaks(client) if label == "skyfeast" else []
        peak = ", ".join(f"{m:,.0f}" for m in peaks) if peaks else ""
        print(f"{kind:<9} {label:<16} {n:>10,} {median:>9.2f} {rates[label]:>10,.0f} "
              f"{rates[label] * args.features:>12,.0f} {ratio:>10}  {peak}", flush=True)
        print_runs(kind, label, times)
    if firsts:
        rates["first_write_s"] = statistics.median(firsts)
    return rates, peaks


def time_redis_ceiling(b: Bench, sky: Repo, rates: dict[str, float], row: dict) -> None:
    """Feast's own HSETs, prebuilt and pipelined over one connection; sets ``row["ceiling"]``."""
    args, kind = b.args, "redis"
    m = min(args.ceiling_entities, args.entities)
    project = f"ceil_{uuid.uuid4().hex[:8]}"
    # with --update the HSETs are over stored hashes: the rows of the first pass
    commands = resp_hset_commands(b.full, args.features, project, m)
    times = []
    for _ in range(args.runs):
        clear_redis(args.redis_db, project)
        if args.update:
            run_redis_ceiling(commands, args.redis_db)
        times.append(run_redis_ceiling(commands, args.redis_db))
    if not args.update:  # skyfeast stored the second day's values: other bytes
        check_ceiling_layout(commands, sky.project, project, args.redis_db)
    clear_redis(args.redis_db, project)
    ceiling = _rate(m, statistics.median(times))
    row["ceiling"] = ceiling
    label = "HSET over stored" if args.update else "raw HSET ceiling"
    print(f"{kind:<9} {label:<16} {m:>10,} {statistics.median(times):>9.2f} "
          f"{ceiling:>10,.0f} {ceiling * args.features:>12,.0f} "
          f"{ceiling / rates['vanilla Feast']:>9.1f}x", flush=True)
    print(f"{kind:<9} skyfeast at {rates['skyfeast'] / ceiling:.0%} of one connection pipelining "
          "Feast's own HSETs" + (" over stored hashes (no newest-wins check, which skyfeast makes per key: "
                                 "an HGET of the view's timestamp under WATCH, then MULTI/HSET/EXEC)"
                                 if args.update else
                                 " (no newest-wins check; skyfeast creates new hashes with RESTORE, "
                                 "which costs the server less, so it can pass this)"), flush=True)


def time_sql_ceiling(b: Bench, kind: str, sky: Repo, rates: dict[str, float], row: dict) -> None:
    """The rows skyfeast stored, bulk-loaded (or upserted) by one connection, and for PostgreSQL
    also by ``--workers`` connections at once; sets ``row["ceiling"]`` (and ``"parallel_ceiling"``)."""
    args = b.args
    m = min(args.ceiling_entities, args.entities)
    what = "upsert over stored rows" if args.update else "bulk load into an empty table"
    if kind == "sqlite":
        secs, m = sqlite_ceiling(sky, b.tmp / kind, m, args.runs, upsert=args.update)
        label = "SQL upsert ceil." if args.update else "SQL bulk ceiling"
        what = f"one-connection in-SQLite INSERT ... SELECT ceiling ({what})"
    else:
        secs, m = postgres_ceiling(sky, m, args.runs, upsert=args.update)
        label = "COPY+upsert ceil" if args.update else "raw COPY ceiling"
        what = f"one-connection binary COPY ceiling ({what})"
    ceiling = row["ceiling"] = _rate(m, secs)
    print(f"{kind:<9} {label:<16} {m:>10,} {secs:>9.2f} {ceiling:>10,.0f} "
          f"{ceiling * args.features:>12,.0f} {ceiling / rates['vanilla Feast']:>9.1f}x", flush=True)
    if kind == "postgres" and args.workers > 1:
        # skyfeast's workers copy at once, so show what that many connections reach.
        secs2, m2 = postgres_ceiling(sky, m, args.runs, connections=args.workers, upsert=args.update)
        parallel = row["parallel_ceiling"] = _rate(m2, secs2)
        print(f"{kind:<9} {f'{args.workers} conns at once':<16} {m2:>10,} {secs2:>9.2f} "
              f"{parallel:>10,.0f} {parallel * args.features:>12,.0f} "
              f"{parallel / rates['vanilla Feast']:>9.1f}x", flush=True)
    print(f"{kind:<9} skyfeast reaches {rates['skyfeast'] / ceiling:.0%} of the {what} into Feast's "
          "table (prebuilt rows)", flush=True)
    if kind == "sqlite" and not args.update:
        secs3, m3 = sqlite_stage_ceiling(sky, b.tmp / kind, m, args.runs)
        stage = row["stage_ceiling"] = _rate(m3, secs3)
        print(f"{kind:<9} {'SQL stage ceil.':<16} {m3:>10,} {secs3:>9.2f} {stage:>10,.0f} "
              f"{stage * args.features:>12,.0f} {stage / rates['vanilla Feast']:>9.1f}x", flush=True)
        print(f"{kind:<9} skyfeast reaches {rates['skyfeast'] / stage:.0%} of the writer's own INSERT ... SELECT "
              "from its wide stage, prebuilt (the statement skyfeast runs, without its Python)", flush=True)
    first = rates.get("first_write_s")
    if kind == "sqlite" and first is not None:
        # SQLite takes one writer at a time: a run lasts at least until its first write, plus every
        # row's insert at the ceiling's own speed (the ceiling's time scaled to all entities)
        inserts = args.entities / ceiling
        bound = row["first_write_bound"] = inserts / (first + inserts)
        print(f"{kind:<9} skyfeast's first write began {first:.2f} s into its run (median; reading, sampling "
              f"and shuffling before it): with every insert at the ceiling's speed ({inserts:.2f} s for "
              f"{args.entities:,} entities) it could reach at most {bound:.0%} of the ceiling", flush=True)


def print_summary(b: Bench, summary: list[dict]) -> None:
    args = b.args
    print()
    for row in summary:
        print(f"{row['store']}: skyfeast {row['skyfeast'] * args.features:,.0f} values/s vs vanilla "
              f"{row['vanilla Feast'] * args.features:,.0f} values/s (vanilla measured on {b.vanilla_n:,} entities)"
              f" = {row['skyfeast'] / row['vanilla Feast']:.1f}x"
              + (f"; {row['skyfeast'] / row['ceiling']:.0%} of the store's raw one-connection ceiling "
                 f"({row['ceiling'] / row['vanilla Feast']:.1f}x vanilla)"
                 if "ceiling" in row else "")
              + (f"; {row['skyfeast'] / row['parallel_ceiling']:.0%} of {args.workers} connections at once "
                 f"({row['parallel_ceiling'] / row['vanilla Feast']:.1f}x vanilla)"
                 if "parallel_ceiling" in row else "")
              + (f"; peak worker RSS {row['worker_peak_mib']:,.0f} MiB" if row["worker_peak_mib"] else ""))


def clean_up(b: Bench) -> None:
    b.connector.close()
    if b.made_db:
        _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{b.database}'"
                  " AND pid <> pg_backend_pid()")
        _pg_admin(f'DROP DATABASE IF EXISTS "{b.database}"')
    shutil.rmtree(b.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--cold" in argv:  # command against command, as processes: bench/materialize_cold.py
        import materialize_cold

        return materialize_cold.main(argv)
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    b = new_bench(args)
    try:
        build_dataset(b)
        start_cluster(b)
        print_header()
        summary = [row for kind in args.stores if (row := bench_store(b, kind)) is not None]
        print_summary(b, summary)
    finally:
        clean_up(b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
