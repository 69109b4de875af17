"""``Runner`` against a fake executor: no Dask cluster, a real ledger, config and provider pool.

What is real: :class:`Ledger` on SQLite in ``tmp_path``, :class:`Config` loaded from a small
``skyfeast.yaml`` (two providers with local storage), :class:`ProviderPool` (its breakers,
cordons and local stores), placement, classification, the retry/failover loop, the chunk
book the runner builds from the ledger, the heartbeat and the manifest.

What is substituted (the seams, all through ``monkeypatch``):

* ``skyfeast.scheduler.control.providers.make_cluster`` -> :class:`FakeConnector`, so
  ``ProviderPool.client`` runs for real (and marks the provider) but returns a
  :class:`FakeClient` (or raises :class:`Transient` for an unreachable cluster);
* ``skyfeast.scheduler.run.runner.run_feature_job`` -> :class:`FakeExecutor`, which
  follows a script of per-attempt :class:`Act` s and keeps the executor's contract with the
  runner (fix ``partitions`` once, skip ``done`` chunks, ``record`` each chunk as it is
  staged, publish only once every chunk is staged, return ``ExecResult.published``);
* ``skyfeast.scheduler.run.runner.backoff`` -> a recorder returning 0 s (the real one
  waits up to seconds between user-code retries);
* the Feast repo -> :class:`FakeRepo` (``write_target`` / ``record_materialization``).
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

import skyfeast.scheduler.control.providers as providers_mod
import skyfeast.scheduler.run.runner as runner_mod
from skyfeast.adapters.base import NotFound, Transient
from skyfeast.featurestore.chunks import Cancelled, TimeoutExpired
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.control.policy import Breaker, ProviderState
from skyfeast.scheduler.control.providers import ProviderPool
from skyfeast.scheduler.errors import ConfigError, DataError, Problem
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.run.executor import ExecResult, UserCodeError
from skyfeast.scheduler.run.runner import Runner
from skyfeast.scheduler.timing.windows import Window

UTC = timezone.utc
W = Window(datetime(2026, 3, 2, 11, tzinfo=UTC), datetime(2026, 3, 2, 12, tzinfo=UTC))
CHUNKS = 4  # partitions the fake executor fixes on a run's first attempt
ROWS = 10  # rows per chunk


def transform(df, window):  # the job's transform; the fake executor never calls it
    return df


class Misuse(BaseException):
    """The fake executor was driven in a way the test did not script. A BaseException, so that
    the runner's ``except Exception`` cannot classify it as a failed attempt and go on."""


