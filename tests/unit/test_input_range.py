"""featurestore.inputs.within_range: the time filter is left out only when the footers prove no row is dropped."""

from __future__ import annotations

import pandas as pd
import pytest

from skyfeast.featurestore.inputs import within_range

DAY = pd.Timestamp("2026-03-01", tz="UTC")
NEXT = DAY + pd.Timedelta(days=1)


def _write(path, times, **kw):
    pd.DataFrame({"user_id": range(len(times)), "ts": times}).to_parquet(path, index=False, **kw)
    return str(path)


def test_inside_outside_and_edges(tmp_path):
    inside = _write(tmp_path / "a.parquet", pd.to_datetime([DAY, DAY + pd.Timedelta(hours=23)]), row_group_size=1)
    assert within_range([inside], {}, "ts", DAY, NEXT)
    end_edge = _write(tmp_path / "b.parquet", pd.to_datetime([DAY, NEXT]))  # the end is exclusive
    assert not within_range([end_edge], {}, "ts", DAY, NEXT)
    before = _write(tmp_path / "c.parquet", pd.to_datetime([DAY - pd.Timedelta(microseconds=1), DAY]))
    assert not within_range([before], {}, "ts", DAY, NEXT)
    assert not within_range([inside, before], {}, "ts", DAY, NEXT)  # every file must be inside
    # another zone for the bounds: compared as instants
    assert within_range([inside], {}, "ts", DAY.tz_convert("Europe/Paris"), NEXT.tz_convert("America/New_York"))


@pytest.mark.parametrize("case", ["naive", "nulls", "no_stats", "not_time", "missing_column", "no_file", "no_urls"])
def test_keeps_the_filter_when_unsure(tmp_path, case):
    times = pd.to_datetime([DAY, DAY + pd.Timedelta(hours=1)])
    column, urls = "ts", [str(tmp_path / "x.parquet")]
    if case == "naive":
        _write(urls[0], times.tz_localize(None))
    elif case == "nulls":
        _write(urls[0], pd.Series([DAY, pd.NaT], dtype="datetime64[ns, UTC]"))
    elif case == "no_stats":
        _write(urls[0], times, write_statistics=False)
    elif case == "not_time":
        _write(urls[0], times)
        column = "user_id"
    elif case == "missing_column":
        _write(urls[0], times)
        column = "event_timestamp"
    elif case == "no_urls":
        urls = []
    assert not within_range(urls, {}, column, DAY, NEXT)
