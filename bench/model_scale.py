"""Model groups at the seed's scale (issue 15): 100M scores in a minute, per-model overhead, registry
size and worker memory, each with its target and a ceiling measured in the same run.

Builds a throw-away project: one local provider (2 worker processes x 1 thread), a SQLite ledger
whose registry holds ``--models`` linear models with ``--versions`` versions each (champion at the
latest; every champion's artifact is written to the provider's storage), a Feast repo on Redis, and
four jobs for one daily window:

* ``inputs`` (feature job): passes through ``--entities`` precomputed rows of 20 Float64 features
  from a parquet file, with ``partitions: --partitions`` (so its output, the group's input, is
  several parts, as in production);
* ``scores`` (case 1): a group of the ``--group`` models tagged ``set=big`` (logistic, all 20
  features each) over ``inputs``' output, into a view of one Float64 field per model and
  ``model_set``: entities x models scores;
* ``inputs_small`` and ``scores_all`` (case 2): every model of the registry (the other ones small:
  2 to 6 features) over ``--small-entities`` entities.

The Feast repo's online store is Redis: by default a private ``redis-server`` the bench starts on a
free port (default settings, so ``hash-max-listpack-entries`` 512), since case 1 leaves ~8 GB in it
and its command statistics then count only this bench's work; ``--redis HOST:PORT`` uses a running
one (db ``--redis-db``, only this run's keys, removed afterwards).  The group's view shares its
entity with the input view, as in production, so the scores land in hashes that already hold the
input's fields.

Printed, per case:

1. ``skyfeast run --job scores`` timed as a process (cluster start and Feast load included), the
   run's phases from its ``--json``, and the Redis server's time by command; then the **write
   ceilings**: the very frame the run wrote (read back from its offline parts) written again by
   skyfeast's Redis writer (``write_latest``, one process) into the hashes as the run found them
   (the input view's fields only) and into new keys; and the ratio of the run to the first.
   Afterwards vanilla ``get_online_features`` reads ``--check`` sampled entities and must equal
   scores computed here in NumPy from the source file and the coefficients, and the versions field
   its expected value (the bench fails loudly otherwise).
2. ``skyfeast run --job scores_all`` timed the same way, its time per model, and its ceilings.
3. ``skyfeast models list`` (and ``--json``) timed as processes, median of ``--list-runs``, on the
   SQLite ledger and on a throw-away PostgreSQL database holding the same rows; beside them a
   process that only loads the config, opens the ledger and lists (no CLI), and the in-process
   ``ModelRegistry.list_models()``.
4. Peak RSS (``VmHWM``, sampled every 0.2 s with psutil) of each Dask worker during case 1.

    .venv/bin/python bench/model_scale.py                          # the issue's sizes
    .venv/bin/python bench/model_scale.py --models 60 --group 50 --entities 5000 --small-entities 2000 \\
        --versions 2 --partitions 4 --no-postgres --json            # the smoke test's

The bench exits 1 when a figure misses its target (``--no-targets``: report only).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import DAY, POSTGRES, ROOT
from seed_day import PeakMemory

N_FEATURES = 20
FEATURES = [f"f{i:02d}" for i in range(N_FEATURES)]
AT = DAY + timedelta(days=1, minutes=30)  # the daily window [DAY, DAY + 1 day) is the latest closed one
TARGETS = {"case1_s": 60.0, "case2_s": 40.0, "list_s": 1.0, "worker_rss_gib": 1.5}

TRANSFORMS = '''"""Pass-through of precomputed features (written by bench/model_scale.py)."""


def passthrough(frame, window):
    return frame
'''


def model_name(i: int) -> str:
    return f"lr{i:04d}"


def coefficients(i: int, group: int) -> tuple[list[str], np.ndarray, float]:
    """Model ``i``'s features, coefficients and intercept: the first ``group`` models read all 20
    features, the others 2 to 6 of them."""
    rng = np.random.default_rng(1_000 + i)
    if i < group:
        feats = FEATURES
    else:
        feats = [FEATURES[j] for j in sorted(rng.choice(N_FEATURES, size=int(rng.integers(2, 7)), replace=False))]
    return feats, rng.normal(scale=0.3, size=len(feats)), float(rng.normal(scale=0.5))


def make_inputs(path: Path, entities: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.permutation(entities).astype(np.int64) * 7919 + 13,
                          "event_timestamp": pd.Timestamp(DAY) + pd.to_timedelta(
                              rng.integers(0, 86_400_000_000, entities), unit="us")})
    for f in FEATURES:
        frame[f] = rng.normal(size=entities)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame


# ----------------------------------------------------------------------------- project
# ----------------------------------------------------------------------------- Redis
class Redis:
    """The bench's Redis: a private ``redis-server`` on a free port (default; its own memory and
    command statistics, stopped afterwards) or a running one (``--redis HOST:PORT``)."""

    def __init__(self, where: str, db: int, root: Path):
        self.db, self.proc = db, None
        if where == "private":
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.host, self.port = "127.0.0.1", s.getsockname()[1]
            with open(root / "redis.log", "wb") as log:
                self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                              "--save", "", "--appendonly", "no", "--dir", str(root)],
                                             stdout=log, stderr=subprocess.STDOUT)
        else:
            self.host, _, port = where.partition(":")
            self.port = int(port or 6379)
        import redis

        self.client = redis.Redis(host=self.host, port=self.port, db=db)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                self.client.ping()
                break
            time.sleep(0.05)
        else:
            self.close()
            raise RuntimeError(f"no Redis answers at {self.host}:{self.port}")

    def online_store(self) -> dict:
        return {"type": "redis", "connection_string": f"{self.host}:{self.port},db={self.db}"}

    def keys(self, project: str) -> list[bytes]:
        return list(self.client.scan_iter(match=b"*" + project.encode(), count=10_000))  # Feast's keys end so

    def clear(self, project: str) -> None:
        keys = self.keys(project)
        for i in range(0, len(keys), 10_000):
            self.client.unlink(*keys[i:i + 10_000])

    def server_seconds(self) -> dict[str, float]:
        """Seconds the server spent in each command since the last call (its command statistics;
        a shared server's include other clients' commands)."""
        stats = {k.removeprefix("cmdstat_"): round(v["usec"] / 1e6, 2) for k, v in self.client.info("commandstats").items()
                 if v["usec"] >= 10_000}
        self.client.config_resetstat()
        return stats

    def settings(self) -> str:
        info = self.client.info("server")
        limits = self.client.config_get("hash-max-listpack-*")
        return (f"Redis {info['redis_version']} at {self.host}:{self.port} db {self.db}"
                f"{' (private)' if self.proc else ''}; hash-max-listpack-entries "
                f"{limits.get('hash-max-listpack-entries')}, -value {limits.get('hash-max-listpack-value')}")

    def memory_mib(self) -> float:
        return self.client.info("memory")["used_memory"] / 2**20

    def close(self) -> None:
        self.client.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def make_project(root: Path, args: argparse.Namespace, redis: Redis) -> str:
    project = f"modelscale_{uuid.uuid4().hex[:8]}"
    (root / "transforms.py").write_text(TRANSFORMS)
    daily = {"type": "cron", "expr": "0 0 * * *"}
    common = {"schedule": daily, "providers": ["local"], "retries": 0, "timeout": "30m"}
    jobs = [
        {"name": "inputs", "kind": "feature", "source": {"type": "parquet", "path": "inputs/big-{date}.parquet"},
         "transform": "transforms:passthrough", "feature_view": "inputs", "partitions": args.partitions, **common},
        {"name": "scores", "kind": "model", "source": {"type": "job", "job": "inputs"},
         "group": {"tag": "set=big", "alias": "champion"}, "feature_view": "scores", **common},
        {"name": "inputs_small", "kind": "feature",
         "source": {"type": "parquet", "path": "inputs/small-{date}.parquet"}, "transform": "transforms:passthrough",
         "feature_view": "inputs_small", "partitions": args.partitions, **common},
        {"name": "scores_all", "kind": "model", "source": {"type": "job", "job": "inputs_small"},
         "group": {"prefix": "lr", "alias": "champion"}, "feature_view": "scores_all", **common},
    ]
    (root / "skyfeast.yaml").write_text(yaml.safe_dump({
        "project": "modelscale", "state": str(root / "state.db"), "feast": {"repo": "feature_repo"},
        "health": {"timeout": "10s", "miss_budget": 6},  # a busy 2-core host is not a dead provider
        "providers": {"local": {"priority": 1, "cluster": {"type": "local", "workers": 2, "threads": 1,
                                                          "memory_limit": args.memory_limit},
                                "storage": {"type": "local", "root": "data"}}},
        "jobs": jobs}, sort_keys=False))
    make_feast(root / "feature_repo", project, redis.online_store(), args)
    return project


def make_feast(path: Path, project: str, online: dict, args: argparse.Namespace) -> None:
    """Entity ``user`` and four views: the two inputs (20 Float64) and the two groups' outputs (one
    Float64 per model, and the String ``model_set``)."""
    path.mkdir(parents=True)
    (path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "registry": "registry.db", "provider": "local", "online_store": online,
        "offline_store": {"type": "file"}, "entity_key_serialization_version": 3}))
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

    def view(name: str, fields: list[str], strings: tuple[str, ...] = ()) -> FeatureView:
        return FeatureView(name=name, entities=[user], ttl=timedelta(days=2),
                           source=FileSource(path=f"../data/offline/{name}", timestamp_field="event_timestamp"),
                           schema=[Field(name="user_id", dtype=Int64), *(Field(name=f, dtype=Float64) for f in fields),
                                   *(Field(name=s, dtype=String) for s in strings)])

    views = [view("inputs", FEATURES), view("inputs_small", FEATURES),
             view("scores", [model_name(i) for i in range(args.group)], ("model_set",)),
             view("scores_all", [model_name(i) for i in range(args.models)], ("model_set",))]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        FeatureStore(repo_path=str(path)).apply([user, *views])


def registry_rows(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict], dict[str, bytes]]:
    """Rows of the registry's tables (what ``ModelRegistry.register`` and ``promote`` write) for
    ``--models`` models x ``--versions`` versions, champion at the latest; and each champion's
    artifact by key (versions before the latest have no artifact: nothing loads them)."""
    from skyfeast.featurestore.models import checksum
    from skyfeast.featurestore.models.flavours import linear_artifact

    now = datetime.now(UTC)
    models, versions, aliases, artifacts = [], [], [], {}
    for i in range(args.models):
        name = model_name(i)
        feats, coef, b = coefficients(i, args.group)
        models.append({"name": name, "created_at": now, "description": None,
                       "tags": {"set": "big" if i < args.group else "small"}})
        for v in range(1, args.versions + 1):
            data = linear_artifact(coef if v == args.versions else coef * 0.9 ** (args.versions - v), b, "logistic")
            key = f"models/{name}/v{v}/model.json"
            sha, size = checksum(data)
            if v == args.versions:
                artifacts[key] = data
            versions.append({"model": name, "version": v, "artifact_key": key, "artifact_uri": None, "sha256": sha,
                             "size": size, "flavour": "linear", "features": list(feats), "outputs": [],
                             "parent_version": v - 1 or None, "metrics": {"auc": 0.7}, "created_at": now,
                             "created_by": "bench"})
        aliases.append({"model": name, "alias": "champion", "version": args.versions, "moved_at": now,
                        "reason": "bench", "actor": "bench"})
    return models, versions, aliases, artifacts


def fill_registry(url: str, rows) -> None:
    """Insert the registry's rows into the (new) ledger at ``url``: in bulk, since 20,000
    transactions of ``register`` would make setting up the bench its slowest part."""
    import sqlalchemy as sa

    from skyfeast.featurestore.models.tables import model_alias_history_t, model_aliases_t, model_versions_t, models_t

    models, versions, aliases, _ = rows
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(models_t.insert(), models)
            for i in range(0, len(versions), 5_000):
                conn.execute(model_versions_t.insert(), versions[i:i + 5_000])
            conn.execute(model_aliases_t.insert(), aliases)
            conn.execute(model_alias_history_t.insert(), [
                {"model": a["model"], "alias": "champion", "from_version": None, "to_version": a["version"],
                 "moved_at": a["moved_at"], "reason": "bench", "actor": "bench"} for a in aliases])
    finally:
        engine.dispose()


def open_state(config: Path) -> str:
    """Create the ledger's tables (schema and migrations as the daemon does); its URL."""
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    ledger = open_ledger(load_config(config, check_imports=False, check_feast=False))
    try:
        return ledger.engine.url.render_as_string(hide_password=False)
    finally:
        ledger.close()


