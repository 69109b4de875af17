"""``Daemon`` dispatch with an injected ``execute`` and a fake clock, on a SQLite ledger.

No Dask and no runner: ``execute(job, window, run_id)`` is :class:`FakeExecute`, which
records the call, optionally blocks on a gate, and finishes the run in the ledger the way
``Runner.execute_claimed`` would. The scheduling clock is :class:`FakeClock` (the
``clock`` argument of ``Daemon``); leases in the ledger use real time, so leadership is
real. Waits poll a condition with a deadline; the only negative check ("no third run
starts") waits a bounded 0.3 s.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.app.daemon import Daemon
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.run.runner import Outcome
from skyfeast.scheduler.timing.windows import Window

UTC = timezone.utc
H = timedelta(hours=1)
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a fire of the hourly jobs


def transform(df, window):  # named by the config; never called
    return df


def poll(cond, timeout: float = 5.0, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def hourly(end: datetime) -> Window:
    return Window(end - H, end)


class FakeClock:
    """Shared scheduling time; each daemon reads it through its own counting view."""

    def __init__(self, now: datetime):
        self._now = now
        self._lock = threading.Lock()

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now

    def view(self):
        reads = [0]

        def now() -> datetime:
            with self._lock:
                reads[0] += 1
                return self._now
        now.reads = reads
        return now


@dataclass
class Call:
    job: str
    window: Window
    run_id: int
    started: float
    ended: float = 0.0


class FakeExecute:
    """The daemon's ``execute``: records calls and concurrency, finishes the run in the ledger."""

    def __init__(self, ledger: Ledger, *, gated: bool = False, fail: tuple[str, ...] = ()):
        self.ledger = ledger
        self.calls: list[Call] = []
        self.running = 0
        self.peak = 0
        self.gate = threading.Semaphore(0) if gated else None
        self.fail = set(fail)
        self._lock = threading.Lock()

    def __call__(self, job, window, run_id) -> Outcome:
        call = Call(job.name, window, run_id, time.monotonic())
        with self._lock:
            self.calls.append(call)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if self.gate is not None:
                assert self.gate.acquire(timeout=10), "the test never opened the gate"
            status = "failed" if job.name in self.fail else "succeeded"
            aid = self.ledger.start_attempt(run_id, "p1")
            if status == "succeeded":
                self.ledger.finish_success(run_id, aid, 0)
            else:
                self.ledger.finish_attempt(aid, outcome="failed", failure_class="data", error="no input")
                self.ledger.finish_run(run_id, status="failed", failure_class="data", error="no input")
            return Outcome(job.name, window, status, run_id=run_id, provider="p1", attempts=1)
        finally:
            call.ended = time.monotonic()
            with self._lock:
                self.running -= 1

    def windows(self, job: str = "a") -> list[Window]:
        return [c.window for c in self.calls if c.job == job]

    def open(self, n: int = 1000) -> None:
        if self.gate is not None:
            for _ in range(n):
                self.gate.release()


CONFIG = """\
project: t
feast: feature_repo
daemon: {{run_lease: 30s, leader_lease: 10s, poll: 0.05s, max_parallel: 4, grace: 5s}}
providers:
  p1:
    cluster: {{type: local, workers: 1}}
    storage: {{type: local, root: data/p1}}
jobs:
  - name: a
    kind: feature
    schedule: {{type: cron, expr: "0 * * * *"}}
    source: {{type: parquet, path: "events/*.parquet"}}
    transform: tests.unit.test_daemon_dispatch:transform
    feature_view: fv
    catchup: {catchup}
    max_catchup: {max_catchup}
{extra}"""

MODEL_JOB = """\
  - name: b
    kind: model
    schedule: {type: cron, expr: "0 * * * *"}
    source: {type: job, job: a}
    model: {artifact: models/m.joblib, scorer: "tests.unit.test_daemon_dispatch:transform"}
    feature_view: fv2
"""


