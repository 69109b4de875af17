"""Input contracts read from parquet footers: each broken file is named with its column and problem,
as a ``data`` failure (no retry, no failover)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skyfeast.adapters.failures import FailureClass, classify
from skyfeast.scheduler.errors import DataError
from skyfeast.scheduler.run.contracts import check_inputs, null_keys


def _events(n=1000, seed=0, **overrides) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": rng.integers(1, 500, n), "amount": rng.random(n),
                       "ts": pd.date_range("2026-03-01", periods=n, freq="min", tz="UTC")})
    for k, v in overrides.items():
        df[k] = v
    return df


def _write(tmp_path, name, df, **kw) -> str:
    path = tmp_path / name
    df.to_parquet(path, index=False, **kw)
    return str(path)


def _check(urls, **kw):
    check_inputs(urls, {}, keys=["user_id"], timestamp="ts", **kw)


def test_good_files_pass(tmp_path):
    a = _write(tmp_path, "a.parquet", _events())
    b = _write(tmp_path, "b.parquet", _events(seed=1).astype({"ts": "datetime64[us, UTC]"}))  # unit differs: fine
    c = _write(tmp_path, "c.parquet", _events(seed=2, extra=1.0))  # a new column later on: fine
    _check([a, b, c], declared={"amount": "float64"})


def test_a_file_that_lost_a_column_is_named(tmp_path):
    a = _write(tmp_path, "day1.parquet", _events())
    b = _write(tmp_path, "day2.parquet", _events(seed=1).drop(columns=["amount"]))
    with pytest.raises(DataError, match=r"day2.parquet lacks column\(s\) \['amount'\]") as info:
        _check([a, b])
    assert classify(info.value) is FailureClass.DATA


def test_missing_key_or_timestamp_column(tmp_path):
    a = _write(tmp_path, "a.parquet", _events().drop(columns=["user_id"]))
    with pytest.raises(DataError, match=r"a.parquet lacks column\(s\) \['user_id'\]"):
        _check([a])


def test_null_keys_are_counted_from_statistics(tmp_path):
    df = _events().astype({"user_id": "Int64"})
    df.loc[df.index[:104], "user_id"] = pd.NA
    a = _write(tmp_path, "a.parquet", df, row_group_size=100)
    with pytest.raises(DataError, match=r"a.parquet: 104 null user_id values"):
        _check([a])


def test_a_truncated_file_is_named(tmp_path):
    a = _write(tmp_path, "a.parquet", _events())
    data = open(a, "rb").read()
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.parquet: not readable parquet") as info:
        _check([a, str(bad)])
    assert classify(info.value) is FailureClass.DATA


def test_a_type_change_between_files_and_against_the_declaration(tmp_path):
    a = _write(tmp_path, "a.parquet", _events())
    b = _write(tmp_path, "b.parquet", _events(seed=1, amount=["12.5"] * 1000))
    with pytest.raises(DataError, match=r"b.parquet: column 'amount' is string, but double in .*a.parquet"):
        _check([a, b])
    with pytest.raises(DataError, match=r"a.parquet: column 'amount' is double, declared int64"):
        _check([a], declared={"amount": "int64"})


def test_files_without_statistics_are_checked_in_the_rows():
    frame = pd.DataFrame({"user_id": [1, None, None], "ts": pd.to_datetime(["2026-03-01"] * 3)})
    assert null_keys(frame, ["user_id", "ts", "absent"]) == {"user_id": 2}


def test_statistics_off_still_reads(tmp_path):
    table = pa.Table.from_pandas(_events(), preserve_index=False)
    path = tmp_path / "nostats.parquet"
    pq.write_table(table, path, write_statistics=False)
    _check([str(path)])


def test_null_keys_in_a_file_without_statistics_name_the_file(tmp_path):
    """A writer that kept no statistics: the key column alone is read, so the message still names the file."""
    df = _events().astype({"user_id": "Int64"})
    df.loc[df.index[:106], "user_id"] = pd.NA
    good = _write(tmp_path, "good.parquet", _events(seed=1))
    bad = tmp_path / "nostats.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), bad, write_statistics=False)
    with pytest.raises(DataError, match=r"nostats.parquet: 106 null user_id values"):
        _check([good, str(bad)])


def test_a_nested_column_before_the_key_does_not_shift_the_statistics_read(tmp_path):
    """Statistics are per parquet leaf: a struct of two leaves before ``user_id`` must not make the check read
    another column's null count (here the struct's second leaf, all null, and user_id without nulls)."""
    n = 50
    table = pa.table({"meta": pa.array([{"a": i, "b": None} for i in range(n)],
                                       pa.struct([("a", pa.int64()), ("b", pa.int64())])),
                      "user_id": pa.array(range(n), pa.int64()),
                      "ts": pa.array([pd.Timestamp("2026-03-01", tz="UTC")] * n, pa.timestamp("us", tz="UTC")),
                      "amount": pa.array([1.0] * n)})
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    _check([str(path)])  # no null keys: passes
    bad = table.set_column(1, "user_id", pa.array([None] * 3 + list(range(3, n)), pa.int64()))
    pq.write_table(bad, path)
    with pytest.raises(DataError, match=r"nested.parquet: 3 null user_id values"):
        _check([str(path)])


def test_timestamps_beyond_what_pandas_holds_are_named(tmp_path):
    from datetime import datetime, timezone

    ts = pa.array([datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2300, 1, 1, tzinfo=timezone.utc)],
                  pa.timestamp("us", tz="UTC"))
    path = tmp_path / "future.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "ts": ts}), path)
    with pytest.raises(DataError, match=r"future.parquet: ts holds 2300-01-01.*outside the years 1677-2262"):
        _check([str(path)])
