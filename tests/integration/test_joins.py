"""A composed model job's two joins (scheduler/run/joins.py) on a real LocalCluster: the shuffle join
gives exactly the rows the broadcast join gives, chunk by chunk the same entities every time, and the
same rows again when each upstream's output is split into other parts.

The reference is computed here with plain pandas from the upstream frames, not by either join."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyfeast.scheduler.errors import DataError
from skyfeast.scheduler.run.joins import hashable, read_joined, shuffle_joined

pytestmark = pytest.mark.integration
KEYS = ("user_id",)
TS = pd.Timestamp("2026-03-02T12:00:00Z")


@pytest.fixture(scope="module")
def client():
    from skyfeast.adapters.clusters.local import LocalConnector

    conn = LocalConnector(workers=2, threads=1, memory_limit="auto", name="test-joins")
    yield conn.connect()
    conn.close()


def _upstreams() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``a`` (the first upstream: 2,000 users), ``b`` (1,500 of them and 300 others, int32 keys, 100 users twice:
    the later row wins, and a ``score`` column ``a`` also has, which must come from ``a``), ``c`` (nullable
    Int64 keys, every user of ``a`` but 50 of ``b``'s, one string feature)."""
    rng = np.random.default_rng(7)
    users = np.arange(1_000, 3_000, dtype=np.int64)
    a = pd.DataFrame({"user_id": users, "score": rng.random(len(users)), "event_timestamp": TS})
    b_users = np.concatenate([users[500:], np.arange(9_000, 9_300)]).astype(np.int32)
    b = pd.DataFrame({"user_id": b_users, "fraud": rng.random(len(b_users)), "score": -1.0})
    again = b.iloc[:100].assign(fraud=lambda f: f["fraud"] + 10)  # the later rows of 100 users
    b = pd.concat([b, again], ignore_index=True)
    c_users = np.delete(users, np.arange(600, 650))
    c = pd.DataFrame({"user_id": pd.array(c_users, dtype="Int64"),
                      "segment": [f"s{u % 7}" for u in c_users], "event_timestamp": TS + pd.Timedelta("1h")})
    return a, b, c


def _expected(a: pd.DataFrame, b: pd.DataFrame, c: pd.DataFrame) -> pd.DataFrame:
    b_last = b.drop_duplicates("user_id", keep="last")[["user_id", "fraud"]].astype({"user_id": np.int64})
    c_last = c[["user_id", "segment"]].astype({"user_id": np.int64})
    return a.merge(b_last, on="user_id").merge(c_last, on="user_id")


def _write(frame: pd.DataFrame, root, name: str, parts: int) -> list[tuple[str, dict]]:
    """``frame`` as ``parts`` parquet files, in order (a part's rows are consecutive rows of ``frame``)."""
    out = []
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        path = root / f"{name}-part{i:05d}.parquet"
        frame.iloc[chunk].to_parquet(path, index=False)
        out.append((str(path), {}))
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["user_id", "score", "event_timestamp", "fraud", "segment"]
    return frame[cols].astype({"user_id": np.int64, "event_timestamp": "datetime64[ns, UTC]"}).sort_values("user_id").reset_index(drop=True)


def _shuffled(client, a_parts, b_parts, c_parts, n: int) -> list[pd.DataFrame]:
    joins = [("b@1", b_parts), ("c@1", c_parts)]
    return client.compute(shuffle_joined(client, a_parts, joins, KEYS, n), sync=True)


def test_the_shuffle_join_gives_the_broadcast_join_rows_and_the_pandas_reference(client, tmp_path):
    a, b, c = _upstreams()
    a_parts, b_parts, c_parts = _write(a, tmp_path, "a", 3), _write(b, tmp_path, "b", 2), _write(c, tmp_path, "c", 4)
    want = _sorted(_expected(a, b, c))
    assert len(want) == 1_450 and (want["fraud"] >= 10).sum() == 100  # the later rows of the twice-listed users

    joins = hashable([("b@1", b_parts), ("c@1", c_parts)])
    broadcast = pd.concat([read_joined(url, opts, joins, KEYS) for url, opts in a_parts], ignore_index=True)
    pd.testing.assert_frame_equal(_sorted(broadcast), want)

    buckets = _shuffled(client, a_parts, b_parts, c_parts, 5)
    assert len(buckets) == 5 and all(len(f) for f in buckets)  # 1,450 users over 5 buckets: none empty
    assert list(buckets[0].columns) == list(broadcast.columns)  # the same columns in the same order
    pd.testing.assert_frame_equal(_sorted(pd.concat(buckets, ignore_index=True)), want)
    for frame in buckets:  # rows in their parts' order: a's order, as a broadcast chunk keeps it
        assert frame["user_id"].is_monotonic_increasing


def test_a_bucket_holds_the_same_entities_however_the_upstreams_are_split(client, tmp_path):
    """What a resumed run relies on: chunk i of one attempt is chunk i of the next, on any cluster."""
    a, b, c = _upstreams()
    first = _shuffled(client, _write(a, tmp_path, "a", 3), _write(b, tmp_path, "b", 2), _write(c, tmp_path, "c", 4), 5)
    split = tmp_path / "other-split"
    split.mkdir()
    again = _shuffled(client, _write(a, split, "a", 1), _write(b, split, "b", 5), _write(c, split, "c", 2), 5)
    for one, two in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(one.reset_index(drop=True), two.reset_index(drop=True))


def test_an_upstream_part_without_the_entity_key_is_a_data_error(client, tmp_path):
    a, b, c = _upstreams()
    a_parts = _write(a, tmp_path, "a", 2)
    bad = _write(b.rename(columns={"user_id": "uid"}), tmp_path, "b", 1)
    with pytest.raises(DataError, match=r"b-part00000.parquet lacks the entity key column\(s\) \['user_id'\]"):
        _shuffled(client, a_parts, bad, _write(c, tmp_path, "c", 1), 3)


def test_a_part_whose_column_is_all_null_joins_with_the_type_the_other_parts_give(client, tmp_path):
    """Parquet types an all-null column of one part as null (pandas: object) and the same column in the
    other parts as double: the shuffle takes the type all parts fit, and the part's nulls become NaN."""
    a, b, _ = _upstreams()
    limit = [None] * 500 + [float(i) for i in range(len(b) - 500)]
    b = b.assign(limit=pd.Series(limit, dtype=object))  # part 0 (the first 500 rows of 4 parts): all None
    b_parts = _write(b, tmp_path, "b", 4)
    assert pd.read_parquet(b_parts[0][0])["limit"].dtype == object
    buckets = client.compute(shuffle_joined(client, _write(a, tmp_path, "a", 3), [("b@1", b_parts)], KEYS, 4),
                             sync=True)
    got = pd.concat(buckets, ignore_index=True).sort_values("user_id").reset_index(drop=True)
    want = a.merge(b.drop_duplicates("user_id", keep="last").astype({"user_id": np.int64})[
        ["user_id", "fraud", "limit"]], on="user_id").sort_values("user_id").reset_index(drop=True)
    assert got["limit"].dtype == np.float64 and len(got) == len(want) == 1_500
    np.testing.assert_array_equal(got["limit"].to_numpy(), want["limit"].astype(float).to_numpy())
    np.testing.assert_array_equal(got["fraud"].to_numpy(), want["fraud"].to_numpy())
