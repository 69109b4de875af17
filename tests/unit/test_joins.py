"""The pure parts of a composed model job's joins (scheduler/run/joins.py): which way a job joins, the
bucket an entity lands in, and one bucket's join. The joins on a cluster: tests/integration/test_joins.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyfeast.scheduler.run.joins import BROADCAST_JOIN_VALUES, SEQ, bucket_of, join_bucket, join_way


@pytest.mark.parametrize(("setting", "values", "way"), [
    ("auto", 0, "broadcast"), ("auto", BROADCAST_JOIN_VALUES, "broadcast"), ("auto", BROADCAST_JOIN_VALUES + 1, "shuffle"),
    ("auto", None, "broadcast"),  # an upstream run recorded without its row count
    ("broadcast", 10 * BROADCAST_JOIN_VALUES, "broadcast"), ("shuffle", 0, "shuffle"),
])
def test_join_way(setting, values, way):
    assert join_way(setting, values) == way


def test_join_way_refuses_an_unknown_setting():
    with pytest.raises(ValueError, match="unknown join setting 'hash'"):
        join_way("hash", 0)


@pytest.mark.parametrize(("left", "right"), [
    (np.array([-5, 0, 7, 2**40], dtype=np.int64), np.array([-5, 0, 7, 2**40], dtype=np.float64)),
    (np.array([-5, 0, 7], dtype=np.int32), pd.array([-5, 0, 7], dtype="Int64")),
    (np.array([-5, 0, 7], dtype=np.int16), np.array([-5, -0.0, 7], dtype=np.float32)),
    (np.array(["a", "b", "ü"], dtype=object), pd.array(["a", "b", "ü"], dtype="string[pyarrow]")),
])
def test_keys_pandas_would_join_get_the_same_bucket_whatever_their_types(left, right):
    """pandas joins int32 with Int64 and 5 with 5.0: so must the buckets, or the shuffle join loses rows."""
    frames = [pd.DataFrame({"k": left, "j": ["x"] * len(left)}), pd.DataFrame({"k": right, "j": ["x"] * len(right)})]
    assert len(frames[0].merge(frames[1], on=["k", "j"])) == len(left)  # pandas does join them
    for n in (2, 7, 64):
        a, b = (bucket_of(f, ("k", "j"), n) for f in frames)
        assert a.tolist() == b.tolist() and a.min() >= 0 and a.max() < n


def test_buckets_spread_keys():
    buckets = bucket_of(pd.DataFrame({"k": np.arange(10_000)}), ("k",), 8)
    counts = np.bincount(buckets, minlength=8)
    assert counts.min() > 1_000, counts  # 1,250 each when even


def test_join_bucket_keeps_the_last_row_of_a_key_by_its_place_not_by_arrival():
    first = pd.DataFrame({"user_id": [2, 1], SEQ: [1, 0]})
    other = pd.DataFrame({"user_id": [1, 1, 2], "v": [30, 10, 20], SEQ: [(1 << 32) + 0, 5, 7]})  # 30 is last
    got = join_bucket(first, [other], ("user_id",))
    assert got.to_dict("list") == {"user_id": [1, 2], "v": [30, 20]}


def test_auto_weighs_an_upstream_by_its_rows_times_its_view_columns():
    """The runner's size of an upstream's output: rows from the ledger, columns from its view (keys,
    features, event time). 2,000 model scores over 100,000 users are 200M values: shuffled."""
    from types import SimpleNamespace

    from skyfeast.scheduler.run.runner import Runner

    target = SimpleNamespace(join_keys=("user_id",), features=tuple(f"m{i}" for i in range(2_000)))
    runner = SimpleNamespace(repo=SimpleNamespace(write_target=lambda view: target))
    upstream = SimpleNamespace(feature_view="scores")
    values = Runner._output_values(runner, upstream, SimpleNamespace(rows_written=100_000))
    assert values == 100_000 * 2_002 and join_way("auto", values) == "shuffle"
    assert Runner._output_values(runner, upstream, SimpleNamespace(rows_written=None)) is None

    def no_view(view):
        raise KeyError(view)

    runner.repo.write_target = no_view
    assert Runner._output_values(runner, upstream, SimpleNamespace(rows_written=5)) is None


def test_a_worker_keeps_upstream_outputs_within_its_byte_budget(tmp_path, monkeypatch):
    """Between chunks a worker keeps the other upstreams' outputs it read, the least recently used going
    first past the budget, the newest kept whatever its size; a kept output is not read again."""
    from skyfeast.scheduler.run import joins

    joins.clear_broadcast_cache()
    parts = {}
    for run in ("r1", "r2", "r3"):
        path = tmp_path / f"{run}.parquet"
        pd.DataFrame({"user_id": np.arange(1_000), "v": np.ones(1_000)}).to_parquet(path, index=False)
        parts[run] = ((str(path), "{}"),)
    have, keys = ("user_id", "score"), ("user_id",)
    one = joins._broadcast_upstream("r1", parts["r1"], have, keys)
    size = one.memory_usage(index=True, deep=False).sum()
    monkeypatch.setattr(joins, "BROADCAST_CACHE_BYTES", int(2.5 * size))  # room for two
    reads = []
    monkeypatch.setattr(joins, "read_part", lambda url, opts: reads.append(url) or pd.read_parquet(url))
    assert joins._broadcast_upstream("r1", parts["r1"], have, keys) is one and reads == []  # kept: not read again
    joins._broadcast_upstream("r2", parts["r2"], have, keys)
    joins._broadcast_upstream("r1", parts["r1"], have, keys)  # r1 used last: r2 is the least recent
    joins._broadcast_upstream("r3", parts["r3"], have, keys)
    assert [k[0] for k in joins._cache] == ["r1", "r3"]
    monkeypatch.setattr(joins, "BROADCAST_CACHE_BYTES", 1)
    joins._broadcast_upstream("r2", parts["r2"], have, keys)
    assert [k[0] for k in joins._cache] == ["r2"]  # over budget alone, and still kept
    joins.clear_broadcast_cache()
    assert not joins._cache


def test_datetime_keys_get_their_bucket_from_the_instant_not_the_text():
    """pandas prints a column of midnights as dates and a column with one time in it with times: the
    same key must still get the same bucket, in any unit and any time zone."""
    days = pd.to_datetime(["2024-01-01", "2024-01-02"])
    a = pd.DataFrame({"k": days})
    b = pd.DataFrame({"k": pd.to_datetime(["2024-01-01 00:00", "2024-01-02 00:00", "2024-01-03 05:00"]).as_unit("us")})
    c = pd.DataFrame({"k": days.tz_localize("UTC").tz_convert("Europe/Paris")})
    assert str(a["k"].astype(str)[0]) != str(b["k"].astype(str)[0])  # the trap: "2024-01-01" vs "... 00:00:00"
    for n in (2, 7, 64):
        want = bucket_of(a, ("k",), n).tolist()
        assert bucket_of(b, ("k",), n).tolist()[:2] == want and bucket_of(c, ("k",), n).tolist() == want


@pytest.mark.parametrize(("recorded", "joins", "wanted", "way", "partitions"), [
    ((None, None), True, "shuffle", "shuffle", 6),  # a first attempt: the job's partitions
    ((None, None), True, "broadcast", "broadcast", 3),  # one chunk per part of the first upstream
    ((None, None), False, "shuffle", "broadcast", 3),  # one upstream: nothing to shuffle
    ((5, "shuffle"), True, "broadcast", "shuffle", 5),  # a resumed run keeps its way and count...
    ((3, "broadcast"), True, "shuffle", "broadcast", 3),  # ...whatever the config says now
    ((3, None), True, "shuffle", "broadcast", 3),  # a run begun before the shuffle join existed
])
def test_a_run_keeps_the_chunking_its_first_attempt_fixed(recorded, joins, wanted, way, partitions):
    from types import SimpleNamespace

    from skyfeast.featurestore.chunks import ChunkBook
    from skyfeast.scheduler.run.executor import _fix_chunking

    book = ChunkBook(partitions=recorded[0], join=recorded[1])
    inputs = [("a0", {}), ("a1", {}), ("a2", {})]
    _fix_chunking(book, SimpleNamespace(partitions=6), inputs, (("b@1", [("b0", {})]),) if joins else (), wanted)
    assert (book.join, book.partitions) == (way, partitions)