def poll(cond, timeout: float = 5.0, every: float = 0.01, error=AssertionError):
    """Wait until ``cond()`` is truthy; raise ``error`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise error(f"condition not met within {timeout}s")
        time.sleep(every)


# --------------------------------------------------------------------------- fakes
class FakeClient:
    def __init__(self, provider: str):
        self.provider = provider


@dataclass
class World:
    """What the fake clusters do: which providers refuse connections."""

    unreachable: set[str] = field(default_factory=set)
    connects: list[str] = field(default_factory=list)


class FakeConnector:
    def __init__(self, name: str, world: World):
        self.name, self.world = name, world
        self.address = None

    def connect(self):
        self.world.connects.append(self.name)
        if self.name in self.world.unreachable:
            raise Transient(f"cannot connect to the scheduler of {self.name}")
        return FakeClient(self.name)

    def close(self):
        pass


@dataclass
class Act:
    """One attempt of the fake executor: write ``chunks`` chunks (None: all it still has to
    do), call ``then`` (if given), then raise ``exc`` (if given). ``wait_cancel``: before
    raising, poll the runner's watchdog until it asks to cancel (or itself raises, e.g.
    ProviderDown)."""

    exc: BaseException | None = None
    chunks: int | None = None
    then: object = None
    wait_cancel: bool = False


@dataclass
class Call:
    provider: str
    partitions: int | None  # book.partitions as the runner handed it over
    resumed: list[int]  # chunks already done when the attempt started
    wrote: list[int] = field(default_factory=list)
    deadline_in: float = 0.0  # seconds between the call and the deadline it was given


class FakeExecutor:
    """Stands in for ``run_feature_job`` and keeps its contract with the runner: chunks are
    staged (``book.record`` with the staged part) one by one; only when every chunk is staged
    is the window published, to the storage of the provider running this attempt, and the
    result carries the published parts (``ExecResult.published``)."""

    def __init__(self, script: list[Act]):
        self.script = list(script)
        self.calls: list[Call] = []

    def __call__(self, *, client, store, job, window, target, keys, deadline, progress, cancelled, book, **_):
        if not self.script:
            raise Misuse("the runner made more attempts than the test scripted")
        act = self.script.pop(0)
        call = Call(client.provider, book.partitions, sorted(book.done), deadline_in=deadline - time.monotonic())
        self.calls.append(call)
        if not keys:
            raise Misuse("the runner resolved no source keys")
        if book.partitions is None:
            book.partitions = CHUNKS
        todo = [i for i in range(book.partitions) if i not in book.done]
        for i in todo[: act.chunks]:
            stats = {"rows_in": ROWS, "rows_out": ROWS, "rows_online": 0,
                     "file": store.url(f"staging/{target.name}/{window.tag}-part{i:05d}.parquet")}
            book.record(i, stats)
            book.done[i] = stats
            call.wrote.append(i)
            progress(len(book.done), book.partitions)
        if act.then is not None:
            act.then()
        if act.wait_cancel:
            # ProviderDown, raised by the watchdog, propagates from here
            poll(cancelled, timeout=5.0, error=Misuse)
        if act.exc is not None:
            raise act.exc
        published = {i: {"file": store.url(f"offline/{target.name}/{window.tag}-part{i:05d}.parquet"),
                         "rows_online": ROWS} for i in sorted(book.done)}
        res = ExecResult(partitions=len(book.done), published=published)
        res.rows_in = sum(d["rows_in"] for d in book.done.values())
        res.rows_out = sum(d["rows_out"] for d in book.done.values())
        res.rows_online = sum(p["rows_online"] for p in published.values())
        res.files = [published[i]["file"] for i in sorted(published)]
        return res


@dataclass
class FakeTarget:
    name: str


class FakeRepo:
    def __init__(self, fail: Exception | None = None):
        self.recorded: list[tuple[str, datetime, datetime]] = []
        self.fail = fail

    def write_target(self, name):
        return FakeTarget(name)

    def record_materialization(self, name, start, end, *, coalesce=False):
        if self.fail is not None:
            raise self.fail
        self.recorded.append((name, start, end))


class Recorder:
    def __init__(self):
        self.attempts: list[tuple[str, int]] = []
        self.outcomes = []

    def attempt(self, job, window, provider, number):
        self.attempts.append((provider, number))

    def progress(self, job, window, done, total):
        pass

    def finished(self, outcome):
        self.outcomes.append(outcome)


# --------------------------------------------------------------------------- project
CONFIG = """\
project: t
feast: feature_repo
daemon: {{run_lease: {run_lease}, leader_lease: 10s, poll: {poll}}}
health: {{interval: 0.1s, timeout: 0.1s, miss_budget: 1}}
providers:
  p1:
    priority: 1
    cluster: {{type: local, workers: 1}}
    storage: {{type: local, root: data/p1}}
  p2:
    priority: 2
    cluster: {{type: local, workers: 1}}
    storage: {{type: local, root: data/p2}}
