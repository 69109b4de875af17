"""Online-write throughput: skyfeast's writers vs Feast's ``online_write_batch``.

Writes N entities × F float32 features (one feature view, int64 entity key) into
fresh SQLite / Redis / PostgreSQL online stores, ``--runs`` times each, and
prints the median rows/s and feature values/s of both paths and their ratio.
The Feast path is what ``skyfeast.featurestore.online.write_latest`` does: Arrow →
``_convert_arrow_to_proto`` → ``online_write_batch`` in batches of 5,000.
Each run starts from an empty store (so both measure inserts).

    .venv/bin/python bench/materialize_writers.py                 # 200k rows, all stores
    .venv/bin/python bench/materialize_writers.py --rows 50000 --stores redis --runs 5
    .venv/bin/python bench/materialize_writers.py --feast-rows 20000   # cap the slow baseline

Needs Redis on 127.0.0.1:6379 (uses db ``--redis-db``, keys of a throw-away
project, removed afterwards) and PostgreSQL on 127.0.0.1:5432 (a throw-away
database, dropped afterwards); a store whose server is down is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from skyfeast.featurestore.repo import FeastRepo, load_store
from skyfeast.featurestore.writers import writer_for


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


class Bench:
    """One store: a Feast repo with one feature view, and a way to empty it."""

    def __init__(self, kind: str, root: Path, features: int, redis_db: int, schema: dict[str, str] | None = None):
        self.kind, self.project = kind, f"bench_{uuid.uuid4().hex[:8]}"
        self.repo = root / f"{kind}_{self.project}"
        self.repo.mkdir()
        self.redis_db = redis_db
        self.database = f"skyfeast_bench_{uuid.uuid4().hex[:8]}"
        if kind == "postgres":
            self._pg_admin(f'CREATE DATABASE "{self.database}"')
        online = {
            "sqlite": {"type": "sqlite", "path": "online.db"},
            "redis": {"type": "redis", "connection_string": f"127.0.0.1:6379,db={redis_db}"},
            "postgres": {"type": "postgres", "host": "127.0.0.1", "port": 5432, "database": self.database,
                         "user": "postgres", "password": "", "sslmode": "disable"},
        }[kind]
        (self.repo / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": self.project, "registry": "registry.db", "provider": "local", "online_store": online,
            "offline_store": {"type": "file"}, "entity_key_serialization_version": 3,
        }))
        import feast.types
        from feast import Entity, FeatureView, Field, FileSource, ValueType

        schema = schema or {f"f{i}": "Float32" for i in range(features)}
        user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
        view = FeatureView(
            name="bench_fv", entities=[user], ttl=timedelta(0),
            source=FileSource(path=str(self.repo / "unused.parquet"), timestamp_field="event_ts"),
            schema=[Field(name="user_id", dtype=feast.types.Int64)]
            + [Field(name=name, dtype=getattr(feast.types, dtype)) for name, dtype in schema.items()],
        )
        self.store = load_store(self.repo)
        self.store.apply([user, view])
        self.target = FeastRepo(self.repo).write_target("bench_fv")

    @staticmethod
    def _pg_admin(statement: str) -> None:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(statement)

    def clear(self) -> None:
        table = f"{self.project}_bench_fv"
        if self.kind == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.repo / "online.db")) as conn, conn:
                conn.execute(f'DELETE FROM "{table}"')
        elif self.kind == "redis":
            import redis

            client = redis.Redis(host="127.0.0.1", port=6379, db=self.redis_db)
            keys = list(client.scan_iter(match=b"*" + self.project.encode(), count=10_000))
            for i in range(0, len(keys), 10_000):
                client.unlink(*keys[i : i + 10_000])
            client.close()
        else:
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
                conn.execute(f'TRUNCATE "{table}"')

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.clear()
        if self.kind == "postgres":
            self._pg_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.database}'"
                " AND pid <> pg_backend_pid()"
            )
            self._pg_admin(f'DROP DATABASE IF EXISTS "{self.database}"')


def make_table(rows: int, features: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {
        "user_id": pa.array(rng.permutation(rows).astype(np.int64) * 7919),
        "event_ts": pa.array(1_700_000_000_000_000 + rng.integers(0, 86_400_000_000, rows),
                             pa.timestamp("us", tz="UTC")),
    }
    for i in range(features):
        cols[f"f{i}"] = pa.array(rng.random(rows).astype(np.float32))
    return pa.table(cols)


MIXED = {"n_int": "Int64", "s_tag": "String", "b_flag": "Bool", "x_opt": "Float64"}


def mixed_table(rows: int, features: int, seed: int = 0) -> pa.Table:
    """:func:`make_table` with its last four float32 columns replaced by an int64, a string, a bool
    and a float64 with 30% nulls: the same number of values, of the types a user's view mixes."""
    rng = np.random.default_rng(seed + 1)
    table = make_table(rows, features - len(MIXED), seed)
    extra = {"n_int": pa.array(rng.integers(-10**12, 10**12, rows)),
             "s_tag": pa.array([f"tag-{v}" for v in rng.integers(0, 50_000, rows).tolist()]),
             "b_flag": pa.array(rng.random(rows) < 0.5),
             "x_opt": pa.array(rng.normal(size=rows), mask=rng.random(rows) < 0.3)}
    for name, column in extra.items():
        table = table.append_column(name, column)
    return table


