"""Catch-up policy: which missed fires a restarted daemon owes."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfeast.scheduler.config import CronSchedule
from skyfeast.scheduler.timing.catchup import due_fires
from skyfeast.scheduler.timing.windows import make_trigger

UTC = timezone.utc
HOURLY = make_trigger(CronSchedule(type="cron", expr="0 * * * *"))
T = lambda h, m=0: datetime(2026, 5, 1, h, m, tzinfo=UTC)  # noqa: E731


def test_first_start_owes_nothing():
    assert due_fires(HOURLY, last_fire=None, now=T(12, 30), policy="all", max_catchup=timedelta(days=1)) == []


@pytest.mark.parametrize("policy, expected", [
    ("all", [T(9), T(10), T(11), T(12)]),
    ("latest", [T(12)]),
    ("none", []),
])
def test_policies_after_an_outage(policy, expected):
    got = due_fires(HOURLY, last_fire=T(8), now=T(12, 30), policy=policy, max_catchup=timedelta(days=1))
    assert got == expected


def test_none_still_runs_the_fire_that_is_due_now():
    got = due_fires(HOURLY, last_fire=T(11), now=T(12, 0) + timedelta(seconds=2), policy="none",
                    max_catchup=timedelta(days=1))
    assert got == [T(12)]


def test_horizon_drops_old_fires():
    got = due_fires(HOURLY, last_fire=T(1), now=T(12, 30), policy="all", max_catchup=timedelta(hours=3))
    assert got == [T(10), T(11), T(12)]


def test_nothing_owed_when_up_to_date():
    assert due_fires(HOURLY, last_fire=T(12), now=T(12, 59), policy="all", max_catchup=timedelta(days=1)) == []


@settings(max_examples=60, deadline=None)
@given(gap_h=st.integers(0, 48), minute=st.integers(0, 59), horizon_h=st.integers(1, 72))
def test_all_is_every_missed_fire_inside_the_horizon(gap_h, minute, horizon_h):
    last = T(0)
    now = last + timedelta(hours=gap_h, minutes=minute)
    got = due_fires(HOURLY, last_fire=last, now=now, policy="all", max_catchup=timedelta(hours=horizon_h))
    expected = [last + timedelta(hours=k) for k in range(1, gap_h + 1)
                if last + timedelta(hours=k) >= now - timedelta(hours=horizon_h)]
    assert got == expected
    latest = due_fires(HOURLY, last_fire=last, now=now, policy="latest", max_catchup=timedelta(hours=horizon_h))
    assert latest == expected[-1:]