# ----------------------------------------------------------------------------- runs
def skyfeast_cmd(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("skyfeast")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "skyfeast.scheduler.cli", *args]


def run_job(root: Path, job: str, *, memory: bool = False) -> tuple[float, dict, dict]:
    """``skyfeast run --job JOB --json`` as a process: (wall seconds, its run, peak RSS by pid)."""
    cmd = skyfeast_cmd("run", "--config", str(root / "skyfeast.yaml"), "--job", job, "--at", AT.isoformat(), "--json")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    sampler = PeakMemory(proc.pid)
    if memory:
        sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    peaks = sampler.stop() if memory else {}
    if proc.returncode != 0:
        raise RuntimeError(f"skyfeast run --job {job} exited {proc.returncode}:\n{out[-3000:]}\n{err[-4000:]}")
    run = json.loads(out)["runs"][0]
    if run["status"] != "succeeded":
        raise RuntimeError(f"run of {job}: {run['status']}: {run.get('error')}")
    return wall, run, peaks


def written_frame(root: Path, view: str, models: list[str]) -> pd.DataFrame:
    """The rows the run published: its offline parts (``model_set`` included)."""
    parts = sorted((root / "data" / "offline" / view).rglob("*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    missing = [c for c in (*models, "model_set" if models else "user_id") if c not in frame.columns]
    if missing:
        raise RuntimeError(f"the offline parts of {view} lack {missing[:5]}")
    return frame


def expected_set(models: list[str], version: int | None = None) -> str:
    """The versions field's value, computed here from its definition (``ms-`` + sha256 of the
    sorted ``model@version`` lines, 16 hex digits)."""
    text = "\n".join(f"{m}@{version}" for m in sorted(models))
    return "ms-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def ceilings(root: Path, view: str, upstream: str, frame: pd.DataFrame, project: str, redis: Redis,
             extra: bool = False) -> dict:
    """Seconds for skyfeast's Redis writer (``write_latest``, one process, one connection) to write
    ``frame`` (a) into the hashes as the run found them: emptied, then the upstream view's rows
    written again (untimed), so every key is stored and lacks this view; (b) into new keys.  With
    ``extra``, also into the hashes as in (a): (c) by the newest-wins script alone (the stored-key
    path before 2026-12-06) and (d) by plain pipelined ``HSET`` commands with no newest-wins check at all
    (widened first, as the writer does), the physical floor of any stored-key path."""
    from skyfeast.featurestore.online import write_latest
    from skyfeast.featurestore.repo import FeastRepo

    repo = FeastRepo(root / "feature_repo")
    target = repo.write_target(view)
    table = None
    out = {}
    labels = ("stored_keys_s", "new_keys_s", *(("stored_keys_script_s", "stored_keys_plain_hset_s") if extra else ()))
    for label in labels:
        redis.clear(project)
        if label != "new_keys_s":
            write_latest(written_frame(root, upstream, []), repo.write_target(upstream))
        redis.server_seconds()
        t = time.perf_counter()
        if label in ("stored_keys_s", "new_keys_s"):
            n = write_latest(frame, target)
        else:
            if table is None:
                import pyarrow as pa

                cols = [*target.join_keys, *target.features, target.timestamp_field]
                table = pa.Table.from_pandas(frame, columns=cols, preserve_index=False)
                t = time.perf_counter()
            writer = _script_writer(target) if label == "stored_keys_script_s" else _plain_writer(target)
            with writer:
                n = writer.write(table)
        out[label] = round(time.perf_counter() - t, 2)
        out[label.removesuffix("_s") + "_server_s"] = redis.server_seconds()
        if n != len(frame):
            raise RuntimeError(f"ceiling wrote {n:,} of {len(frame):,} rows")
    return out


def _script_writer(target):
    from skyfeast.featurestore.writers.redis import RedisWriter

    return RedisWriter(target, guard_group=0)


def _plain_writer(target):
    """The writer's encodings sent as plain ``HSET`` commands (``_skyfeast_widen`` set in it and deleted
    after when the hashes outgrow a listpack, as the writer does) and ``EXPIRE`` commands, pipelined;
    no read, no check, no ``MULTI``."""
    from skyfeast.featurestore.writers import _columns as col
    from skyfeast.featurestore.writers._dump import listpack_limits
    from skyfeast.featurestore.writers._encode import timestamp_proto
    from skyfeast.featurestore.writers._multi import commands_per_key, hset_rows
    from skyfeast.featurestore.writers._resp import borrowed, bulk_rows, replies
    from skyfeast.featurestore.writers.redis import RedisWriter

    class Plain(RedisWriter):
        def _write_chunk(self, chunk) -> None:
            client = self._redis()
            limits = listpack_limits(client)
            keys = bulk_rows(col.join(chunk.entity_keys, col.const(self.target.repo_config.project.encode())))
            nf = len(self._fields)
            # the writer's rule (no stored timestamp here): widen when the stored fields and the view's
            # pass the listpack limit, else a hash pays for quadratic listpack inserts
            stored = client.hlen(chunk.entity_keys[0].as_py() + self.target.repo_config.project.encode())
            limits = (nf, limits[1]) if limits and limits[0] > 0 and stored + nf + 1 > limits[0] else None
            block = max(1, (32 << 20) // (32 * nf + 64))  # ~32 MB built at a time,
            step = max(1, block // 8)  # sent ~4 MB at a time, each window's replies read before the next
            per_key = commands_per_key(nf, self._ttl, limits)
            with borrowed(client) as conn:
                read = replies(conn)
                for a in range(0, len(chunk), block):
                    b = min(a + block, len(chunk))
                    rows = hset_rows(keys.slice(a, b - a), self._ts_field, timestamp_proto(chunk.event_us[a:b]),
                                     self._fields, [f.proto_bytes.slice(a, b - a) for f in chunk.features],
                                     self._ttl, limits)
                    for w in range(0, b - a, step):
                        stop = min(w + step, b - a)
                        conn.send_packed_command([col.span(rows, w, stop)], check_health=False)
                        for _ in range((stop - w) * per_key):
                            read()
            self.written += len(chunk)

    return Plain(target)


def check_feast(root: Path, view: str, source: pd.DataFrame, models: list[int], args, sample: int,
                seed: int) -> int:
    """Vanilla ``get_online_features`` for ``sample`` entities must equal NumPy's scores."""
    from feast import FeatureStore

    rng = np.random.default_rng(seed)
    rows = source.iloc[rng.choice(len(source), size=min(sample, len(source)), replace=False)]
    names = [model_name(i) for i in models]
    with contextlib.redirect_stdout(io.StringIO()):
        got = FeatureStore(repo_path=str(root / "feature_repo")).get_online_features(
            features=[f"{view}:{n}" for n in names] + [f"{view}:model_set"],
            entity_rows=[{"user_id": int(u)} for u in rows["user_id"]]).to_dict()
    if list(got["user_id"]) != [int(u) for u in rows["user_id"]]:
        raise RuntimeError("Feast returned other entities than asked for")
    for i, name in zip(models, names):
        feats, coef, b = coefficients(i, args.group)
        want = 1.0 / (1.0 + np.exp(-(rows[feats].to_numpy() @ coef + b)))
        have = np.array([np.nan if v is None else v for v in got[name]], dtype=float)
        if not np.allclose(have, want, rtol=1e-9, atol=0):
            bad = int(np.flatnonzero(~np.isclose(have, want, rtol=1e-9, atol=0))[0])
            raise RuntimeError(f"MISMATCH {view}.{name} for user {int(rows['user_id'].iloc[bad])}: Feast reads "
                               f"{have[bad]!r}, NumPy computes {want[bad]!r}")
    want_set = expected_set(names, args.versions)
    if set(got["model_set"]) != {want_set}:
        raise RuntimeError(f"MISMATCH {view}.model_set: Feast reads {sorted(set(map(str, got['model_set'])))[:3]}, "
                           f"expected {want_set}")
    return len(rows) * (len(names) + 1)


# ----------------------------------------------------------------------------- models list
def time_list(config: Path, runs: int) -> dict[str, float]:
    """Median wall seconds of ``skyfeast models list`` and ``... --json`` as processes, and of the
    in-process ``list_models()`` (warm, the floor)."""
    out: dict[str, float] = {}
    for label, extra in (("list_s", ()), ("list_json_s", ("--json",))):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            proc = subprocess.run(skyfeast_cmd("models", "list", "--config", str(config), *extra), cwd=config.parent,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                raise RuntimeError(f"skyfeast models list exited {proc.returncode}: {proc.stderr[-2000:]}")
        out[label] = statistics.median(times)
    # the floor for a process: Python, the config, the ledger and the query, without the CLI's imports
    floor = ("import json, sys\nfrom skyfeast.featurestore.models import ModelRegistry\n"
             "from skyfeast.scheduler.config import load_config\nfrom skyfeast.scheduler.ledger import open_ledger\n"
             "ledger = open_ledger(load_config(sys.argv[1], check_imports=False, check_feast=False))\n"
             "print(json.dumps([m.as_dict() for m in ModelRegistry(ledger.engine).list_models()]))\n")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", floor, str(config)], cwd=config.parent, capture_output=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        times.append(time.perf_counter() - t)
    out["floor_process_s"] = statistics.median(times)
    from skyfeast.featurestore.models import ModelRegistry
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    ledger = open_ledger(load_config(config, check_imports=False, check_feast=False))
    try:
        reg = ModelRegistry(ledger.engine)
        reg.list_models()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            reg.list_models()
            times.append(time.perf_counter() - t)
        out["in_process_s"] = statistics.median(times)
    finally:
        ledger.close()
    return out


@contextlib.contextmanager
def postgres_database():
    import psycopg

    name = f"skyfeast_bench_models_{uuid.uuid4().hex[:8]}"
    admin = f"host={POSTGRES[0]} port={POSTGRES[1]} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def list_on_postgres(root: Path, rows, runs: int) -> dict[str, float]:
    with postgres_database() as url:
        config = root / "skyfeast-pg.yaml"
        data = yaml.safe_load((root / "skyfeast.yaml").read_text())
        config.write_text(yaml.safe_dump({**data, "state": url}, sort_keys=False))
        fill_registry(open_state(config), rows)
        return time_list(config, runs)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=2_000, help="models in the registry; case 2 scores them all")
    ap.add_argument("--versions", type=int, default=10, help="versions per model (champion: the latest)")
    ap.add_argument("--group", type=int, default=500, help="case 1's group: logistic models over all 20 features")
    ap.add_argument("--entities", type=int, default=200_000, help="case 1's entities")
    ap.add_argument("--small-entities", type=int, default=20_000, help="case 2's entities")
    ap.add_argument("--partitions", type=int, default=8, help="the input jobs' partitions (the groups' chunks)")
    ap.add_argument("--memory-limit", default="4GiB", help="each worker's Dask memory limit")
    ap.add_argument("--check", type=int, default=200, help="entities read back through vanilla Feast per case")
    ap.add_argument("--list-runs", type=int, default=3, help="runs of `models list`; the median is printed")
    ap.add_argument("--cases", default="1,2,3", help="which cases to run (1,2,3)")
    ap.add_argument("--no-postgres", action="store_true", help="`models list` on SQLite only")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the write ceilings")
    ap.add_argument("--extra-ceilings", action="store_true",
                    help="also time the stored-key write by the newest-wins script alone and by plain HSETs")
    ap.add_argument("--redis", default="private", metavar="private|HOST:PORT",
                    help="a private redis-server on a free port (default), or a running one")
    ap.add_argument("--redis-db", type=int, default=10)
    ap.add_argument("--no-targets", action="store_true", help="exit 0 even when a figure misses its target")
    ap.add_argument("--keep", action="store_true", help="keep the temporary project (its path is printed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return ap.parse_args(argv)


def phases_line(run: dict) -> str:
    return " / ".join(f"{k} {v:.2f}" for k, v in (run.get("phases") or {}).items()) + " s"


def case_group(root: Path, args, project: str, redis: Redis, say, *, job: str, upstream: str, view: str,
               source: pd.DataFrame, models: list[int], memory: bool) -> dict:
    up_wall, up_run, _ = run_job(root, upstream)
    say(f"  upstream `skyfeast run --job {upstream}`: {up_wall:.1f}s wall, {up_run.get('partitions')} parts "
        f"({phases_line(up_run)})")
    load = os.getloadavg()
    redis.server_seconds()
    wall, run, peaks = run_job(root, job, memory=memory)
    server = redis.server_seconds()
    scores = len(source) * len(models)
    res = {"wall_s": round(wall, 2), "run_s": run.get("seconds"), "chunks": run.get("partitions"),
           "phases_s": run.get("phases"), "entities": len(source), "models": len(models), "scores": scores,
           "scores_per_s": round(scores / wall), "load_before": [round(x, 2) for x in load],
           "upstream_wall_s": round(up_wall, 2), "redis_server_s": server,
           "redis_memory_mib": round(redis.memory_mib())}
    say(f"  `skyfeast run --job {job}`: {wall:.1f}s wall ({run.get('seconds')}s in the runner, {run.get('partitions')}"
        f" chunks): {len(source):,} entities x {len(models):,} models = {scores:,} scores, {scores / wall:,.0f}/s; "
        f"load before {load[0]:.2f}")
    say(f"    phases: {phases_line(run)}")
    say(f"    Redis server time by command: {server} (memory {res['redis_memory_mib']:,} MiB)")
    if memory:
        workers = sorted(mib for role, mib in peaks.values() if role == "dask worker")
        res["peak_worker_rss_mib"] = [round(m) for m in workers]
        res["peak_rss_mib"] = {f"{role} {pid}": round(mib) for pid, (role, mib) in sorted(peaks.items())}
        say(f"    peak worker RSS: {', '.join(f'{m:,.0f}' for m in workers)} MiB "
            f"(target <= {TARGETS['worker_rss_gib']} GiB)")
    names = [model_name(i) for i in models]
    stored = len(redis.keys(project))
    checked = check_feast(root, view, source, models, args, args.check, seed=len(models))
    res["feast_values_checked"] = checked
    say(f"    vanilla get_online_features: {min(args.check, len(source))} entities x {len(names) + 1} fields equal "
        f"NumPy's scores ({stored:,} hashes in Redis)")
    if not args.no_ceiling:
        frame = written_frame(root, view, names)
        c = ceilings(root, view, upstream, frame, project, redis, args.extra_ceilings)
        res["ceiling"] = c
        res["ratio_to_ceiling"] = round(wall / c["stored_keys_s"], 2)
        say(f"    write ceiling, the same {len(frame):,} x {len(names) + 1} fields by write_latest from one process: "
            f"{c['stored_keys_s']:.1f}s into the hashes as the run found them (Redis {c['stored_keys_server_s']}), "
            f"{c['new_keys_s']:.1f}s into new keys (Redis {c['new_keys_server_s']}); the run took "
            f"{res['ratio_to_ceiling']:.2f}x the first")
        if args.extra_ceilings:
            say(f"    into the hashes as the run found them, by the newest-wins script alone: "
                f"{c['stored_keys_script_s']:.1f}s (Redis {c['stored_keys_script_server_s']}); by plain pipelined "
                f"HSETs, no check: {c['stored_keys_plain_hset_s']:.1f}s (Redis {c['stored_keys_plain_hset_server_s']})")
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout  # with --json, the progress goes to stderr

    def say(*a) -> None:
        print(*a, file=out, flush=True)

    cases = {c.strip() for c in args.cases.split(",")}
    root = Path(tempfile.mkdtemp(prefix="skyfeast-model-scale-"))
    project, redis = None, None
    result: dict = {"load_start": [round(x, 2) for x in os.getloadavg()], "targets": TARGETS}
    try:
        t = time.perf_counter()
        big = make_inputs(root / "data" / "inputs" / f"big-{DAY:%Y-%m-%d}.parquet", args.entities, 1)
        small = make_inputs(root / "data" / "inputs" / f"small-{DAY:%Y-%m-%d}.parquet", args.small_entities, 2)
        redis = Redis(args.redis, args.redis_db, root)
        project = make_project(root, args, redis)
        rows = registry_rows(args)
        for key, data in rows[3].items():
            dest = root / "data" / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        fill_registry(open_state(root / "skyfeast.yaml"), rows)
        say(f"project {root}: {args.models:,} models x {args.versions} versions in the registry "
            f"({time.perf_counter() - t:.1f}s to build); load {os.getloadavg()[0]:.2f}")
        say(f"  {redis.settings()}")
        result["redis"] = redis.settings()
        if "1" in cases:
            say(f"case 1: a group of {args.group} logistic models over {args.entities:,} entities "
                f"(target <= {TARGETS['case1_s']:.0f} s)")
            result["case1"] = case_group(root, args, project, redis, say, job="scores", upstream="inputs", view="scores",
                                         source=big, models=list(range(args.group)), memory=True)
            redis.clear(project)
        if "2" in cases:
            say(f"case 2: a group of all {args.models:,} models over {args.small_entities:,} entities "
                f"(target <= {TARGETS['case2_s']:.0f} s)")
            r = result["case2"] = case_group(root, args, project, redis, say, job="scores_all", upstream="inputs_small",
                                             view="scores_all", source=small, models=list(range(args.models)),
                                             memory=False)
            r["ms_per_model"] = round(1000 * r["wall_s"] / args.models, 2)
            say(f"    {r['ms_per_model']:.2f} ms per model (wall / models)")
            redis.clear(project)
        if "3" in cases:
            say(f"case 3: `skyfeast models list` over {args.models:,} models, {args.models * args.versions:,} versions "
                f"(target <= {TARGETS['list_s']:.0f} s), median of {args.list_runs}")
            result["list_sqlite"] = time_list(root / "skyfeast.yaml", args.list_runs)
            if not args.no_postgres:
                result["list_postgres"] = list_on_postgres(root, rows, args.list_runs)
            for label in ("sqlite", "postgres"):
                r = result.get(f"list_{label}")
                if r:
                    say(f"  {label}: `models list` {r['list_s']:.2f}s, `models list --json` {r['list_json_s']:.2f}s "
                        f"as processes; a process that only loads the config, opens the ledger and lists "
                        f"{r['floor_process_s']:.2f}s; list_models() in process {r['in_process_s'] * 1000:.0f} ms")
        result["load_end"] = [round(x, 2) for x in os.getloadavg()]
        missed = misses(result)
        result["missed"] = missed
        if args.json:
            print(json.dumps(result))
        else:
            print(f"load average at the end: {', '.join(f'{x:.2f}' for x in result['load_end'])}")
            print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
        return 1 if missed and not args.no_targets else 0
    finally:
        if redis is not None:
            if project:
                with contextlib.suppress(Exception):
                    redis.clear(project)
            redis.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def misses(result: dict) -> list[str]:
    out = []
    if "case1" in result:
        if result["case1"]["wall_s"] > TARGETS["case1_s"]:
            out.append(f"case 1 took {result['case1']['wall_s']} s")
        rss = max(result["case1"].get("peak_worker_rss_mib") or [0])
        if rss > TARGETS["worker_rss_gib"] * 1024:
            out.append(f"peak worker RSS {rss} MiB")
    if "case2" in result and result["case2"]["wall_s"] > TARGETS["case2_s"]:
        out.append(f"case 2 took {result['case2']['wall_s']} s")
    for label in ("list_sqlite", "list_postgres"):
        r = result.get(label)
        if r and max(r["list_s"], r["list_json_s"]) > TARGETS["list_s"]:
            out.append(f"{label.replace('_', ' on ')} took {max(r['list_s'], r['list_json_s']):.2f} s")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