def run_mixed(args, tmp: Path) -> None:
    """Float-only against mixed types, skyfeast's writers only, runs interleaved; prints both
    rates, this process's CPU seconds per run, and the ratio (target: mixed within 1.3x)."""
    import os

    floats, mixed = make_table(args.rows, args.features), mixed_table(args.rows, args.features)
    print(f"{args.rows:,} rows x {args.features} features: float-only (all float32) against mixed "
          f"({args.features - len(MIXED)} float32, int64, string, bool, float64 with 30% nulls); median of "
          f"{args.runs} interleaved runs; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
        benches = {"float": Bench(kind, tmp, args.features, args.redis_db),
                   "mixed": Bench(kind, tmp, args.features, args.redis_db, schema={
                       **{f"f{i}": "Float32" for i in range(args.features - len(MIXED))}, **MIXED})}
        tables = {"float": floats, "mixed": mixed}
        times: dict[str, list[float]] = {"float": [], "mixed": []}
        cpu: dict[str, list[float]] = {"float": [], "mixed": []}
        try:
            for _ in range(args.runs):
                for label, bench in benches.items():
                    bench.clear()
                    c0 = time.process_time()
                    times[label].append(run_skyfeast(bench, tables[label]))
                    cpu[label].append(time.process_time() - c0)
        finally:
            for bench in benches.values():
                bench.close()
        rate = {k: args.rows * args.features / statistics.median(v) for k, v in times.items()}
        for label in benches:
            print(f"{kind:<9} {label:<6} {statistics.median(times[label]):>7.2f} s {rate[label]:>12,.0f} values/s  "
                  f"client CPU {statistics.median(cpu[label]):.2f} s", flush=True)
        ratio = rate["float"] / rate["mixed"]
        print(f"{kind}: mixed types at {ratio:.2f}x float-only's time per value (target <= 1.3x: "
              f"{'met' if ratio <= 1.3 else 'MISSED'}); load {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
              flush=True)


def run_skyfeast(bench: Bench, table: pa.Table) -> float:
    start = time.perf_counter()
    with writer_for(bench.target) as writer:
        writer.write(table)
    return time.perf_counter() - start


def run_feast(bench: Bench, table: pa.Table) -> float:
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.utils import _convert_arrow_to_proto

    target, cfg = bench.target, bench.target.repo_config
    fv = target.feature_view
    key_types = {ec.name: ec.dtype.to_value_type() for ec in fv.entity_columns}
    start = time.perf_counter()
    store = get_online_store_from_config(cfg.online_store)
    for batch in table.to_batches(max_chunksize=5_000):
        store.online_write_batch(cfg, fv, _convert_arrow_to_proto(batch, fv, key_types), None)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="entities written per run (default 200000)")
    parser.add_argument("--features", type=int, default=20, help="float32 features per row (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs per writer; the median is reported (default 3)")
    parser.add_argument("--stores", default="sqlite,redis,postgres", help="comma-separated subset")
    parser.add_argument("--feast-rows", type=int, default=None,
                        help="rows for the Feast baseline (default: --rows); rates stay comparable")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--mixed", action="store_true",
                        help="time skyfeast's writers on float-only rows against mixed types (issue 17, target 3)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.mixed:
        with tempfile.TemporaryDirectory(prefix="skyfeast-bench-") as tmp:
            run_mixed(args, Path(tmp))
        return 0

    table = make_table(args.rows, args.features)
    feast_table = table.slice(0, args.feast_rows or args.rows)
    ports = {"sqlite": None, "redis": 6379, "postgres": 5432}
    print(f"{args.rows:,} rows x {args.features} float32 features, median of {args.runs} runs"
          + (f" (Feast baseline on {feast_table.num_rows:,} rows)" if feast_table.num_rows != args.rows else ""))
    print(f"{'store':<9} {'writer':<9} {'rows':>9} {'median s':>9} {'rows/s':>10} {'values/s':>12} {'speed-up':>9}")
    with tempfile.TemporaryDirectory(prefix="skyfeast-bench-") as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            if ports[kind] and not _reachable(ports[kind]):
                print(f"{kind:<9} skipped: nothing listens on 127.0.0.1:{ports[kind]}")
                continue
            bench = Bench(kind, Path(tmp), args.features, args.redis_db)
            try:
                rates = {}
                for label, fn, data in (("feast", run_feast, feast_table), ("skyfeast", run_skyfeast, table)):
                    times = []
                    for _ in range(args.runs):
                        bench.clear()
                        times.append(fn(bench, data))
                    median = statistics.median(times)
                    rates[label] = data.num_rows / median
                    ratio = f"{rates[label] / rates['feast']:.1f}x"
                    print(f"{kind:<9} {label:<9} {data.num_rows:>9,} {median:>9.2f} {rates[label]:>10,.0f} "
                          f"{rates[label] * args.features:>12,.0f} {ratio:>9}", flush=True)
            finally:
                bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