jobs:
  - name: feat
    kind: feature
    schedule: {{type: cron, expr: "0 * * * *"}}
    source: {source}
    transform: tests.unit.test_runner:transform
    feature_view: fv
    retries: {retries}
    timeout: {timeout}
{extra}"""


class Project:
    def __init__(self, tmp_path, monkeypatch, *, retries=2, timeout="20m", extra="", run_lease="30s",
                 poll="1s", sources=("p1", "p2"), repo: FakeRepo | None = None,
                 source='{type: parquet, path: "events/*.parquet"}', files=("e1.parquet",)):
        for p in sources:  # the source files the runner resolves (never read: the executor is fake)
            d = tmp_path / "data" / p / "events"
            d.mkdir(parents=True)
            for f in files:
                (d / f).write_bytes(b"")
        path = tmp_path / "skyfeast.yaml"
        path.write_text(CONFIG.format(retries=retries, timeout=timeout, run_lease=run_lease, poll=poll, source=source,
                                      extra=textwrap.indent(extra, "    ")))
        self.cfg = load_config(path, check_feast=False)
        self.url = f"sqlite:///{tmp_path / 'state.db'}"
        self.ledger = Ledger(self.url, owner="runner-1")
        self.world = World()
        monkeypatch.setattr(providers_mod, "make_cluster",
                            lambda cluster, name, *a, **kw: FakeConnector(name, self.world))
        self.pool = ProviderPool(self.cfg)
        self.repo = repo or FakeRepo()
        self.backoffs: list[int] = []
        self.on_backoff = None  # called (no arguments) when the runner asks for a backoff delay

        def fake_backoff(attempt, **kw):
            self.backoffs.append(attempt)
            return self.on_backoff() if self.on_backoff is not None else 0.0

        monkeypatch.setattr(runner_mod, "backoff", fake_backoff)
        self._monkeypatch = monkeypatch
        self.reporter = Recorder()
        self.runner = Runner(self.cfg, self.ledger, self.repo, self.pool, reporter=self.reporter)
        self._closers = [self.runner.close, self.pool.close, self.ledger.close]

    @property
    def job(self):
        return self.cfg.job("feat")

    def script(self, *acts: Act) -> FakeExecutor:
        fake = FakeExecutor(list(acts))
        self._monkeypatch.setattr(runner_mod, "run_feature_job", fake)
        return fake

    def run(self, **kw):
        return self.runner.run_window(self.job, W, **kw)

    def attempts(self, run_id):
        return [(a["provider"], a["outcome"], a["failure_class"]) for a in self.ledger.attempts(run_id)]

    def second_runner(self, owner="runner-2"):
        ledger = Ledger(self.url, owner=owner)
        runner = Runner(self.cfg, ledger, self.repo, self.pool, reporter=Recorder())
        self._closers[:0] = [runner.close, ledger.close]
        return runner, ledger

    def close(self):
        for c in self._closers:
            c()


@pytest.fixture
def project(tmp_path, monkeypatch):
    made = []

    def make(**kw) -> Project:
        p = Project(tmp_path, monkeypatch, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# --------------------------------------------------------------------------- success
def test_success_first_provider_records_run_attempt_chunks_and_registry(project):
    p = project()
    fake = p.script(Act())
    out = p.run()
    assert (out.status, out.provider, out.attempts, out.rows) == ("succeeded", "p1", 1, CHUNKS * ROWS)
    run = p.ledger.get_run(out.run_id)
    assert (run.status, run.provider, run.attempts, run.rows_written, run.partitions) == \
        ("succeeded", "p1", 1, CHUNKS * ROWS, CHUNKS)
    assert p.attempts(out.run_id) == [("p1", "succeeded", None)]
    # the ledger's chunks point at the published parts, no longer at the staged ones
    offline = p.pool.store("p1").url(f"offline/fv/{W.tag}-part")
    assert sorted(p.ledger.chunks(out.run_id)) == list(range(CHUNKS))
    assert all(c["file"].startswith(offline) and c["rows_online"] == ROWS
               for c in p.ledger.chunks(out.run_id).values())
    assert [c.provider for c in fake.calls] == ["p1"]
    assert p.repo.recorded == [("fv", W.start, W.end)]
    assert p.pool.breaker("p1").state is ProviderState.HEALTHY  # a connect that worked marks it
    # the job's timeout becomes the attempt's deadline
    assert 20 * 60 - 5 < fake.calls[0].deadline_in <= 20 * 60
    # the manifest lists the window's parts, on the storage of the provider that ran it
    doc = json.loads(p.pool.store("p1").read_bytes(f"manifests/fv/{W.tag}.json"))
    assert (doc["run_id"], doc["provider"], doc["rows"], len(doc["files"])) == (out.run_id, "p1", 40, CHUNKS)
    assert p.reporter.attempts == [("p1", 1)] and p.reporter.outcomes == [out]
    assert p.ledger.pending_copies() == []  # every part is on the primary (p1)


def test_succeeded_window_is_skipped_unless_forced(project):
    p = project()
    fake = p.script(Act(), Act())
    first = p.run()
    again = p.run()
    assert (again.status, again.reason, again.run_id) == ("skipped", "already succeeded", None)
    assert len(fake.calls) == 1
    forced = p.run(force=True)
    assert forced.status == "succeeded" and forced.run_id == first.run_id
    # a forced re-run starts afresh: it does not "resume" from the succeeded run's chunks
    assert (fake.calls[1].partitions, fake.calls[1].resumed) == (None, [])
    assert [a[0] for a in p.attempts(first.run_id)] == ["p1", "p1"]


# --------------------------------------------------------------------------- infrastructure: failover
@pytest.mark.parametrize("exc", [Transient("scheduler went away"), ConnectionResetError("reset by peer")],
                         ids=["adapter-transient", "connection-reset"])
def test_infrastructure_error_fails_over_to_second_provider(project, exc):
    p = project(retries=3)
    fake = p.script(Act(exc=exc, chunks=0), Act())
    out = p.run()
    assert (out.status, out.provider, out.attempts) == ("succeeded", "p2", 2)
    assert p.attempts(out.run_id) == [("p1", "failed", "infrastructure"), ("p2", "succeeded", None)]
    assert [c.provider for c in fake.calls] == ["p1", "p2"]
    assert p.ledger.get_run(out.run_id).provider == "p2"
    assert p.backoffs == []  # failing over does not wait, nor spend the user-code retry budget
    assert p.pool.breaker("p1").state is ProviderState.DEGRADED
    assert p.reporter.attempts == [("p1", 1), ("p2", 2)]


def test_unreachable_cluster_fails_over_without_running_the_job_there(project):
    p = project()
    p.world.unreachable.add("p1")
    fake = p.script(Act())
    out = p.run()
    assert (out.status, out.provider) == ("succeeded", "p2")
    assert p.attempts(out.run_id) == [("p1", "failed", "infrastructure"), ("p2", "succeeded", None)]
    assert [c.provider for c in fake.calls] == ["p2"]
    assert p.world.connects == ["p1", "p2"]
    assert "cannot connect to the scheduler of p1" in p.ledger.attempts(out.run_id)[0]["error"]


def test_infrastructure_error_on_every_provider_fails_the_run(project):
    p = project(retries=5)
    fake = p.script(Act(exc=Transient("gone")), Act(exc=Transient("gone too")))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "infrastructure", 2)
    run = p.ledger.get_run(out.run_id)
    assert (run.status, run.failure_class, run.attempts) == ("failed", "infrastructure", 2)
    assert "gone too" in run.error
    assert p.attempts(out.run_id) == [("p1", "failed", "infrastructure"), ("p2", "failed", "infrastructure")]
    assert len(fake.calls) == 2  # no third attempt: infrastructure errors are not retried in place
    assert p.repo.recorded == []


def test_watchdog_fails_over_when_health_monitor_marks_provider_down(project):
    """An attempt blocked on a hung cluster: the watchdog raises ProviderDown once the pool's
    breaker for the provider is DOWN and no task finished for the health deadline."""
    p = project()
    down = lambda: p.pool.set_breaker("p1", Breaker(ProviderState.DOWN, 1, time.monotonic()))  # noqa: E731
    fake = p.script(Act(chunks=0, then=down, wait_cancel=True), Act())
    out = p.run()
    assert (out.status, out.provider) == ("succeeded", "p2")
    attempts = p.ledger.attempts(out.run_id)
    assert [(a["provider"], a["failure_class"]) for a in attempts] == [("p1", "infrastructure"), ("p2", None)]
    assert "marked down by the health monitor" in attempts[0]["error"]
    assert [c.provider for c in fake.calls] == ["p1", "p2"]


# --------------------------------------------------------------------------- chunk book resume
def test_failover_resumes_from_chunks_the_first_attempt_recorded(project):
    p = project()
    fake = p.script(Act(exc=Transient("lost the cluster"), chunks=2), Act())
    out = p.run()
    assert (out.status, out.provider, out.rows) == ("succeeded", "p2", CHUNKS * ROWS)
    first, second = fake.calls
    assert (first.partitions, first.resumed, first.wrote) == (None, [], [0, 1])
    # attempt 2 gets the chunking attempt 1 fixed and does only the chunks still missing
    assert (second.partitions, second.resumed, second.wrote) == (CHUNKS, [0, 1], [2, 3])
    a1, a2 = (a["id"] for a in p.ledger.attempts(out.run_id))
    chunks = p.ledger.chunks(out.run_id)
    assert {i: c["attempt_id"] for i, c in chunks.items()} == {0: a1, 1: a1, 2: a2, 3: a2}
    assert p.ledger.get_run(out.run_id).partitions == CHUNKS
    # the window is published where it finished (p2): the manifest there lists every part,
    # the ledger's chunks point at them, and the run is queued for the reconciler because
    # the primary is p1
    doc = json.loads(p.pool.store("p2").read_bytes(f"manifests/fv/{W.tag}.json"))
    assert sorted(doc["files"]) == sorted(c["file"] for c in chunks.values())
    assert all(f.startswith(p.pool.store("p2").url("offline/")) for f in doc["files"]) and len(doc["files"]) == CHUNKS
    assert [c["run_id"] for c in p.ledger.pending_copies()] == [out.run_id]


def test_failover_hands_the_next_attempt_the_join_the_first_fixed(project):
    """A composed model job's join (broadcast or shuffle) is part of its chunking: the first attempt
    fixes it, the ledger keeps it beside the chunk count, and the next attempt gets it back."""
    p = project()
    fake = p.script(Act(exc=Transient("lost the cluster"), chunks=1), Act())
    seen = []

    def joining(*, book, **kw):
        seen.append((book.partitions, book.join))
        if book.partitions is None:
            book.join = "shuffle"
        return fake(book=book, **kw)

    p._monkeypatch.setattr(runner_mod, "run_feature_job", joining)
    out = p.run()
    assert (out.status, out.provider) == ("succeeded", "p2")
    assert seen == [(None, None), (CHUNKS, "shuffle")]
    assert (p.ledger.join_way(out.run_id), p.ledger.key_ranges(out.run_id)) == ("shuffle", None)


def test_user_code_retry_resumes_on_the_same_provider(project):
    p = project(retries=1)
    fake = p.script(Act(exc=UserCodeError("transforms:feat raised KeyError: 'x'"), chunks=3), Act())
    out = p.run()
    assert (out.status, out.provider, out.attempts) == ("succeeded", "p1", 2)
    assert [(c.provider, c.resumed, c.wrote) for c in fake.calls] == [("p1", [], [0, 1, 2]), ("p1", [0, 1, 2], [3])]


def test_shutdown_releases_run_for_resume_by_the_next_process(project):
    """``stop`` during an attempt: the run becomes ``interrupted`` with its chunks, and the next
    process's claim resumes it instead of starting over."""
    p = project()
    fake = p.script(Act(exc=Cancelled("cancelled while running"), chunks=1, then=p.runner.stop.set,
                        wait_cancel=True))
    out = p.run()
    assert (out.status, out.failure_class, out.reason) == \
        ("cancelled", "cancelled", "released for resume after shutdown")
    run = p.ledger.get_run(out.run_id)
    assert (run.status, run.owner) == ("interrupted", None)
    assert p.attempts(out.run_id) == [("p1", "failed", "cancelled")]
    assert sorted(p.ledger.chunks(out.run_id)) == [0]
    assert p.repo.recorded == []

    runner2, ledger2 = p.second_runner()
    fake.script.append(Act())
    out2 = runner2.run_window(p.job, W)
    assert (out2.status, out2.run_id) == ("succeeded", out.run_id)
    assert (fake.calls[1].partitions, fake.calls[1].resumed, fake.calls[1].wrote) == (CHUNKS, [0], [1, 2, 3])
    assert ledger2.get_run(out.run_id).status == "succeeded"
    assert len(ledger2.attempts(out.run_id)) == 2