class Env:
    def __init__(self, tmp_path, *, catchup="all", max_catchup="24h", extra="", now=T0 + timedelta(seconds=30)):
        path = tmp_path / "skyfeast.yaml"
        path.write_text(CONFIG.format(catchup=catchup, max_catchup=max_catchup, extra=extra))
        self.cfg = load_config(path, check_feast=False)
        self.url = f"sqlite:///{tmp_path / 'state.db'}"
        self.clock = FakeClock(now)
        self.ledgers: list[Ledger] = []
        self.started: list[tuple[Daemon, threading.Thread, FakeExecute]] = []

    def ledger(self, owner: str) -> Ledger:
        led = Ledger(self.url, owner=owner)
        self.ledgers.append(led)
        return led

    def daemon(self, owner: str = "A", *, gated=False, fail=(), max_parallel=None, start=True):
        led = self.ledger(owner)
        ex = FakeExecute(led, gated=gated, fail=fail)
        d = Daemon(self.cfg, led, ex, cancel=threading.Event(), max_parallel=max_parallel, identity=owner,
                   clock=self.clock.view())
        th = threading.Thread(target=d.serve, name=f"daemon-{owner}", daemon=True)
        self.started.append((d, th, ex))
        if start:
            th.start()
        return d, ex

    @staticmethod
    def planned(d: Daemon) -> None:
        """Wait until ``d`` leads and has planned: the election reads the clock once, then
        each loop iteration reads it again."""
        poll(lambda: d.is_leader and d.clock.reads[0] >= 2)

    def stop(self, d: Daemon) -> None:
        for dd, th, ex in self.started:
            if dd is d:
                d.stop.set()
                ex.open()
                th.join(timeout=10)
                assert not th.is_alive(), "daemon did not stop"

    def close(self) -> None:
        for d, th, ex in self.started:
            d.stop.set()
            ex.open()
        for d, th, ex in self.started:
            if th.is_alive():
                th.join(timeout=10)
        for led in self.ledgers:
            led.close()

    def runs(self, job: str = "a"):
        return sorted(self.ledgers[0].runs(job=job, limit=1000), key=lambda r: r.window_end)


