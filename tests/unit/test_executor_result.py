"""``scheduler.executor._result``: fetching a finished partition's result with a deadline and a watchdog.

The stand-in future below only replays what ``distributed.Future.result(timeout=...)`` does
(a ``TimeoutError`` when the fetch does not finish in time; ``status`` "finished" or "error");
the behaviour against a real hung scheduler is exercised by the hang drills in tests/chaos."""

from __future__ import annotations

import time

import pytest

from skyfeast.adapters.failures import ProviderDown
from skyfeast.featurestore.chunks import Cancelled, TimeoutExpired
from skyfeast.featurestore.chunks import result as _result


class SlowFetch:
    def __init__(self, status: str, timeouts: int, value=None):
        self.status, self.timeouts, self.value, self.calls = status, timeouts, value, 0

    def result(self, timeout=None):
        self.calls += 1
        if self.calls <= self.timeouts:
            raise TimeoutError("fetch timed out")
        return self.value


def test_a_slow_fetch_of_a_finished_task_is_retried_not_failed():
    fut = SlowFetch("finished", timeouts=3, value={"rows": 5})
    assert _result(fut, time.monotonic() + 60, lambda: False) == {"rows": 5}
    assert fut.calls == 4


def test_a_task_that_raised_timeouterror_is_reported_as_its_own_error():
    fut = SlowFetch("error", timeouts=1)
    with pytest.raises(TimeoutError, match="fetch timed out"):
        _result(fut, time.monotonic() + 60, lambda: False)
    assert fut.calls == 1


def test_the_deadline_ends_a_fetch_that_never_returns():
    fut = SlowFetch("finished", timeouts=10**9)
    with pytest.raises(TimeoutExpired):
        _result(fut, time.monotonic() - 1, lambda: False)


def test_the_watchdog_can_cancel_or_declare_the_provider_down():
    with pytest.raises(Cancelled):
        _result(SlowFetch("finished", timeouts=10**9), time.monotonic() + 60, lambda: True)

    def down():
        raise ProviderDown("provider aws was marked down")

    with pytest.raises(ProviderDown):
        _result(SlowFetch("finished", timeouts=10**9), time.monotonic() + 60, down)