def test_shutdown_during_retry_backoff_releases_the_run(project):
    p = project(retries=2)
    p.on_backoff = lambda: p.runner.stop.set() or 5.0  # SIGTERM arrives while the runner waits to retry
    fake = p.script(Act(exc=UserCodeError("flaky"), chunks=1))
    t0 = time.monotonic()
    out = p.run()
    assert time.monotonic() - t0 < 2.5  # the 5 s backoff was cut short
    assert (out.status, out.failure_class, out.reason) == \
        ("cancelled", "cancelled", "released for resume after shutdown")
    assert p.ledger.get_run(out.run_id).status == "interrupted"
    assert sorted(p.ledger.chunks(out.run_id)) == [0]
    assert len(fake.calls) == 1 and p.backoffs == [1]


@pytest.mark.parametrize("exc", [UserCodeError("flaky"), Transient("scheduler closing")], ids=["user-code", "infra"])
def test_shutdown_when_an_attempt_fails_retryably_releases_the_run(project, exc):
    """The attempt fails (user code with retries left, or infrastructure with a provider left)
    after ``stop`` was set: the retry or failover that was due is left to the next process, so
    the run is released (``interrupted``, resumable), as a shutdown that lands during the backoff
    or inside the executor is. (It once ended ``failed`` with the attempt's class for good.)"""
    p = project(retries=2)
    p.script(Act(exc=exc, chunks=1, then=p.runner.stop.set))
    out = p.run()
    assert p.ledger.get_run(out.run_id).status == "interrupted"
    assert (out.status, out.failure_class) == ("cancelled", "cancelled")