@pytest.fixture
def env(tmp_path):
    made = []

    def make(**kw) -> Env:
        e = Env(tmp_path, **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


# --------------------------------------------------------------------------- exactly once
def test_due_windows_are_dispatched_once_each_as_the_clock_passes_their_fire(env):
    e = env()
    d, ex = e.daemon()
    e.planned(d)
    assert ex.calls == []  # a job's first start owes nothing
    e.clock.set(T0 + H)
    poll(lambda: len(ex.calls) == 1)
    e.clock.set(T0 + H + timedelta(minutes=30))  # no fire in between: nothing new
    e.clock.set(T0 + 2 * H)
    poll(lambda: [r.status for r in e.runs()] == ["succeeded"] * 2)
    poll(lambda: d.ticks == 2)
    assert ex.windows() == [hourly(T0 + H), hourly(T0 + 2 * H)]
    runs = e.runs()
    assert [(r.window_end, r.status, r.trigger, r.owner) for r in runs] == \
        [(T0 + H, "succeeded", "schedule", "A"), (T0 + 2 * H, "succeeded", "schedule", "A")]
    assert e.ledgers[0].last_fires() == {"a": T0 + 2 * H}


def test_window_already_in_the_ledger_is_not_executed_again(env):
    e = env()
    d, ex = e.daemon()
    e.planned(d)
    cli = e.ledger("cli")  # e.g. `skyfeast run` did the next window by hand
    rid, _ = cli.claim("a", T0, T0 + H, trigger="manual", lease=timedelta(seconds=30))
    cli.finish_run(rid, status="succeeded")
    e.clock.set(T0 + H)
    poll(lambda: d.ticks == 1)  # the fire was handled ...
    e.clock.set(T0 + 2 * H)
    poll(lambda: len(ex.calls) == 1)
    assert ex.windows() == [hourly(T0 + 2 * H)]  # ... without executing the window again
    assert [(r.window_end, r.trigger) for r in e.runs()] == [(T0 + H, "manual"), (T0 + 2 * H, "schedule")]


def test_restarted_daemon_catches_up_from_the_last_dispatched_fire(env):
    """A ran the 13:00 fire and stopped; B starts at 15:00:30 (catchup: all): it owes the 14:00
    and 15:00 fires, not 13:00 again, and not the windows before A's first fire."""
    e = env(catchup="all")
    d, ex = e.daemon("A")
    e.planned(d)
    e.clock.set(T0 + H)
    poll(lambda: len(ex.calls) == 1)
    e.stop(d)
    e.clock.set(T0 + 3 * H + timedelta(seconds=30))
    d2, ex2 = e.daemon("B")
    e.planned(d2)
    poll(lambda: len(ex2.calls) == 2 and [r.status for r in e.runs()] == ["succeeded"] * 3)
    assert sorted(ex2.windows()) == [hourly(T0 + 2 * H), hourly(T0 + 3 * H)]
    assert [(r.window_end, r.trigger, r.owner) for r in e.runs()] == \
        [(T0 + H, "schedule", "A"), (T0 + 2 * H, "catchup", "B"), (T0 + 3 * H, "catchup", "B")]


def test_queued_run_is_picked_up_once(env):
    e = env()
    d, ex = e.daemon()
    e.planned(d)
    cli = e.ledger("cli")
    w = Window(T0 - 5 * H, T0 - 4 * H)
    rid, status = cli.enqueue("a", w.start, w.end, trigger="manual")
    assert status == "queued"
    poll(lambda: len(ex.calls) == 1)
    assert (ex.calls[0].window, ex.calls[0].run_id) == (w, rid)
    poll(lambda: cli.get_run(rid).status == "succeeded")
    assert cli.enqueue("a", w.start, w.end) == (rid, "succeeded")  # a succeeded window is not queued again
    e.clock.set(T0 + H)  # let the loop turn over a few more pickups
    poll(lambda: len(ex.calls) == 2)
    assert [c.window for c in ex.calls] == [w, hourly(T0 + H)]


# --------------------------------------------------------------------------- max_parallel
def test_max_parallel_bounds_concurrent_runs(env):
    e = env(catchup="all")
    e.ledger("setup").set_last_fires({"a": T0 - 6 * H})  # six missed fires: T0-5h .. T0
    d, ex = e.daemon(gated=True, max_parallel=2)
    poll(lambda: len(ex.calls) == 2)
    with pytest.raises(AssertionError):
        poll(lambda: len(ex.calls) > 2, timeout=0.3)  # the other four wait for a free slot
    for n in range(3, 7):
        ex.gate.release()
        poll(lambda: len(ex.calls) == n)
        assert ex.running <= 2
    ex.open()
    poll(lambda: [r.status for r in e.runs()] == ["succeeded"] * 6)
    assert ex.peak == 2
    assert sorted(ex.windows()) == [hourly(T0 - k * H) for k in range(5, -1, -1)]


# --------------------------------------------------------------------------- catch-up
@pytest.mark.parametrize("catchup,max_catchup,owed", [
    ("all", "24h", [5, 4, 3, 2, 1, 0]),
    ("latest", "24h", [0]),
    ("none", "24h", []),
    ("all", "2h", [1, 0]),
])
def test_catchup_policy_after_election(env, catchup, max_catchup, owed):
    """Last dispatched fire T0-6h, elected at T0+30s: fires T0-5h .. T0 were missed.
    ``owed`` lists them as hours before T0."""
    e = env(catchup=catchup, max_catchup=max_catchup)
    e.ledger("setup").set_last_fires({"a": T0 - 6 * H})
    d, ex = e.daemon()
    e.planned(d)
    e.clock.set(T0 + H)  # the next scheduled fire: dispatched after the catch-up
    poll(lambda: hourly(T0 + H) in ex.windows())
    poll(lambda: all(r.status == "succeeded" for r in e.runs()))
    expected = [hourly(T0 - k * H) for k in owed]
    assert sorted(ex.windows()) == expected + [hourly(T0 + H)]
    assert [(r.window_end, r.trigger) for r in e.runs()] == \
        [(w.end, "catchup") for w in expected] + [(T0 + H, "schedule")]


# --------------------------------------------------------------------------- leadership
def test_standby_does_not_dispatch_while_leader_holds_lease_then_takes_over(env):
    e = env()
    a, ex_a = e.daemon("A")
    e.planned(a)
    b, ex_b = e.daemon("B", start=False)
    tries = []
    real = b.ledger.acquire_leader
    b.ledger.acquire_leader = lambda holder, ttl: tries.append(real(holder, ttl)) or tries[-1]  # spy
    e.started[-1][1].start()
    poll(lambda: len(tries) >= 2)
    e.clock.set(T0 + H)
    poll(lambda: len(ex_a.calls) == 1)
    seen = len(tries)
    poll(lambda: len(tries) >= seen + 3)  # the standby kept polling after the fire ...
    assert set(tries) == {None} and not b.is_leader  # ... and never got the lease
    assert ex_b.calls == []
    assert e.ledgers[0].leader()["holder"] == "A"

    e.stop(a)  # a clean stop releases the lease: the standby takes over within a poll
    e.planned(b)
    assert e.ledgers[0].leader()["holder"] == "B" and e.ledgers[0].leader()["token"] == 2
    e.clock.set(T0 + 2 * H)
    poll(lambda: len(ex_b.calls) == 1)
    assert ex_a.windows() == [hourly(T0 + H)]
    assert ex_b.windows() == [hourly(T0 + 2 * H)]  # not the window A already ran
    assert [r.owner for r in e.runs()] == ["A", "B"]


# --------------------------------------------------------------------------- chains and shutdown
def test_downstream_runs_after_its_upstream_of_the_same_window(env):
    e = env(extra=MODEL_JOB)
    d, ex = e.daemon()
    e.planned(d)
    e.clock.set(T0 + H)
    poll(lambda: len(ex.calls) == 2 and ex.calls[1].ended)
    a, b = ex.calls
    assert (a.job, b.job) == ("a", "b") and a.window == b.window == hourly(T0 + H)
    assert b.started >= a.ended


def test_a_daemon_ending_its_ticks_runs_the_downstream_its_upstream_submits_while_draining(env):
    """``serve(max_ticks=1)`` leaves at the tick and drains: the model run, submitted only when the feature
    run ended (WindowDags), still runs instead of being cancelled with the pool."""
    e = env(extra=MODEL_JOB)
    d, ex = e.daemon(gated=True, start=False, max_parallel=1)  # b waits in the pool's queue behind a
    th = threading.Thread(target=d.serve, kwargs={"max_ticks": 1}, daemon=True)
    th.start()
    e.planned(d)
    e.clock.set(T0 + H)
    poll(lambda: len(ex.calls) == 1)  # the feature run holds the gate: serve has left its loop and drains
    ex.open()
    th.join(timeout=20)
    assert not th.is_alive()
    assert [c.job for c in ex.calls] == ["a", "b"]
    assert [r.status for r in e.runs("a") + e.runs("b")] == ["succeeded", "succeeded"]


def test_queued_downstream_waits_while_its_upstream_run_is_pending(env):
    e = env(extra=MODEL_JOB)
    d, ex = e.daemon()
    e.planned(d)
    cli = e.ledger("cli")
    w = Window(T0 - 3 * H, T0 - 2 * H)
    up, _ = cli.claim("a", w.start, w.end, trigger="manual", lease=timedelta(seconds=30))  # running elsewhere
    down, status = cli.enqueue("b", w.start, w.end)
    assert status == "queued"
    with pytest.raises(AssertionError):  # ten polls: b is left queued while a runs
        poll(lambda: ex.calls, timeout=0.5)
    assert cli.get_run(down).status == "queued"
    cli.finish_run(up, status="succeeded")
    poll(lambda: ex.windows("b") == [w])
    assert ex.windows("a") == []


def test_shutdown_releases_runs_that_never_started(env):
    e = env(catchup="all")
    e.ledger("setup").set_last_fires({"a": T0 - 3 * H})  # three missed fires
    d, ex = e.daemon(gated=True, max_parallel=1)
    poll(lambda: len(ex.calls) == 1)
    d.stop.set()
    ex.gate.release()  # the running one finishes within the grace period
    e.stop(d)
    assert len(ex.calls) == 1
    runs = e.runs()
    assert sorted(r.status for r in runs) == ["queued", "queued", "succeeded"]
    assert all(r.owner is None for r in runs if r.status == "queued")
    assert e.ledgers[0].leader()["lease_until"].startswith("1970-")  # the lease was released


def test_a_shutdown_waiting_on_running_runs_says_so(env, caplog, monkeypatch):
    """Stopping while a run is in flight: the wait for it (up to ``grace``, 5 s here) says once, past the
    notice mark (0.2 s here, 2 s in use), what it waits for, how long at most, and how to cut it short."""
    import logging

    from skyfeast.adapters import waiting

    monkeypatch.setattr(waiting, "NOTICE_AFTER", 0.2)
    e = env(catchup="all")
    e.ledger("setup").set_last_fires({"a": T0 - 2 * H})  # a missed fire: a run to have in flight
    d, ex = e.daemon(gated=True, max_parallel=1)
    poll(lambda: len(ex.calls) == 1)
    with caplog.at_level(logging.INFO, "skyfeast.wait"):
        d.stop.set()
        poll(lambda: any(r.name == "skyfeast.wait" for r in caplog.records), timeout=3)
        ex.gate.release()
        e.stop(d)
    notices = [r.getMessage() for r in caplog.records if r.name == "skyfeast.wait"]
    # two missed fires: one run started, one in the pool's queue behind it
    assert notices == ["waiting for 2 run(s) under way here and the runs after them to finish before stopping "
                       "(SIGTERM again cancels them) (0 s so far, gives up after 5 s)"], notices
