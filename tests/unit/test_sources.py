"""Source patterns: placeholder expansion and resolution against an object store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfeast.adapters.storage.local import LocalStore
from skyfeast.scheduler.errors import DataError, UserError
from skyfeast.scheduler.run.sources import expand, placeholders, resolve

UTC = timezone.utc


def u(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


# --------------------------------------------------------------------------- placeholders
def test_placeholders():
    assert placeholders("events/*.parquet") == set()
    assert placeholders("a/{date}/b-{start:%H}-{end}.parquet") == {"date", "start", "end"}
    assert placeholders("literal {{braces}}") == set()


def test_placeholders_malformed_is_data_error():
    with pytest.raises(DataError, match="events/"):
        placeholders("events/{start")


# --------------------------------------------------------------------------- expand: no placeholders / start / end
def test_expand_plain_glob_is_returned_once():
    assert expand("events/*.parquet", u(2026, 1, 1), u(2026, 1, 5)) == ["events/*.parquet"]


def test_expand_start_end_default_format():
    assert expand("x/{start}_{end}", u(2026, 11, 28, 9), u(2026, 11, 28, 10)) == [
        "x/2026-11-28T09:00:00Z_2026-11-28T10:00:00Z"
    ]


def test_expand_start_with_strftime_spec():
    assert expand("events/{start:%Y%m%d}/*.parquet", u(2026, 11, 28, 9), u(2026, 11, 29, 10)) == [
        "events/20261128/*.parquet"
    ]
    assert expand("events/{start:%Y/%m/%d/%H}-{end:%H%M}.parquet", u(2026, 11, 28, 9), u(2026, 11, 28, 10, 30)) == [
        "events/2026/11/28/09-1030.parquet"
    ]


def test_expand_converts_to_utc():
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 11, 28, 10, tzinfo=berlin)  # 09:00Z
    end = datetime(2026, 11, 28, 11, tzinfo=berlin)
    assert expand("e/{start:%H}-{end:%H}", start, end) == ["e/09-10"]


def test_expand_literal_braces_survive():
    assert expand("e/{{raw}}/{start:%Y}", u(2026, 1, 1), u(2026, 1, 2)) == ["e/{raw}/2026"]


# --------------------------------------------------------------------------- expand: {date}
def test_expand_date_single_day():
    assert expand("events/events-{date}.parquet", u(2026, 11, 28, 9), u(2026, 11, 28, 10)) == [
        "events/events-2026-11-28.parquet"
    ]


def test_expand_date_multiple_days():
    assert expand("events/events-{date}.parquet", u(2026, 11, 20, 22), u(2026, 11, 23, 1)) == [
        "events/events-2026-11-20.parquet",
        "events/events-2026-11-21.parquet",
        "events/events-2026-11-22.parquet",
        "events/events-2026-11-23.parquet",
    ]


def test_expand_date_end_at_exact_midnight_is_exclusive():
    assert expand("e/{date}", u(2026, 11, 20), u(2026, 11, 22)) == ["e/2026-11-20", "e/2026-11-21"]
    assert expand("e/{date}", u(2026, 11, 20, 13), u(2026, 11, 21)) == ["e/2026-11-20"]


def test_expand_date_one_microsecond_past_midnight_touches_next_day():
    assert expand("e/{date}", u(2026, 11, 20, 13), u(2026, 11, 21, 0, 0, 0, 1)) == ["e/2026-11-20", "e/2026-11-21"]


def test_expand_date_seven_day_lookback():
    out = expand("e/{date}.parquet", u(2026, 11, 21, 7), u(2026, 11, 28, 7))
    assert out == [f"e/2026-11-{d}.parquet" for d in range(21, 29)]


def test_expand_date_across_month_and_year():
    assert expand("e/{date}", u(2026, 12, 31, 12), u(2027, 1, 1, 12)) == ["e/2026-12-31", "e/2027-01-01"]


def test_expand_date_with_own_spec():
    assert expand("e/{date:%Y/%m/%d}/*.parquet", u(2026, 2, 28), u(2026, 3, 2)) == [
        "e/2026/02/28/*.parquet",
        "e/2026/03/01/*.parquet",
    ]


def test_expand_date_uses_utc_days():
    ny = ZoneInfo("America/New_York")
    # 2026-11-27 20:00 New York = 2026-11-28 01:00Z
    start = datetime(2026, 11, 27, 20, tzinfo=ny)
    assert expand("e/{date}", start, start + timedelta(hours=1)) == ["e/2026-11-28"]


def test_expand_date_mixed_with_start():
    # {start} is the same for every day; only {date} varies
    assert expand("e/{date}/{start:%H}", u(2026, 1, 1, 23), u(2026, 1, 2, 1)) == ["e/2026-01-01/23", "e/2026-01-02/23"]


def test_expand_date_deduplicates_when_date_spec_is_coarse():
    assert expand("e/{date:%Y-%m}/*.parquet", u(2026, 1, 30), u(2026, 2, 2)) == ["e/2026-01/*.parquet", "e/2026-02/*.parquet"]


@settings(max_examples=100, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=40)),
)
def test_expand_date_covers_exactly_the_touched_days(start, length):
    end = start + length
    out = expand("{date}", start, end)
    days = [datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=UTC) for d in out]
    assert days == sorted(set(days))
    assert days[0] == start.replace(hour=0, minute=0, second=0, microsecond=0)
    assert days[-1] < end <= days[-1] + timedelta(days=1)
    assert all(b - a == timedelta(days=1) for a, b in zip(days, days[1:]))


# --------------------------------------------------------------------------- expand: errors
@pytest.mark.parametrize(
    "pattern,bad",
    [
        ("events/{day}.parquet", "day"),
        ("events/{start}/{hour}.parquet", "hour"),
        ("events/{0}.parquet", "0"),
        ("events/{}.parquet", "''"),
        ("events/{start.year}.parquet", "start.year"),
        ("events/{DATE}.parquet", "DATE"),
    ],
)
def test_expand_unknown_placeholder_is_data_error(pattern, bad):
    with pytest.raises(DataError) as ei:
        expand(pattern, u(2026, 1, 1), u(2026, 1, 2))
    msg = str(ei.value)
    assert pattern in msg and bad in msg and "allowed" in msg


def test_expand_malformed_pattern_is_data_error():
    with pytest.raises(DataError):
        expand("events/{date", u(2026, 1, 1), u(2026, 1, 2))
    with pytest.raises(DataError):
        expand("events/date}", u(2026, 1, 1), u(2026, 1, 2))


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)


# --------------------------------------------------------------------------- resolve
@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "root")
    for day in ("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"):
        s.write_bytes(f"events/events-{day}.parquet", b"x")
    for h in ("09", "10", "11"):
        s.write_bytes(f"hourly/20261128/part-{h}-b.parquet", b"x")
        s.write_bytes(f"hourly/20261128/part-{h}-a.parquet", b"x")
    s.write_bytes("events/README.txt", b"x")
    return s


def test_resolve_date_pattern_finds_sorted_keys(store):
    keys = resolve(store, "events/events-{date}.parquet", u(2026, 11, 21, 6), u(2026, 11, 23))
    assert keys == ["events/events-2026-11-21.parquet", "events/events-2026-11-22.parquet"]


def test_resolve_skips_missing_days(store):
    keys = resolve(store, "events/events-{date}.parquet", u(2026, 11, 22), u(2026, 11, 26))
    assert keys == ["events/events-2026-11-22.parquet", "events/events-2026-11-23.parquet"]


def test_a_window_whose_own_day_has_no_file_is_a_data_error(store):
    """Lookback days before the window may lack files; a day the window itself covers may not: features
    computed without it would be published as fresh."""
    read_start, window_start = u(2026, 11, 17, 11), u(2026, 11, 24, 11)  # 7 days of lookback
    with pytest.raises(DataError, match=r"no source file matches 'events/events-2026-11-24.parquet' under .*: the "
                                        r"window 2026-11-24T11:00:00Z/2026-11-24T12:00:00Z has no input for a day"):
        resolve(store, "events/events-{date}.parquet", read_start, u(2026, 11, 24, 12), window_start=window_start)
    # the window's day is there; the lookback's days before 2026-11-20 are not, and need not be
    keys = resolve(store, "events/events-{date}.parquet", u(2026, 11, 16, 11), u(2026, 11, 23, 12),
                   window_start=u(2026, 11, 23, 11))
    assert keys == [f"events/events-2026-11-{d}.parquet" for d in (20, 21, 22, 23)]
    # a window over midnight needs both days
    with pytest.raises(DataError, match="events-2026-11-24.parquet"):
        resolve(store, "events/events-{date}.parquet", u(2026, 11, 23, 23), u(2026, 11, 24, 1),
                window_start=u(2026, 11, 23, 23))


def test_a_pattern_with_start_beside_date_is_not_checked_day_by_day(store):
    """{start} expands from the read start; re-expanding from the window's start would name other files."""
    store.write_bytes("mixed/2026-11-20/events-2026-11-20.parquet", b"x")
    keys = resolve(store, "mixed/{start:%Y-%m-%d}/events-{date}.parquet", u(2026, 11, 20), u(2026, 11, 22, 12),
                   window_start=u(2026, 11, 22, 11))
    assert keys == ["mixed/2026-11-20/events-2026-11-20.parquet"]