def test_failed_window_rerun_starts_afresh(project):
    """A failed run claimed again restarts: its chunks are dropped, the chunking is fixed anew."""
    p = project(retries=0)
    fake = p.script(Act(exc=DataError("half the input is missing"), chunks=2), Act())
    assert p.run().status == "failed"
    out = p.run()
    assert out.status == "succeeded"
    assert (fake.calls[1].partitions, fake.calls[1].resumed, fake.calls[1].wrote) == (None, [], [0, 1, 2, 3])


# --------------------------------------------------------------------------- user code: retries
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_user_code_error_retried_in_place_then_gives_up(project, retries):
    p = project(retries=retries)
    fake = p.script(*[Act(exc=UserCodeError(f"boom {n}")) for n in range(retries + 1)])
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "user_code", retries + 1)
    assert out.error == f"boom {retries}"
    # retries + 1 attempts, never more, and all on the first provider: user code fails anywhere
    assert p.attempts(out.run_id) == [("p1", "failed", "user_code")] * (retries + 1)
    assert [c.provider for c in fake.calls] == ["p1"] * (retries + 1)
    run = p.ledger.get_run(out.run_id)
    assert (run.status, run.failure_class, run.attempts) == ("failed", "user_code", retries + 1)
    assert p.backoffs == list(range(1, retries + 1))  # a backoff before each retry, growing


