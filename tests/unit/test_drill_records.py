"""Drill runs sit in the ledger apart from production runs (:mod:`skyfeast.scheduler.drills.records`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.drills.records import close_orphans, drill_job, is_drill, list_runs
from skyfeast.scheduler.ledger import Ledger

UTC = timezone.utc
T0 = datetime(2026, 3, 2, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'state.db'}", owner="test")
    yield led
    led.close()


def _run(led: Ledger, job: str, hour: int, *, trigger: str = "manual", finish: bool = True) -> int:
    start = T0 + timedelta(hours=hour)
    rid, why = led.claim(job, start, start + timedelta(hours=1), trigger=trigger, lease=LEASE)
    assert rid is not None, why
    if finish:
        led.finish_run(rid, status="succeeded", rows=1)
    return rid


def test_a_drill_of_a_window_is_its_own_run(ledger):
    prod = _run(ledger, "user_features", 1)
    drill = _run(ledger, drill_job("user_features"), 1, trigger="drill")
    assert drill != prod and is_drill(ledger.get_run(drill).job) and not is_drill("user_features")
    assert ledger.get_run(prod).trigger == "manual" and ledger.get_run(prod).status == "succeeded"


def test_list_runs_hides_drills_unless_asked(ledger):
    for h in range(3):
        _run(ledger, "user_features", h)
    for h in range(3, 9):  # newer windows: a naive limit would return drills only
        _run(ledger, drill_job("user_features"), h, trigger="drill")
    assert [r.job for r in list_runs(ledger, limit=2)] == ["user_features"] * 2
    assert len(list_runs(ledger, limit=10)) == 3
    assert len(list_runs(ledger, job="user_features", limit=10)) == 3
    both = list_runs(ledger, job="user_features", limit=10, drills=True)
    assert len(both) == 9 and [r.window_end for r in both] == sorted((r.window_end for r in both), reverse=True)
    assert len(list_runs(ledger, limit=4, drills=True)) == 4


def test_close_orphans_fails_drill_runs_a_dead_drill_left_pending(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    dead, alive = Ledger(url, owner="dead"), Ledger(url, owner="alive")
    try:
        start = T0
        rid, _ = dead.claim(drill_job("j"), start, start + timedelta(hours=1), trigger="drill",
                            lease=timedelta(seconds=-1))  # its lease already ran out: the drill process died
        held, _ = alive.claim(drill_job("j"), start + timedelta(hours=1), start + timedelta(hours=2),
                              trigger="drill", lease=LEASE)
        prod = _run(alive, "j", 0, finish=False)  # a production run is never touched
        assert close_orphans(alive, "j", LEASE) == [rid]
        assert alive.get_run(rid).status == "failed" and "stopped before it finished" in alive.get_run(rid).error
        assert alive.get_run(held).status == "running" and alive.get_run(prod).status == "running"
    finally:
        dead.close()
        alive.close()


def test_a_run_that_ends_before_it_is_seen_part_way_ends_the_drill_at_once(ledger):
    """A window too small to drill: its run is done before the drill sees a chunk of it. The drill says
    so as soon as the run has ended, instead of polling for a part-way run until its 180 s wait ends."""
    import time
    from types import SimpleNamespace

    from skyfeast.scheduler.drills.drill import _drill
    from skyfeast.scheduler.errors import UsageError
    from skyfeast.scheduler.timing.windows import Window

    def run_window(job, window, **kw):  # the whole run within one poll: nothing ever seen running
        start = _run(ledger, kw["drill_as"], 0, trigger="drill")
        assert ledger.get_run(start).status == "succeeded"

    runner = SimpleNamespace(ledger=ledger, pool=None, run_window=run_window)
    cfg = SimpleNamespace(daemon=SimpleNamespace(run_lease=LEASE))
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(UsageError, match=r"never got part-way on aws \(its run ended first\); is its window too small"):
        _drill(cfg, runner, SimpleNamespace(name="user_features"), Window(T0, T0 + timedelta(hours=1)), "aws", "kill",
               [], False, 1, said.append, lambda run_id: None, None)
    assert time.monotonic() - t0 < 10


def test_a_drill_run_that_raises_before_it_is_part_way_is_named_not_called_too_small(ledger):
    from types import SimpleNamespace

    from skyfeast.scheduler.drills.drill import _drill
    from skyfeast.scheduler.errors import UsageError
    from skyfeast.scheduler.timing.windows import Window

    def run_window(job, window, **kw):
        raise RuntimeError("the provider pool is closed")

    runner = SimpleNamespace(ledger=ledger, pool=None, run_window=run_window)
    cfg = SimpleNamespace(daemon=SimpleNamespace(run_lease=LEASE))
    with pytest.raises(UsageError, match=r"user_features's drill run on aws failed before it got part-way: "
                                        r"RuntimeError: the provider pool is closed"):
        _drill(cfg, runner, SimpleNamespace(name="user_features"), Window(T0, T0 + timedelta(hours=1)), "aws", "kill",
               [], False, 1, lambda line: None, lambda run_id: None, None)


def test_a_drill_waiting_more_than_a_couple_of_seconds_says_what_it_waits_for(ledger):
    """A run that takes 3 s before it ends (never seen part-way): the drill's wait for it says, once,
    after about 2 s, what it waits for and its limit; a wait that ends sooner says nothing."""
    import time
    from types import SimpleNamespace

    from skyfeast.scheduler.drills.drill import ANNOUNCE_AFTER, _drill
    from skyfeast.scheduler.errors import UsageError
    from skyfeast.scheduler.timing.windows import Window

    def run_window(job, window, **kw):
        time.sleep(ANNOUNCE_AFTER + 1.0)

    runner = SimpleNamespace(ledger=ledger, pool=None, run_window=run_window)
    cfg = SimpleNamespace(daemon=SimpleNamespace(run_lease=LEASE))
    said: list[str] = []
    with pytest.raises(UsageError, match="never got part-way"):
        _drill(cfg, runner, SimpleNamespace(name="user_features"), Window(T0, T0 + timedelta(hours=1)), "aws", "kill",
               [], False, 2, said.append, lambda run_id: None, None)
    waits = [line for line in said if "waiting for" in line]
    assert len(waits) == 1, said
    assert waits[0].endswith("waiting for user_features to get part-way on aws (2 chunk(s) staged) (at most 180 s)")
    assert float(waits[0].split("s", 1)[0].lstrip("+")) >= ANNOUNCE_AFTER

    said.clear()
    runner.run_window = lambda job, window, **kw: None  # ends at once: no announcement
    with pytest.raises(UsageError, match="never got part-way"):
        _drill(cfg, runner, SimpleNamespace(name="user_features"), Window(T0, T0 + timedelta(hours=1)), "aws", "kill",
               [], False, 1, said.append, lambda run_id: None, None)
    assert not [line for line in said if "waiting for" in line], said