def test_resolve_glob_keys_sorted_and_unique(store):
    keys = resolve(store, "hourly/{start:%Y%m%d}/part-*.parquet", u(2026, 11, 28, 9), u(2026, 11, 28, 12))
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 6
    assert keys[0] == "hourly/20261128/part-09-a.parquet"


def test_resolve_overlapping_patterns_deduplicated(store):
    # a {date:%Y} pattern expands to the same glob for every day; keys appear once
    keys = resolve(store, "events/events-{date:%Y}-*.parquet", u(2026, 11, 20), u(2026, 11, 23))
    assert keys == [f"events/events-2026-11-{d}.parquet" for d in (20, 21, 22, 23)]


def test_resolve_glob_without_placeholders(store):
    assert resolve(store, "events/*.txt", u(2026, 1, 1), u(2026, 1, 2)) == ["events/README.txt"]


def test_resolve_nothing_found_names_the_pattern(store):
    with pytest.raises(DataError) as ei:
        resolve(store, "events/events-{date}.parquet", u(2026, 12, 1), u(2026, 12, 2, 12))
    msg = str(ei.value)
    assert "events/events-{date}.parquet" in msg
    assert "2026-12-01T00:00:00Z" in msg and "2026-12-02T12:00:00Z" in msg
    assert store.url() in msg