@pytest.mark.parametrize("failures", [1, 2])
def test_user_code_error_fewer_times_than_retries_succeeds(project, failures):
    p = project(retries=2)
    p.script(*[Act(exc=UserCodeError(f"flaky {n}")) for n in range(failures)], Act())
    out = p.run()
    assert (out.status, out.provider, out.attempts) == ("succeeded", "p1", failures + 1)
    assert p.attempts(out.run_id) == [("p1", "failed", "user_code")] * failures + [("p1", "succeeded", None)]
    assert p.backoffs == list(range(1, failures + 1))


def test_same_user_code_error_twice_in_a_row_is_not_retried_again(project):
    """retries=3, but the second failure repeats the first (same message): it is deterministic,
    so the run gives up after 2 attempts instead of spending the other retries."""
    p = project(retries=3)
    fake = p.script(Act(exc=UserCodeError("transforms:feat raised KeyError: 'x'")),
                    Act(exc=UserCodeError("transforms:feat raised KeyError: 'x'")))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "user_code", 2)
    assert len(fake.calls) == 2 and p.backoffs == [1]


def test_only_consecutive_repeats_stop_the_retries(project):
    p = project(retries=3)
    p.script(Act(exc=UserCodeError("a")), Act(exc=UserCodeError("b")), Act(exc=UserCodeError("a")), Act())
    out = p.run()
    assert (out.status, out.attempts) == ("succeeded", 4)
    assert p.backoffs == [1, 2, 3]


