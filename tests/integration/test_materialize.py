"""Drop-in materialisation against real Feast repos (SQLite online store) and a real LocalCluster.

One parquet dataset (3,000 users, 1-6 events each, two feature views sharing the
``user`` entity, one with a created-timestamp column) is materialised by
skyfeast, by vanilla ``FeatureStore.materialize``, by the ``skyfeast
materialize`` command and by ``feast materialize`` with the Dask engine plugin.
Expected online values are recomputed here with plain pandas.  No event lies on
a range boundary, so Feast's inclusive end and skyfeast's exclusive end select
the same rows.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore")]

PROJECT = "mat"
USERS = 3_000
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1, T2, T3 = T0 + timedelta(days=1), T0 + timedelta(days=2), T0 + timedelta(days=3)
STATS = ["f0", "f1", "f2", "f3", "i0", "i1", "s0"]
SCORES = ["score", "cnt"]
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- data and repos


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    rng = np.random.default_rng(20260301)
    root = tmp_path_factory.mktemp("mat-data")
    n = rng.integers(1, 7, USERS)
    ids = np.repeat(np.arange(USERS, dtype=np.int64) * 7 + 3, n)
    # whole seconds over [T0 - 6h, T3 + 6h): some rows fall outside every range tested
    secs = rng.integers(-6 * 3600, 3 * 86400 + 6 * 3600, len(ids))
    ts = pd.Timestamp(T0) + pd.to_timedelta(secs, unit="s")
    bounds = {pd.Timestamp(t) for t in (T0, T1, T2, T3)}
    stats = pd.DataFrame({"user_id": ids, "event_ts": ts})
    stats = stats[~stats["event_ts"].isin(bounds)].drop_duplicates(["user_id", "event_ts"]).reset_index(drop=True)
    m = len(stats)
    for i in range(4):
        stats[f"f{i}"] = rng.normal(size=m).astype(np.float32)
    stats["i0"] = rng.integers(-10**12, 10**12, m)
    stats["i1"] = rng.integers(0, 100, m)
    stats["s0"] = [f"tag-{v}" for v in rng.integers(0, 10**6, m)]
    scores = stats[["user_id", "event_ts"]].copy()
    scores["created_ts"] = scores["event_ts"] + pd.to_timedelta(rng.integers(1, 3600, m), unit="s")
    scores["score"] = rng.random(m)
    scores["cnt"] = rng.integers(0, 1000, m)
    stats.sample(frac=1, random_state=1).to_parquet(root / "stats.parquet", index=False, row_group_size=4_000)
    scores.sample(frac=1, random_state=2).to_parquet(root / "scores.parquet", index=False)
    return {"root": root, "stats": stats, "scores": scores, "users": np.arange(USERS, dtype=np.int64) * 7 + 3}


def make_repo(path: Path, data: Path, *, batch_engine: dict | None = None) -> Path:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64, String

    path.mkdir(parents=True)
    config = {"project": PROJECT, "registry": "registry.db", "provider": "local",
              "online_store": {"type": "sqlite", "path": "online.db"}, "offline_store": {"type": "file"},
              "entity_key_serialization_version": 3}
    if batch_engine:
        config["batch_engine"] = batch_engine
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="user_stats", entities=[user], ttl=timedelta(days=30),
        source=FileSource(path=str(data / "stats.parquet"), timestamp_field="event_ts"),
        schema=[Field(name="user_id", dtype=Int64), *(Field(name=f"f{i}", dtype=Float32) for i in range(4)),
                Field(name="i0", dtype=Int64), Field(name="i1", dtype=Int64), Field(name="s0", dtype=String)],
    )
    scores = FeatureView(
        name="user_scores", entities=[user], ttl=timedelta(days=30),
        source=FileSource(path=str(data / "scores.parquet"), timestamp_field="event_ts",
                          created_timestamp_column="created_ts"),
        schema=[Field(name="user_id", dtype=Int64), Field(name="score", dtype=Float64), Field(name="cnt", dtype=Int64)],
    )
    with redirect_stdout(io.StringIO()):
        FeatureStore(repo_path=str(path)).apply([user, stats, scores])
    return path


def expected(frame: pd.DataFrame, start: datetime, end: datetime, sort: list[str]) -> pd.DataFrame:
    """Newest row per user among events in [start, end), computed independently of skyfeast."""
    inside = frame[(frame["event_ts"] >= pd.Timestamp(start)) & (frame["event_ts"] < pd.Timestamp(end))]
    return inside.sort_values(sort).drop_duplicates("user_id", keep="last").set_index("user_id")


def online(repo: Path, users: np.ndarray) -> pd.DataFrame:
    from feast import FeatureStore

    with redirect_stdout(io.StringIO()):
        store = FeatureStore(repo_path=str(repo))
        got = store.get_online_features(
            features=[f"user_stats:{f}" for f in STATS] + [f"user_scores:{f}" for f in SCORES],
            entity_rows=[{"user_id": int(u)} for u in users],
        ).to_dict()
    return pd.DataFrame(got).set_index("user_id")


def assert_reads(repo: Path, data: dict, start: datetime, end: datetime, views=("user_stats", "user_scores")) -> None:
    got = online(repo, data["users"])
    checks = {"user_stats": (data["stats"], STATS, ["event_ts"]),
              "user_scores": (data["scores"], SCORES, ["event_ts", "created_ts"])}
    for view in views:
        frame, features, sort = checks[view]
        want = expected(frame, start, end, sort).reindex(data["users"])
        for f in features:
            g, w = got[f], want[f]
            assert g.isna().tolist() == w.isna().tolist(), f"{view}.{f}: present entities differ"
            g, w = g[w.notna()], w[w.notna()]
            if f.startswith("f"):
                np.testing.assert_array_equal(g.to_numpy(np.float32), w.to_numpy(np.float32), err_msg=f)
            elif f == "score":
                np.testing.assert_array_equal(g.to_numpy(np.float64), w.to_numpy(np.float64), err_msg=f)
            elif f == "s0":
                assert g.tolist() == w.tolist(), f
            else:
                np.testing.assert_array_equal(g.to_numpy(np.int64), w.to_numpy(np.int64), err_msg=f)


def sqlite_rows(repo: Path) -> dict[str, list]:
    with sqlite3.connect(repo / "online.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name').fetchall() for t in tables}


def registry_states(repo: Path) -> dict[str, int]:
    """Feature view states straight from the file registry (cheap enough to poll)."""
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    proto.ParseFromString((repo / "registry.db").read_bytes())
    return {fv.spec.name: fv.meta.state for fv in proto.feature_views}


def intervals(repo: Path, view: str) -> list[tuple[datetime, datetime]]:
    from feast import FeatureStore

    with redirect_stdout(io.StringIO()):
        fv = FeatureStore(repo_path=str(repo)).get_feature_view(view)
    return [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in fv.materialization_intervals]


# ---------------------------------------------------------------- cluster and runs


@pytest.fixture(scope="module")
def client():
    from skyfeast.adapters.clusters.local import LocalConnector

    conn = LocalConnector(workers=2, threads=1, memory_limit="auto", name="test-materialize")
    yield conn.connect()
    conn.close()


@pytest.fixture(scope="module")
def materialized(dataset, client, tmp_path_factory):
    from skyfeast.featurestore.materialize import materialize

    repo = make_repo(tmp_path_factory.mktemp("mat") / "skyfeast", dataset["root"])
    shutil.copytree(repo, repo.parent / "vanilla")  # same registry, empty online store: for vanilla Feast
    result = materialize(repo, None, T0, T3, client=client)
    return repo, result


# ---------------------------------------------------------------- tests


def test_reads_match_pandas(materialized, dataset):
    repo, result = materialized
    assert_reads(repo, dataset, T0, T3)
    want = expected(dataset["stats"], T0, T3, ["event_ts"])
    assert result.ok and set(result.per_view) == {"user_stats", "user_scores"}
    assert result.per_view["user_stats"].rows == len(want)
    assert result.per_view["user_stats"].values == len(want) * len(STATS)
    assert result.rows == 2 * len(want)


def test_online_store_identical_to_vanilla_feast(materialized):
    from feast import FeatureStore

    repo, _ = materialized
    vanilla = repo.parent / "vanilla"
    with redirect_stdout(io.StringIO()):
        FeatureStore(repo_path=str(vanilla)).materialize(T0, T3)
    ours, theirs = sqlite_rows(repo), sqlite_rows(vanilla)
    assert set(ours) == {f"{PROJECT}_user_stats", f"{PROJECT}_user_scores"} == set(theirs)
    for table in ours:
        assert len(ours[table]) > 1000
        assert ours[table] == theirs[table], f"{table} differs from vanilla Feast"


def test_registry_records_interval_and_view_stays_servable(materialized):
    from feast.feature_view import FeatureViewState

    repo, _ = materialized
    for view in ("user_stats", "user_scores"):
        assert intervals(repo, view) == [(T0, T3)]
    assert set(registry_states(repo).values()) == {FeatureViewState.AVAILABLE_ONLINE.value}


def test_late_data_never_replaces_newer_values(dataset, client, tmp_path):
    """[T1, T2) then the older [T0, T1): newer values stay; the view is never MATERIALIZING."""
    from feast.feature_view import FeatureViewState

    from skyfeast.featurestore.materialize import materialize

    repo = make_repo(tmp_path / "late", dataset["root"])
    seen: set[int] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.update(registry_states(repo).values())
            except Exception:  # a registry file caught mid-rewrite; the next poll reads it whole
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        materialize(repo, ["user_stats", "user_scores"], T1, T2, client=client)
        materialize(repo, None, T0, T1, client=client)
    finally:
        stop.set()
        watcher.join()
    assert FeatureViewState.MATERIALIZING.value not in seen
    assert_reads(repo, dataset, T0, T2)
    assert sorted(intervals(repo, "user_stats")) == [(T0, T1), (T1, T2)]


def test_one_views_bad_input_fails_that_view_only(dataset, client, tmp_path):
    """On a cluster, the key-range samples of every view are computed together; a view whose input
    fails there (event times that are not times) fails alone, and the others are written."""
    import shutil

    from skyfeast.featurestore.materialize import MaterializeFailed, materialize

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(dataset["root"] / "scores.parquet", data / "scores.parquet")
    stats = pd.read_parquet(dataset["root"] / "stats.parquet")
    stats["event_ts"] = "not a time"
    stats.to_parquet(data / "stats.parquet", index=False)
    repo = make_repo(tmp_path / "one_bad", data)
    with pytest.raises(MaterializeFailed) as ei:
        materialize(repo, None, T0, T3, client=client)
    views = ei.value.result.per_view
    want = len(expected(dataset["scores"], T0, T3, ["event_ts", "created_ts"]))  # users with a score inside
    assert views["user_scores"].ok and views["user_scores"].rows == want, views
    assert not views["user_stats"].ok and "not a time" in views["user_stats"].error, views
    assert views["user_stats"].failure_class == "data"


def test_key_range_chunks_hold_one_slice_each_and_resume_exactly(dataset, client, tmp_path):
    """SQLite keeps Feast's rows in key order, so chunks are key ranges fixed from a sample.  Each
    chunk writes exactly the entities of its range; an attempt given an earlier attempt's book
    writes only the chunks still missing, over the same ranges, and the two halves add up to the
    same table as one run."""
    from skyfeast.featurestore.chunks import ChunkBook
    from skyfeast.featurestore.materialize import _prepare, run_plans
    from skyfeast.featurestore.partitioning import partition_of, serialised_keys

    want = expected(dataset["stats"], T0, T3, ["event_ts"])
    full = make_repo(tmp_path / "full", dataset["root"])
    books: dict = {}
    # four ranges (a chained SQLite view defaults to one per worker): halves worth resuming
    result = run_plans(client, _prepare(full, ["user_stats"], T0, T3)[1], books=books, partitions=4)
    book = books["user_stats"]
    assert result["user_stats"].ok, result["user_stats"].error
    assert book.ranges is not None and book.partitions == book.ranges.partitions >= 3

    _, (plan,) = _prepare(full, ["user_stats"], T0, T3)
    part = partition_of(serialised_keys(want.reset_index()[["user_id"]], plan.target), book.ranges)
    per_chunk = np.bincount(part, minlength=book.partitions)
    assert {i: s["rows"] for i, s in book.done.items()} == dict(enumerate(per_chunk.tolist()))
    assert per_chunk.min() > 0.4 * len(want) / book.partitions  # balanced by the sample
    # SQLite takes one writer at a time: the chunks were written one after another, in key order
    spans = [(book.done[i]["started"], book.done[i]["finished"]) for i in range(book.partitions)]
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans

    halves = make_repo(tmp_path / "halves", dataset["root"])
    table = f"{PROJECT}_user_stats"
    evens = {i for i in range(book.partitions) if i % 2 == 0}
    for skip in (set(range(book.partitions)) - evens, evens):  # first the even chunks, then the odd ones
        resumed = ChunkBook(partitions=book.partitions, ranges=book.ranges,
                            done={i: book.done[i] for i in skip})
        written = run_plans(client, _prepare(halves, ["user_stats"], T0, T3)[1], books={"user_stats": resumed})
        assert written["user_stats"].ok and set(resumed.done) == set(range(book.partitions))
        if skip != evens:  # after the first half: exactly the entities of the even ranges
            with sqlite3.connect(halves / "online.db") as conn:
                stored = conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()[0]
            assert stored == int(per_chunk[sorted(evens)].sum())
    assert sqlite_rows(halves)[table] == sqlite_rows(full)[table]


def _command(*argv: str) -> tuple[int, str]:
    from skyfeast.scheduler.cli.materialize import cmd_materialize, register

    parser = argparse.ArgumentParser(prog="skyfeast")
    register(parser.add_subparsers(dest="command"))
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cmd_materialize(parser.parse_args(["materialize", *argv]))
    return code, buf.getvalue()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_usage_errors(dataset, tmp_path):
    from skyfeast.scheduler.errors import UsageError

    repo = make_repo(tmp_path / "usage", dataset["root"])
    bad = [
        (["--feature-view", "nope"], "unknown feature view"),
        (["--start", "2026-03-02", "--end", "2026-03-01"], "must be after"),
        (["--start", "yesterday"], "not an ISO-8601 time"),
    ]
    for extra, message in bad:
        args = ["--feast-repo", str(repo), "--start", "2026-03-01", "--end", "2026-03-03", *extra]
        with pytest.raises(UsageError, match=message):
            _command(*args)
    with pytest.raises(UsageError, match="no feature_store.yaml"):
        _command("--feast-repo", str(tmp_path), "--start", "2026-03-01", "--end", "2026-03-03")
    with pytest.raises(UsageError, match=f"--feast-repo: {tmp_path / 'nowhere'} does not exist"):
        _command("--feast-repo", str(tmp_path / "nowhere"), "--start", "2026-03-01", "--end", "2026-03-03")
    with pytest.raises(UsageError, match="--feast-repo is required"):
        _command("--start", "2026-03-01", "--end", "2026-03-03")


def test_command_as_a_process_exit_status_and_messages(dataset, tmp_path):
    """As the process's own command (which may end the process at once after its output): bad
    input is exit 2 with one readable line and no traceback, and so is a view whose source is missing
    (naming the file) or lacks a column (naming it): a ``data`` failure, the input's fault; a good run
    is 0 and stores what the library stores."""
    repo = make_repo(tmp_path / "proc", dataset["root"])

    def skyfeast(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "skyfeast"), "materialize", "--feast-repo", str(repo), *argv],
                              capture_output=True, text=True, timeout=180)

    for argv, message in ((["--start", "2026-03-02", "--end", "2026-03-01"], "must be after"),
                          (["--start", "2026-03-01", "--end", "2026-03-02", "--feature-view", "nope"],
                           "unknown feature view"),
                          (["--start", "2026-03-01", "--end", "2026-03-02", "--in-process-rows", "-1"],
                           "--in-process-rows")):
        proc = skyfeast(*argv)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = skyfeast("--start", T0.isoformat(), "--end", T3.isoformat(), "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"] and report["mode"] == "in-process", proc.stderr
    assert set(report["phases"]) >= {"started", "repo_loaded", "first_write", "last_write", "result"}
    assert_reads(repo, dataset, T0, T3)
    proc = skyfeast("--start", "2020-01-01", "--end", "2020-01-02", "--feature-view", "user_stats")  # no data there
    assert proc.returncode == 0 and "no source rows inside [2020-01-01T00:00:00+00:00, 2020-01-02T00:00:00+00:00) " \
        "for user_stats: the range is half-open" in proc.stdout, proc.stdout + proc.stderr
    (dataset["root"] / "stats.parquet").rename(dataset["root"] / "stats.moved")
    try:
        proc = skyfeast("--start", T0.isoformat(), "--end", T3.isoformat(), "--feature-view", "user_stats")
    finally:
        (dataset["root"] / "stats.moved").rename(dataset["root"] / "stats.parquet")
    assert proc.returncode == 2 and "stats.parquet" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    (dataset["root"] / "stats.parquet").rename(dataset["root"] / "stats.moved")
    try:
        pd.read_parquet(dataset["root"] / "stats.moved").drop(columns=["i1"]).to_parquet(
            dataset["root"] / "stats.parquet", index=False)
        proc = skyfeast("--start", T0.isoformat(), "--end", T3.isoformat(), "--feature-view", "user_stats", "--json")
    finally:
        (dataset["root"] / "stats.moved").replace(dataset["root"] / "stats.parquet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    (view,) = json.loads(proc.stdout)["views"]
    assert view["failure_class"] == "data" and "i1" in view["error"], view


def test_command_against_a_silent_redis_says_what_it_waits_for_and_gives_up_in_seconds(dataset, tmp_path):
    """An online store that accepts connections and never answers: after 2 s the command says it waits
    for the view's rows to be written to it, naming it; it gives up after the writer's first-contact
    limit (10 s), not redis-py's minute, with exit 1 and the store named (never its password)."""
    from tests.silent import silent_server

    repo = make_repo(tmp_path / "silent", dataset["root"])
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    with silent_server() as port:
        config["online_store"] = {"type": "redis", "connection_string": f"127.0.0.1:{port},password=s3cret"}
        (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))  # Redis needs nothing applied
        t0 = time.monotonic()
        proc = subprocess.run([str(BIN / "skyfeast"), "materialize", "--feast-repo", str(repo), "--feature-view",
                               "user_stats", "--start", T0.isoformat(), "--end", T3.isoformat()],
                              capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - t0
    out, store = proc.stdout + proc.stderr, f"redis at 127.0.0.1:{port}"
    assert proc.returncode == 1, out[-3000:]
    assert seconds < 10 + 25, f"{seconds:.1f} s"  # the limit, and a loaded machine's start-up
    assert re.search(re.escape(f"waiting for user_stats to be read and written to the online store ({store}) (")
                     + r"\d s so far\)", proc.stderr), proc.stderr[-2000:]  # 2 s, or 3 on a loaded machine
    assert f"the online store ({store}) did not answer within 10 s" in out
    assert "s3cret" not in out and "Traceback" not in out


def write_skyfeast_config(path: Path, repo: str, live_address: str) -> Path:
    """Two providers: the preferred one is unreachable, the next is this module's cluster."""
    path.write_text(yaml.safe_dump({
        "project": "mat", "feast": {"repo": repo},
        "providers": {
            "down": {"priority": 1, "storage": {"type": "local", "root": "data/down"},
                     "cluster": {"type": "address", "address": f"tcp://127.0.0.1:{_closed_port()}",
                                 "connect_timeout": "1s"}},
            "up": {"priority": 2, "storage": {"type": "local", "root": "data/up"},
                   "cluster": {"type": "address", "address": live_address}},
        },
    }))
    return path


def test_command_fails_over_to_next_provider(dataset, client, tmp_path, capsys):
    """-c: the preferred provider is unreachable, the next one (this module's cluster) does the work."""
    repo = make_repo(tmp_path / "cmd" / "feature_repo", dataset["root"])
    config = write_skyfeast_config(tmp_path / "cmd" / "skyfeast.yaml", "feature_repo", client.scheduler.address)
    code, out = _command("-c", str(config), "--feature-view", "user_stats", "--start", T1.isoformat(),
                         "--end", "2026-03-04T00:00:00Z", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["provider"] == "up", report
    assert "provider down failed" in capsys.readouterr().err
    assert report["feast_repo"] == str(repo)
    assert [v["feature_view"] for v in report["views"]] == ["user_stats"]
    assert report["rows"] == len(expected(dataset["stats"], T1, T3, ["event_ts"])) > 0
    assert report["values"] == report["rows"] * len(STATS) and report["values_per_s"] > 0
    assert_reads(repo, dataset, T1, T3, views=("user_stats",))
    assert intervals(repo, "user_scores") == []


def test_feast_cli_with_dask_engine(dataset, client, tmp_path):
    """`feast materialize` (the engine starts its own LocalCluster), then `feast materialize-incremental`
    (the engine uses a skyfeast.yaml's providers and fails over to this module's cluster)."""
    engine = {"type": "skyfeast.featurestore.engine.DaskComputeEngine", "workers": 2}
    repo = make_repo(tmp_path / "engine", dataset["root"], batch_engine=engine)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def feast(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "feast"), *argv], cwd=repo, capture_output=True, text=True, timeout=180,
                              env=env, check=False)
        assert proc.returncode == 0, f"feast {argv[0]} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    feast("materialize", T0.isoformat(), T1.isoformat())
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    write_skyfeast_config(tmp_path / "skyfeast.yaml", "engine", client.scheduler.address)
    config["batch_engine"] = {"type": engine["type"], "skyfeast_config": "../skyfeast.yaml"}
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    assert "provider down failed" in feast("materialize-incremental", T3.isoformat()).stderr
    assert_reads(repo, dataset, T0, T3)
    assert sorted(intervals(repo, "user_stats")) == [(T0, T1), (T1, T3)]
    assert set(registry_states(repo).values()) == {4}  # AVAILABLE_ONLINE
