"""Command against command, cold: ``skyfeast materialize`` vs ``feast materialize START END``.

``bench/materialize.py --cold`` runs this module (issue 17, target 1).  It builds
one parquet dataset of mixed types, as a user's feature view has them:
``--floats`` float32 features, an int64, a string, a bool and a nullable
float64 (30% nulls), one event per entity, and for 5% of the entities a second,
*older* event written after the newer one in the file (late data).  For each
store it applies two identical Feast repos over that file (different projects,
so Redis keys and SQL tables never collide), then, each as a separate process
started from the shell's point of view (``subprocess``, wall clock from launch
to exit, every run into an empty online store):

* ``feast -c REPO materialize START END`` (vanilla Feast, its local engine);
* ``skyfeast materialize --feast-repo REPO --start START --end END --json``.

It prints both medians, their ratio against the issue's target, and the
skyfeast process's own phase times from its ``--json`` output (``phases``:
seconds since process start of imports, repo load, cluster ready, the first
partition write, the last write, the printed result; the exit is measured
here), plus the machine's load.  Afterwards it compares what the two commands
stored for a sample of entities, byte for byte (Redis hashes; SQLite and
PostgreSQL rows), and fails if they differ.

    .venv/bin/python bench/materialize.py --cold --entities 100000 --stores redis,sqlite
    .venv/bin/python bench/materialize.py --cold --entities 1000000 --stores redis --vanilla-runs 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DAY, REDIS, clear_redis, make_feast_repo, online_store, redis_entities, sqlite_entities  # noqa: E402

START, END = DAY, DAY + timedelta(days=1)
VIEW = "cold_fv"
TARGETS = {"redis": {100_000: 6.0, 1_000_000: 12.0}, "sqlite": {100_000: 4.0}, "postgres": {}}
BIN = Path(sys.executable).parent
LATE_SHARE = 0.05


def feature_types(floats: int) -> dict[str, str]:
    return {**{f"f{i}": "Float32" for i in range(floats)}, "n_int": "Int64", "s_tag": "String",
            "b_flag": "Bool", "x_opt": "Float64"}


def make_dataset(path: Path, entities: int, floats: int, seed: int = 0) -> int:
    """The parquet file; returns its row count.  Every timestamp is a whole second strictly inside
    [START, END), so Feast's inclusive end and skyfeast's exclusive end read the same rows."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(entities).astype(np.int64) * 7919 + 11
    late = rng.choice(entities, int(entities * LATE_SHARE), replace=False)
    n_new = entities
    secs = rng.integers(3_600, 86_399, n_new)
    ids = np.r_[users, users[late]]
    # the late rows are older than the entity's newest and come after it in the file
    stamps = np.r_[secs, secs[late] - rng.integers(1, 3_600, len(late))]
    n = len(ids)
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(ids),
        "event_ts": pa.array((pd.Timestamp(START).value // 1000 + stamps * 1_000_000), pa.timestamp("us", "UTC")),
    }
    for i in range(floats):
        cols[f"f{i}"] = pa.array(rng.random(n, dtype=np.float32))
    cols["n_int"] = pa.array(rng.integers(-10**12, 10**12, n))
    cols["s_tag"] = pa.array([f"tag-{v}" for v in rng.integers(0, 50_000, n).tolist()])
    cols["b_flag"] = pa.array(rng.random(n) < 0.5)
    cols["x_opt"] = pa.array(rng.normal(size=n), mask=rng.random(n) < 0.3)
    pq.write_table(pa.table(cols), path, row_group_size=100_000)
    return n


class Pair:
    """Two Feast repos of one online store over the same file: one per contender."""

    def __init__(self, kind: str, root: Path, data: Path, floats: int, *, redis_db: int, database: str | None):
        self.kind, self.redis_db, self.database = kind, redis_db, database
        self.repos: dict[str, tuple[Path, str]] = {}
        for who in ("skyfeast", "feast"):
            project = f"cold_{who[:3]}_{uuid.uuid4().hex[:6]}"
            path = root / kind / who
            make_feast_repo(path, project, online_store(kind, redis_db=redis_db, database=database), view=VIEW,
                            source=str(data), timestamp_field="event_ts", features=feature_types(floats),
                            ttl=timedelta(0))
            self.repos[who] = (path, project)

    def table(self, who: str) -> str:
        return f"{self.repos[who][1]}_{VIEW}"

    def clear(self, who: str) -> None:
        path, project = self.repos[who]
        if self.kind == "redis":
            clear_redis(self.redis_db, project)
        elif self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(path / "online.db")) as conn, conn:
                conn.execute(f'DELETE FROM "{self.table(who)}"')
        else:
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
                conn.execute(f'TRUNCATE "{self.table(who)}"')

    def count(self, who: str) -> int:
        path, project = self.repos[who]
        if self.kind == "redis":
            return redis_entities(self.redis_db, project)
        if self.kind == "sqlite":
            return sqlite_entities(path / "online.db", self.table(who))
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
            return conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{self.table(who)}"').fetchone()[0]

    def sample(self, who: str, keys: list[bytes]) -> dict:
        """What ``who`` stored for the serialised entity ``keys``: Redis hashes (and whether each has
        a TTL), or SQL rows without the table name; comparable across the two projects."""
        path, project = self.repos[who]
        if self.kind == "redis":
            import redis

            client = redis.Redis(host=REDIS[0], port=REDIS[1], db=self.redis_db)
            try:
                pipe = client.pipeline(transaction=False)
                for k in keys:
                    pipe.hgetall(k + project.encode())
                return dict(zip(keys, pipe.execute()))
            finally:
                client.close()
        query = f'SELECT * FROM "{self.table(who)}" WHERE entity_key IN ({",".join("?" * len(keys))}) ' \
                "ORDER BY entity_key, feature_name"
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(path / "online.db")) as conn:
                return {"rows": conn.execute(query, keys).fetchall()}
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.database) as conn:
            rows = conn.execute(query.replace("?", "%s"), keys).fetchall()
        return {"rows": [tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") else v for v in r) for r in rows]}


def sample_keys(data: Path, count: int) -> list[bytes]:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    ids = pq.read_table(data, columns=["user_id"]).column(0).to_numpy()
    # the last rows are the late ones: take both kinds
    picks = np.r_[ids[np.linspace(0, len(ids) - 1, count // 2).astype(int)], ids[-(count - count // 2):]]
    return [serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(u))]), 3)
            for u in dict.fromkeys(picks.tolist())]


def run(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(launch epoch, wall seconds to exit, stdout) of one command; raises on a non-zero exit."""
    t0 = time.time()
    m0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - m0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return t0, wall, proc.stdout


def skyfeast_argv(repo: Path, workers: int, extra: list[str]) -> list[str]:
    return [str(BIN / "skyfeast"), "materialize", "--feast-repo", str(repo), "--start", START.isoformat(),
            "--end", END.isoformat(), "--workers", str(workers), "--json", *extra]


FLOOR = """import os, sys, time
import skyfeast.featurestore._typechecks
from feast import FeatureStore
FeatureStore(repo_path=sys.argv[1]).list_feature_views()
print(time.time(), flush=True)
os._exit(0)
"""


def time_floor(repo: Path, runs: int) -> float:
    """Median seconds from launch until a process that only imports Feast (its typechecks skipped,
    as skyfeast does) has loaded the repo's registry: what any command reading this Feast repo
    pays before it can write anything (compare with skyfeast's ``repo_loaded`` and first write)."""
    times = []
    for _ in range(runs):
        t0, _, out = run([sys.executable, "-c", FLOOR, str(repo)])
        times.append(float(out.strip()) - t0)
    return statistics.median(times)


def feast_argv(repo: Path) -> list[str]:
    fmt = "%Y-%m-%dT%H:%M:%S"
    return [str(BIN / "feast"), "-c", str(repo), "materialize", START.strftime(fmt), END.strftime(fmt)]


def load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def time_skyfeast(pair: Pair, runs: int, workers: int, entities: int,
                  extra: list[str]) -> tuple[list[float], list[dict]]:
    walls, phases = [], []
    repo = pair.repos["skyfeast"][0]
    for _ in range(runs):
        pair.clear("skyfeast")
        t0, wall, out = run(skyfeast_argv(repo, workers, extra))
        result = json.loads(out)
        got = pair.count("skyfeast")
        if not result["ok"] or got != entities:
            raise RuntimeError(f"skyfeast stored {got:,} entities, expected {entities:,}: {out[-2000:]}")
        ph = {k: round(v - t0, 3) for k, v in (result.get("phases") or {}).items() if v is not None}
        ph["exit"] = round(wall, 3)
        ph["view_s"] = max(v["seconds"] for v in result["views"])
        ph["mode"] = result.get("mode")
        walls.append(wall)
        phases.append(ph)
        print(f"  skyfeast run: {wall:.2f} s  phases (s since launch): "
              + ", ".join(f"{k} {v}" for k, v in ph.items()) + f"  [{load()}]", flush=True)
    return walls, phases


def time_feast(pair: Pair, runs: int, entities: int) -> list[float]:
    walls = []
    for _ in range(runs):
        pair.clear("feast")
        _, wall, _ = run(feast_argv(pair.repos["feast"][0]))
        got = pair.count("feast")
        if got != entities:
            raise RuntimeError(f"feast materialize stored {got:,} entities, expected {entities:,}")
        walls.append(wall)
        print(f"  feast run: {wall:.2f} s  [{load()}]", flush=True)
    return walls


def check_identical(pair: Pair, keys: list[bytes]) -> None:
    ours, theirs = pair.sample("skyfeast", keys), pair.sample("feast", keys)
    if ours != theirs or not any(theirs.values()):
        raise RuntimeError(f"{pair.kind}: skyfeast and feast stored different bytes for the sampled entities")


def median_phases(phases: list[dict]) -> dict:
    names = [k for k in phases[0] if k != "mode"]
    return {k: round(statistics.median(p[k] for p in phases if k in p), 2) for k in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--floats", type=int, default=20, help="float32 features (besides int, string, bool, nullable)")
    ap.add_argument("--stores", default="redis,sqlite", help="comma-separated: redis, sqlite, postgres")
    ap.add_argument("--runs", type=int, default=3, help="skyfeast runs per store (median)")
    ap.add_argument("--vanilla-runs", type=int, default=3,
                    help="feast materialize runs per store (median; 0: skyfeast only)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--redis-db", type=int, default=9)
    ap.add_argument("--sample", type=int, default=400, help="entities compared byte for byte")
    ap.add_argument("--sky-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for skyfeast materialize (repeatable), e.g. --sky-arg=--in-process-rows=0")
    ap.add_argument("--json", action="store_true", help="also print a JSON summary as the last line")
    args = ap.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="skyfeast-bench-cold-"))
    database = None
    summary = []
    try:
        data = tmp / "events.parquet"
        rows = make_dataset(data, args.entities, args.floats)
        nf = len(feature_types(args.floats))
        print(f"dataset: {args.entities:,} entities, {rows:,} rows ({rows - args.entities:,} late, older rows), "
              f"{nf} features ({args.floats} float32, int64, string, bool, nullable float64); "
              f"skyfeast median of {args.runs}, feast of {args.vanilla_runs}; {load()}", flush=True)
        keys = sample_keys(data, args.sample)
        for kind in stores:
            if kind == "postgres" and database is None:
                import psycopg

                database = f"skyfeast_cold_{uuid.uuid4().hex[:8]}"
                with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{database}"')
            pair = Pair(kind, tmp, data, args.floats, redis_db=args.redis_db, database=database)
            try:
                print(f"{kind}:", flush=True)
                sky, phases = time_skyfeast(pair, args.runs, args.workers, args.entities, args.sky_arg)
                floor = time_floor(pair.repos["skyfeast"][0], args.runs)
                print(f"  floor (a process that only imports Feast and loads this repo): {floor:.2f} s", flush=True)
                van = time_feast(pair, args.vanilla_runs, args.entities)
                if van:
                    check_identical(pair, keys)
            finally:
                for who in pair.repos:
                    with contextlib.suppress(Exception):
                        pair.clear(who)
            s = statistics.median(sky)
            v = statistics.median(van) if van else None
            ratio = v / s if v else None
            target = TARGETS.get(kind, {}).get(args.entities)
            ph = median_phases(phases)
            row = {"store": kind, "entities": args.entities, "skyfeast_s": round(s, 2),
                   "feast_s": round(v, 2) if v else None, "ratio": round(ratio, 2) if ratio else None,
                   "target": target, "phases_s": ph, "mode": phases[0]["mode"], "floor_s": round(floor, 2),
                   "values_per_s": round(args.entities * nf / s)}
            summary.append(row)
            versus = f"feast {v:.2f} s = {ratio:.1f}x" if ratio else "feast not run"
            print(f"{kind}: skyfeast {s:.2f} s vs {versus}"
                  + (f" (target >= {target:g}x: {'met' if ratio >= target else 'MISSED'})" if target and ratio else "")
                  + "; skyfeast phases (median s since launch): "
                  + ", ".join(f"{k} {x}" for k, x in ph.items())
                  + f" (target first_write <= 2 s; floor {floor:.2f} s); mode {row['mode']}; view "
                  + f"{args.entities * nf / ph['view_s']:,.0f} values/s"
                  + (f"; identical bytes on {len(keys)} entities" if van else "") + f"; {load()}", flush=True)
        if args.json:
            print(json.dumps({"stores": summary}))
    finally:
        if database:
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
                conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
                             " AND pid <> pg_backend_pid()")
                conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