def test_infrastructure_failures_do_not_spend_the_user_code_budget(project):
    """retries=1: user error, then an infrastructure error (failover), then a user error on
    p2 is the second user-code failure: the budget (per run, across providers) is spent."""
    p = project(retries=1)
    p.script(Act(exc=UserCodeError("u1")), Act(exc=Transient("infra")), Act(exc=UserCodeError("u2")))
    out = p.run()
    assert (out.status, out.failure_class) == ("failed", "user_code")
    assert p.attempts(out.run_id) == [("p1", "failed", "user_code"), ("p1", "failed", "infrastructure"),
                                      ("p2", "failed", "user_code")]
    assert p.backoffs == [1]


def test_infrastructure_failure_between_user_retries_still_allows_them(project):
    p = project(retries=1)
    p.script(Act(exc=Transient("infra")), Act(exc=UserCodeError("u1")), Act())
    out = p.run()
    assert (out.status, out.provider) == ("succeeded", "p2")
    assert p.attempts(out.run_id) == [("p1", "failed", "infrastructure"), ("p2", "failed", "user_code"),
                                      ("p2", "succeeded", None)]


# --------------------------------------------------------------------------- data, timeout, cancel: give up
@pytest.mark.parametrize("exc", [DataError("no rows for the window"), NotFound("events/e1.parquet: not found")],
                         ids=["data-error", "adapter-not-found"])
def test_data_error_neither_retries_nor_fails_over(project, exc):
    p = project(retries=3)
    fake = p.script(Act(exc=exc))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts, out.provider) == ("failed", "data", 1, "p1")
    assert p.attempts(out.run_id) == [("p1", "failed", "data")]
    assert len(fake.calls) == 1 and p.backoffs == []
    assert p.ledger.get_run(out.run_id).failure_class == "data"
    assert p.pool.breaker("p1").state is ProviderState.HEALTHY  # the provider is not blamed


def test_missing_source_files_are_a_data_error_without_failover(project):
    """The real source resolution: p1 holds no file for the window (p2 does, but a data
    error is not the provider's fault, so the run is not moved)."""
    p = project(sources=("p2",))
    fake = p.script()
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "data", 1)
    assert "no source files match" in out.error
    assert fake.calls == []


@pytest.mark.parametrize("required", [True, False])
def test_a_window_day_without_a_file_fails_unless_the_source_does_not_require_it(project, required):
    """A {date} source with its lookback day's file but none for the window's own day: a data failure
    naming the missing file, unless the source sets ``require_window_days: false`` (a source that writes
    no file for a day without events), when the run goes on with the files there are."""
    flag = "" if required else ", require_window_days: false"
    p = project(source='{type: parquet, path: "events/{date}.parquet", lookback: 1d' + flag + "}",
                files=("2026-03-01.parquet",))
    fake = p.script(Act())
    out = p.run()
    if required:
        assert (out.status, out.failure_class, out.attempts) == ("failed", "data", 1)
        assert "'events/2026-03-02.parquet'" in out.error and "has no input for a day it covers" in out.error
        assert fake.calls == []
    else:
        assert out.status == "succeeded" and [c.provider for c in fake.calls] == ["p1"]