def test_resolve_error_message_times_are_utc(store):
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 12, 1, 10, tzinfo=berlin)  # 09:00Z
    with pytest.raises(DataError) as ei:
        resolve(store, "nothing/{date}", start, start + timedelta(hours=1))
    assert "2026-12-01T09:00:00Z/2026-12-01T10:00:00Z" in str(ei.value)


def test_resolve_empty_store(tmp_path):
    with pytest.raises(DataError, match=r"events/\*\.parquet"):
        resolve(LocalStore(tmp_path / "missing"), "events/*.parquet", u(2026, 1, 1), u(2026, 1, 2))


def test_resolve_unknown_placeholder_is_data_error(store):
    with pytest.raises(DataError, match="unknown placeholder"):
        resolve(store, "events/{when}.parquet", u(2026, 1, 1), u(2026, 1, 2))


def test_a_missing_materialize_source_is_one_line_naming_the_path(tmp_path):
    """dask wraps the reader's error in a paragraph of its own; the message keeps the reader's line."""
    from types import SimpleNamespace

    from skyfeast.featurestore.materialize import SourceError, ViewPlan, _frame

    missing = tmp_path / "offline" / "user_features"
    plan = ViewPlan(target=SimpleNamespace(name="user_features"), start=u(2026, 3, 1),
                    end=u(2026, 3, 2), path=str(missing), storage_options=None,
                    source_columns=("user_id", "x", "event_timestamp"), rename={})
    with pytest.raises(SourceError) as ei:
        _frame(plan)
    msg = str(ei.value)
    assert "\n" not in msg and "An error occurred" not in msg, msg
    assert msg.endswith(f"FileNotFoundError: {missing}"), msg


@pytest.mark.parametrize("reader", ["in-process", "cluster"])
def test_a_materialize_source_file_that_lacks_a_column_fails_the_view_naming_file_and_column(tmp_path, reader):
    """A dataset reader fills a column that one file of several lacks with nulls, which Feast's readers
    would then get as "no value" in place of good ones. Both readers check every file's footer first."""
    from types import SimpleNamespace

    import pandas as pd

    from skyfeast.featurestore import inprocess, materialize

    root = tmp_path / "offline" / "user_features"
    (root / "date=2026-03-01").mkdir(parents=True)  # a partition directory's key counts as a column
    t = pd.Timestamp("2026-03-01T01:00Z")
    pd.DataFrame({"user_id": [1], "x": [1.0], "event_timestamp": [t]}).to_parquet(root / "date=2026-03-01" / "a.parquet")
    pd.DataFrame({"user_id": [2], "event_timestamp": [t]}).to_parquet(root / "date=2026-03-01" / "b.parquet")
    plan = materialize.ViewPlan(target=SimpleNamespace(name="user_features"), start=u(2026, 3, 1),
                                end=u(2026, 3, 2), path=str(root), storage_options=None,
                                source_columns=("user_id", "x", "event_timestamp", "date"), rename={})
    frame = inprocess._frame if reader == "in-process" else materialize._frame
    with pytest.raises(materialize.SourceError) as ei:
        frame(plan)
    assert str(ei.value) == (f"feature view 'user_features': source file {root / 'date=2026-03-01' / 'b.parquet'} "
                             "lacks column(s) ['x'] (it has user_id, event_timestamp, date)")
    (root / "date=2026-03-01" / "b.parquet").unlink()
    inprocess.check_columns(plan)  # every file has every column: nothing to say