@pytest.mark.parametrize("exc", [ConfigError([Problem("skyfeast.yaml", 3, "feast", "no feature_store.yaml")])],
                         ids=["config-error"])
def test_config_error_neither_retries_nor_fails_over(project, exc):
    p = project(retries=3)
    fake = p.script(Act(exc=exc))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "config", 1)
    assert p.attempts(out.run_id) == [("p1", "failed", "config")]
    assert len(fake.calls) == 1 and p.backoffs == []


def test_timeout_neither_retries_nor_fails_over(project):
    p = project(retries=3, timeout="2s")
    fake = p.script(Act(exc=TimeoutExpired("timed out with 2 of 4 partitions unfinished"), chunks=2))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "timeout", 1)
    assert p.attempts(out.run_id) == [("p1", "failed", "timeout")]
    assert 1.0 < fake.calls[0].deadline_in <= 2.0
    assert p.backoffs == []


def test_operator_cancel_reaches_the_attempt_through_the_heartbeat(project):
    p = project(run_lease="0.6s", poll="0.2s")
    fake = p.script(Act(exc=Cancelled("cancelled while running"), wait_cancel=True))
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("out", p.run()))
    th.start()
    rid = poll(lambda: p.ledger.runs(job="feat") and p.ledger.runs(job="feat")[0].id)
    poll(lambda: fake.calls)
    assert p.ledger.request_cancel(rid) == "cancelling"
    th.join(timeout=10)
    assert not th.is_alive()
    out = result["out"]
    assert (out.status, out.failure_class) == ("cancelled", "cancelled")
    run = p.ledger.get_run(rid)
    assert (run.status, run.failure_class) == ("cancelled", "cancelled")
    assert p.attempts(rid) == [("p1", "failed", "cancelled")]


# --------------------------------------------------------------------------- placement
@pytest.mark.parametrize("how", ["cordoned", "down"])
def test_cordoned_and_down_providers_are_not_tried(project, how):
    p = project()
    fake = p.script(Act())
    if how == "cordoned":
        p.pool.set_cordons({"p1": {"reason": "maintenance"}})
    else:
        p.pool.set_breaker("p1", Breaker(ProviderState.DOWN, 3, time.monotonic()))
    out = p.run()
    assert (out.status, out.provider) == ("succeeded", "p2")
    assert p.attempts(out.run_id) == [("p2", "succeeded", None)]
    assert [c.provider for c in fake.calls] == ["p2"] and p.world.connects == ["p2"]


def test_no_placeable_provider_fails_without_an_attempt(project):
    p = project()
    fake = p.script()
    p.pool.set_cordons({"p1": {}, "p2": {}})
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "infrastructure", 0)
    run = p.ledger.get_run(out.run_id)
    assert (run.status, run.failure_class, run.attempts) == ("failed", "infrastructure", 0)
    assert "no provider is available" in run.error
    assert fake.calls == [] and p.ledger.attempts(out.run_id) == []


def test_job_providers_restrict_placement_and_failover(project):
    p = project(extra="providers: [p2]\n")
    fake = p.script(Act(exc=Transient("down")))
    out = p.run()
    assert (out.status, out.failure_class, out.attempts) == ("failed", "infrastructure", 1)
    assert [c.provider for c in fake.calls] == ["p2"]


def test_registry_failure_after_rows_were_written_fails_the_run(project):
    p = project(repo=FakeRepo(fail=RuntimeError("registry locked")))
    p.script(Act())
    out = p.run()
    assert (out.status, out.failure_class) == ("failed", "infrastructure")
    assert "recording the interval in the Feast registry failed" in out.error
    assert p.attempts(out.run_id) == [("p1", "failed", "infrastructure")]
    assert sorted(p.ledger.chunks(out.run_id)) == list(range(CHUNKS))  # kept for a resume
