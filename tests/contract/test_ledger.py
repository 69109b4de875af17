"""Contract suite for the run ledger, over every backend (SQLite and PostgreSQL).

``ledger_url`` (tests/conftest.py) gives a fresh, empty ledger per test (a SQLite file, or a
PostgreSQL schema of the session's database).
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from skyfeast.scheduler.errors import UserError
from skyfeast.scheduler.ledger import SCHEMA_VERSION, Ledger, LedgerError, RunRow, reach_ledger

UTC = timezone.utc
HOUR = timedelta(hours=1)
LONG = timedelta(hours=1)
TINY = timedelta(milliseconds=1)


def u(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


W0 = (u(2026, 11, 28, 9), u(2026, 11, 28, 10))
W1 = (u(2026, 11, 28, 10), u(2026, 11, 28, 11))


@pytest.fixture
def ledger(ledger_url):
    led = Ledger(ledger_url)
    yield led
    led.close()


def claim(led: Ledger, job: str = "job", window=W0, *, lease=LONG, trigger="schedule", force=False):
    return led.claim(job, window[0], window[1], trigger=trigger, lease=lease, force=force)


def _expire():
    time.sleep(0.05)


# --------------------------------------------------------------------------- claim
def test_first_claim_creates_a_running_run(ledger):
    rid, why = claim(ledger, trigger="manual")
    assert why == "claimed" and isinstance(rid, int)
    run = ledger.get_run(rid)
    assert isinstance(run, RunRow)
    assert (run.job, run.window_start, run.window_end) == ("job", *W0)
    assert run.status == "running" and run.trigger == "manual"
    assert run.attempts == 0 and run.ended_at is None and run.failure_class is None
    assert ledger.find_run("job", *W0) == run


def test_duplicate_claim_is_refused_while_running(ledger):
    rid, _ = claim(ledger)
    assert claim(ledger) == (None, "running")
    assert claim(ledger, force=True) == (None, "running")  # force never steals a live run
    assert ledger.get_run(rid).status == "running"
    assert len(ledger.runs()) == 1


def test_claim_after_success_is_refused(ledger):
    rid, _ = claim(ledger)
    ledger.finish_run(rid, status="succeeded", rows=42)
    assert claim(ledger) == (None, "succeeded")
    run = ledger.get_run(rid)
    assert run.status == "succeeded" and run.rows_written == 42 and run.ended_at is not None


def test_force_reclaims_a_succeeded_run(ledger):
    rid, _ = claim(ledger, trigger="schedule")
    ledger.finish_run(rid, status="succeeded", rows=1)
    assert claim(ledger, force=True, trigger="manual") == (rid, "claimed")
    run = ledger.get_run(rid)
    assert run.status == "running" and run.trigger == "manual" and run.ended_at is None
    assert claim(ledger) == (None, "running")
    assert len(ledger.runs()) == 1


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_or_cancelled_run_is_reclaimable(ledger, status):
    rid, _ = claim(ledger)
    ledger.finish_run(rid, status=status, failure_class="infrastructure", error="boom")
    failed = ledger.get_run(rid)
    assert (failed.status, failed.failure_class, failed.error) == (status, "infrastructure", "boom")
    assert claim(ledger, trigger="retry") == (rid, "claimed")
    run = ledger.get_run(rid)
    assert run.status == "running" and run.trigger == "retry"
    assert run.failure_class is None and run.error is None and run.ended_at is None
    assert claim(ledger) == (None, "running")


def test_expired_lease_is_reclaimable(ledger):
    rid, _ = claim(ledger, lease=TINY)
    _expire()
    assert claim(ledger, lease=LONG) == (rid, "claimed")
    assert claim(ledger, lease=LONG) == (None, "running")


def test_a_dead_owners_open_attempt_is_closed_as_lost_when_reclaimed(ledger):
    rid, _ = claim(ledger, lease=TINY)
    first = ledger.start_attempt(rid, "aws")
    _expire()
    assert claim(ledger, lease=LONG) == (rid, "claimed")
    second = ledger.start_attempt(rid, "gcp")
    log = {a["id"]: a for a in ledger.attempts(rid)}
    assert log[first]["outcome"] == "lost" and log[first]["ended_at"] is not None
    assert log[second]["outcome"] is None and log[second]["ended_at"] is None


def test_live_lease_is_not_reclaimable(ledger):
    claim(ledger, lease=timedelta(seconds=30))
    _expire()
    assert claim(ledger) == (None, "running")


def test_heartbeat_keeps_the_run(ledger):
    rid, _ = claim(ledger, lease=TINY)
    assert ledger.heartbeat([rid], LONG) == set()  # nothing to stop
    _expire()
    assert claim(ledger) == (None, "running")


def test_heartbeat_does_not_revive_a_finished_run(ledger):
    rid, _ = claim(ledger)
    ledger.finish_run(rid, status="failed", failure_class="data", error="x")
    assert ledger.heartbeat([rid], LONG) == {rid}  # not running any more: stop it
    assert ledger.get_run(rid).status == "failed"
    assert claim(ledger) == (rid, "claimed")


def test_expired_owner_loses_the_run(ledger_url):
    first, second = Ledger(ledger_url), Ledger(ledger_url)
    try:
        rid, _ = claim(first, lease=TINY)
        _expire()
        assert claim(second) == (rid, "claimed")
        assert second.get_run(rid).owner == second.owner
        # the first owner woke up late: it may neither keep nor finish the run
        assert first.heartbeat([rid], LONG) == {rid}
        assert first.finish_run(rid, status="succeeded", rows=1) is False
        assert second.get_run(rid).status == "running"
        assert second.finish_run(rid, status="succeeded", rows=2) is True
        assert second.get_run(rid).rows_written == 2
    finally:
        first.close()
        second.close()


def test_windows_and_jobs_are_independent(ledger):
    a, _ = claim(ledger, "a", W0)
    b, _ = claim(ledger, "a", W1)
    c, _ = claim(ledger, "b", W0)
    # same start, different end: a different window
    d, _ = claim(ledger, "a", (W0[0], W1[1]))
    assert len({a, b, c, d}) == 4 and None not in {a, b, c, d}


def test_claim_accepts_any_time_zone(ledger):
    berlin = ZoneInfo("Europe/Berlin")
    rid, _ = claim(ledger, window=(W0[0].astimezone(berlin), W0[1].astimezone(berlin)))
    assert claim(ledger, window=W0) == (None, "running")  # same instants, same run
    run = ledger.find_run("job", *W0)
    assert run.id == rid and run.window_start == W0[0] and run.window_start.utcoffset() == timedelta(0)


def test_naive_datetimes_are_rejected(ledger):
    with pytest.raises((ValueError, sa.exc.StatementError)):
        ledger.claim("job", datetime(2026, 1, 1), datetime(2026, 1, 1, 1), trigger="manual", lease=LONG)


def _race(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_claims_exactly_one_wins(ledger):
    results = _race(8, lambda: claim(ledger))
    winners = [r for r in results if r[1] == "claimed"]
    assert len(winners) == 1
    assert sorted(results, key=str) == sorted([winners[0]] + [(None, "running")] * 7, key=str)
    assert len(ledger.runs()) == 1


def test_concurrent_claims_from_separate_ledgers_exactly_one_wins(ledger_url):
    # separate engines, as separate daemons would have
    ledgers = [Ledger(ledger_url) for _ in range(8)]
    try:
        it = iter(ledgers)
        lock = threading.Lock()

        def one():
            with lock:
                led = next(it)
            return claim(led)

        results = _race(8, one)
    finally:
        for led in ledgers:
            led.close()
    assert [r[1] for r in results].count("claimed") == 1
    assert all(r == (None, "running") for r in results if r[1] != "claimed")


@pytest.mark.parametrize("how", ["failed", "expired"])
def test_concurrent_reclaims_exactly_one_wins(ledger, how):
    rid, _ = claim(ledger, lease=TINY)
    if how == "failed":
        ledger.finish_run(rid, status="failed", failure_class="timeout", error="slow")
    else:
        _expire()
    results = _race(8, lambda: claim(ledger))
    assert results.count((rid, "claimed")) == 1
    assert results.count((None, "running")) == 7


# --------------------------------------------------------------------------- attempts
def test_attempts_numbered_from_one(ledger):
    rid, _ = claim(ledger)
    ids = [ledger.start_attempt(rid, p) for p in ("aws", "aws", "gcp")]
    assert len(set(ids)) == 3
    ledger.finish_attempt(ids[0], outcome="failed", failure_class="user_code", error="ZeroDivisionError")
    ledger.finish_attempt(ids[1], outcome="failed", failure_class="infrastructure", error="lost worker")
    ledger.finish_attempt(ids[2], outcome="succeeded", rows=7)
    atts = ledger.attempts(rid)
    assert [a["number"] for a in atts] == [1, 2, 3]
    assert [a["provider"] for a in atts] == ["aws", "aws", "gcp"]
    assert [a["outcome"] for a in atts] == ["failed", "failed", "succeeded"]
    assert atts[0]["failure_class"] == "user_code" and atts[0]["error"] == "ZeroDivisionError"
    assert atts[2]["rows_written"] == 7 and atts[2]["failure_class"] is None
    for a in atts:
        assert a["run_id"] == rid
        assert datetime.fromisoformat(a["started_at"]).utcoffset() == timedelta(0)
        assert datetime.fromisoformat(a["ended_at"]) >= datetime.fromisoformat(a["started_at"])
    run = ledger.get_run(rid)
    assert run.attempts == 3 and run.provider == "gcp"


def test_attempt_numbers_continue_after_reclaim(ledger):
    rid, _ = claim(ledger)
    a = ledger.start_attempt(rid, "aws")
    ledger.finish_attempt(a, outcome="failed", failure_class="infrastructure", error="x")
    ledger.finish_run(rid, status="failed", failure_class="infrastructure", error="x")
    assert claim(ledger) == (rid, "claimed")
    ledger.start_attempt(rid, "gcp")
    assert [a["number"] for a in ledger.attempts(rid)] == [1, 2]
    assert ledger.get_run(rid).attempts == 2


def test_attempts_are_per_run(ledger):
    r0, _ = claim(ledger, window=W0)
    r1, _ = claim(ledger, window=W1)
    ledger.start_attempt(r0, "aws")
    ledger.start_attempt(r1, "aws")
    ledger.start_attempt(r1, "aws")
    assert [a["number"] for a in ledger.attempts(r0)] == [1]
    assert [a["number"] for a in ledger.attempts(r1)] == [1, 2]
    assert ledger.attempts(999_999) == []


def test_open_attempt_has_no_end(ledger):
    rid, _ = claim(ledger)
    ledger.start_attempt(rid, "aws")
    (a,) = ledger.attempts(rid)
    assert a["ended_at"] is None and a["outcome"] is None


# --------------------------------------------------------------------------- runs() / lookups
def _seed(ledger: Ledger) -> dict[tuple[str, int], int]:
    ids = {}
    for h in range(5):
        for job in ("a", "b"):
            w = (u(2026, 1, 1, h), u(2026, 1, 1, h + 1))
            rid, _ = claim(ledger, job, w)
            ids[(job, h)] = rid
    ledger.finish_run(ids[("a", 0)], status="succeeded", rows=1)
    ledger.finish_run(ids[("a", 2)], status="succeeded", rows=2)
    ledger.finish_run(ids[("a", 3)], status="failed", failure_class="data", error="no files")
    ledger.finish_run(ids[("b", 4)], status="succeeded", rows=3)
    return ids


def test_runs_ordered_by_window_end_desc(ledger):
    # claim out of order: order must follow window_end, not insertion
    for h in (3, 0, 4, 1, 2):
        claim(ledger, "a", (u(2026, 1, 1, h), u(2026, 1, 1, h + 1)))
    ends = [r.window_end for r in ledger.runs()]
    assert ends == sorted(ends, reverse=True) and len(ends) == 5


def test_runs_filters(ledger):
    ids = _seed(ledger)
    assert len(ledger.runs()) == 10
    a = ledger.runs(job="a")
    assert {r.job for r in a} == {"a"} and [r.window_end.hour for r in a] == [5, 4, 3, 2, 1]
    assert [r.id for r in ledger.runs(job="a", status="succeeded")] == [ids[("a", 2)], ids[("a", 0)]]
    assert [r.id for r in ledger.runs(status="failed")] == [ids[("a", 3)]]
    assert {r.job for r in ledger.runs(status="succeeded")} == {"a", "b"}
    assert len(ledger.runs(status="running")) == 6
    assert ledger.runs(job="nope") == []
    assert ledger.runs(job="b", status="failed") == []


def test_runs_limit(ledger):
    _seed(ledger)
    top = ledger.runs(limit=3)
    assert len(top) == 3
    assert [r.window_end.hour for r in top] == [5, 5, 4]
    assert len(ledger.runs(job="a", limit=2)) == 2


def test_runs_tie_on_window_end_is_newest_first(ledger):
    r1, _ = claim(ledger, "x", (u(2026, 1, 1, 0), u(2026, 1, 1, 2)))
    r2, _ = claim(ledger, "x", (u(2026, 1, 1, 1), u(2026, 1, 1, 2)))
    assert [r.id for r in ledger.runs(job="x")] == [r2, r1]


def test_lookups_of_unknown_runs(ledger):
    assert ledger.get_run(123456) is None
    assert ledger.find_run("nope", *W0) is None
    claim(ledger)
    assert ledger.find_run("job", *W1) is None


def test_last_success_by_provider(ledger):
    assert ledger.last_success_by_provider() == {}
    r0, _ = claim(ledger, window=W0)
    r1, _ = claim(ledger, window=W1)
    r2, _ = claim(ledger, "other", W0)
    ledger.start_attempt(r0, "aws")
    ledger.start_attempt(r1, "aws")
    ledger.start_attempt(r2, "gcp")
    ledger.finish_run(r0, status="succeeded")
    time.sleep(0.01)
    ledger.finish_run(r1, status="succeeded")
    ledger.finish_run(r2, status="failed", failure_class="data", error="x")
    last = ledger.last_success_by_provider()
    assert set(last) == {"aws"}
    assert last["aws"] == ledger.get_run(r1).ended_at
    assert last["aws"].utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- time
def test_datetimes_round_trip_as_aware_utc(ledger):
    start = u(2026, 3, 29, 0, 59, 59, 123456)
    end = u(2026, 3, 29, 1, 0, 0, 654321)
    t0 = datetime.now(UTC)
    rid, _ = claim(ledger, window=(start, end))
    aid = ledger.start_attempt(rid, "aws")
    ledger.finish_attempt(aid, outcome="succeeded", rows=1)
    ledger.finish_run(rid, status="succeeded", rows=1)
    t1 = datetime.now(UTC)
    for run in (ledger.get_run(rid), ledger.find_run("job", start, end), ledger.runs()[0]):
        assert run.window_start == start and run.window_end == end  # microseconds survive
        for v in (run.window_start, run.window_end, run.created_at, run.started_at, run.ended_at):
            assert v.tzinfo is not None and v.utcoffset() == timedelta(0)
        assert t0 - timedelta(seconds=1) <= run.created_at <= run.started_at <= run.ended_at <= t1 + timedelta(seconds=1)
    d = ledger.get_run(rid).as_dict()
    assert d["window_start"] == "2026-03-29T00:59:59.123456+00:00"
    assert d["ended_at"].endswith("+00:00")


def test_non_utc_session_time_zone_does_not_shift_times(ledger_url):
    """A server/session time zone other than UTC must not move stored instants."""
    led = Ledger(ledger_url)
    try:
        if led.engine.dialect.name == "postgresql":
            @sa.event.listens_for(led.engine, "connect")
            def _tz(dbapi_conn, _rec):  # pragma: no cover - postgres only
                with dbapi_conn.cursor() as cur:
                    cur.execute("SET TIME ZONE 'America/New_York'")
                dbapi_conn.commit()

            led.engine.dispose()
        rid, _ = claim(led)
        assert led.find_run("job", *W0).window_start == W0[0]
        assert led.get_run(rid).window_end == W0[1]
    finally:
        led.close()


# --------------------------------------------------------------------------- schema
def _meta(url: str) -> dict[str, str]:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return dict(conn.execute(sa.text("SELECT key, value FROM skyfeast_meta")).all())
    finally:
        eng.dispose()


def _tables(url: str) -> set[str]:
    eng = sa.create_engine(url)
    try:
        return set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_schema_version_is_stored(ledger, ledger_url):
    assert ledger.schema_version() == SCHEMA_VERSION
    assert _meta(ledger_url) == {"schema_version": str(SCHEMA_VERSION)}
    assert {"skyfeast_meta", "skyfeast_runs", "skyfeast_attempts"} <= _tables(ledger_url)


def test_reopen_keeps_data_and_version(ledger_url):
    led = Ledger(ledger_url)
    rid, _ = claim(led)
    led.finish_run(rid, status="succeeded")
    led.close()
    again = Ledger(ledger_url)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert claim(again) == (None, "succeeded")
        assert again.get_run(rid).status == "succeeded"
    finally:
        again.close()
    assert _meta(ledger_url) == {"schema_version": str(SCHEMA_VERSION)}


def test_newer_schema_version_is_refused(ledger_url):
    Ledger(ledger_url).close()
    eng = sa.create_engine(ledger_url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE skyfeast_meta SET value = '99' WHERE key = 'schema_version'"))
    eng.dispose()
    with pytest.raises(LedgerError) as ei:
        Ledger(ledger_url)
    msg = str(ei.value)
    assert "99" in msg and str(SCHEMA_VERSION) in msg and "upgrade" in msg
    assert isinstance(ei.value, UserError)
    assert _meta(ledger_url)["schema_version"] == "99"  # left as found


def test_newer_ledger_is_not_touched(ledger_url):
    """A ledger from a newer skyfeast (other tables) gets no tables of ours added."""
    eng = sa.create_engine(ledger_url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE skyfeast_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO skyfeast_meta (key, value) VALUES ('schema_version', '99')"))
        conn.execute(sa.text("CREATE TABLE skyfeast_runs_v99 (id INTEGER PRIMARY KEY)"))
    eng.dispose()
    with pytest.raises(LedgerError, match="99"):
        Ledger(ledger_url)
    assert _tables(ledger_url) == {"skyfeast_meta", "skyfeast_runs_v99"}


def test_unusable_url_is_a_ledger_error():
    with pytest.raises(LedgerError):
        Ledger("nosuchdialect://x/y")


def _cfg(url: str) -> SimpleNamespace:
    return SimpleNamespace(state_url=url, daemon=SimpleNamespace(ledger_connect_timeout=timedelta(seconds=3),
                                                                 ledger_statement_timeout=timedelta(seconds=5)))


def test_reaching_the_ledger_ahead_leaves_it_as_it_was(ledger_url, tmp_path):
    """``reach_ledger`` (run while a command's slow config checks run) only connects: no table is
    made, and a SQLite ledger, which has no server, is not even created."""
    reach_ledger(_cfg(ledger_url))()  # reached: no error
    if ledger_url.startswith("sqlite"):
        assert not (tmp_path / "state.db").exists()
    else:
        assert _tables(ledger_url) == set()


def test_reaching_a_refusing_ledger_raises_a_ledger_error_naming_it():
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reached = reach_ledger(_cfg(f"postgresql+psycopg://skyfeast:s3cret@127.0.0.1:{port}/ledger"))
    with pytest.raises(LedgerError) as ei:
        reached()
    msg = str(ei.value)
    assert f"postgresql+psycopg://skyfeast:***@127.0.0.1:{port}/ledger" in msg and "s3cret" not in msg


def test_reaching_waits_as_long_as_the_driver_may_connect():
    """The wait for ``reach_ledger`` allows the connect deadline the driver gets: the URL's own
    ``?connect_timeout=`` over the config's, and libpq's 2 s floor."""
    from skyfeast.scheduler.ledger.core import _connect_seconds

    url = "postgresql+psycopg://u@db/ledger"
    assert (_connect_seconds(url + "?connect_timeout=60", 3), _connect_seconds(url, 3), _connect_seconds(url, 1),
            _connect_seconds(url + "?connect_timeout=soon", 3)) == (60, 3, 2, 3)


# ---------------------------------------------------------------------- provider probes
def test_provider_probes_keep_the_latest_result_per_provider(ledger_url):
    led = Ledger(ledger_url, owner="daemon-a")
    other = Ledger(ledger_url, owner="daemon-b")
    try:
        assert led.probes() == {}
        led.record_probe("aws", "healthy", workers=2, at=u(2026, 12, 1, 9))
        led.record_probe("gcp", "down", error="refused", at=u(2026, 12, 1, 9))
        other.record_probe("aws", "degraded", workers=0, at=u(2026, 12, 1, 9, 0, 5))  # overwrites, names its prober
        got = led.probes()
        assert got == {
            "aws": {"state": "degraded", "checked_at": u(2026, 12, 1, 9, 0, 5), "workers": 0, "error": None,
                    "by": "daemon-b"},
            "gcp": {"state": "down", "checked_at": u(2026, 12, 1, 9), "workers": None, "error": "refused",
                    "by": "daemon-a"},
        }
        led.record_probe("gcp", "healthy", workers=3)  # default time: now; the error is cleared
        gcp = other.probes()["gcp"]
        assert (gcp["state"], gcp["workers"], gcp["error"]) == ("healthy", 3, None)
        assert abs((datetime.now(UTC) - gcp["checked_at"]).total_seconds()) < 60
    finally:
        led.close()
        other.close()


def test_recording_probes_is_not_fenced(ledger_url):
    """A standby (or a deposed leader) still records what it observed: probes are not decisions."""
    leader, standby = Ledger(ledger_url), Ledger(ledger_url)
    try:
        assert leader.acquire_leader(None, LONG) is not None
        standby.record_probe("aws", "healthy", workers=1)
        assert leader.probes()["aws"]["by"] == standby.owner
    finally:
        leader.close()
        standby.close()


def test_drill_runs_are_never_picked_up_nor_counted_as_production(ledger):
    """A drill's run (job ``drill:JOB``) that a killed drill left behind is not a daemon's to
    resume, and its success is not a provider's production success."""
    orphan, _ = claim(ledger, "drill:job", lease=TINY, trigger="drill")
    ledger.start_attempt(orphan, "gcp")
    queued, _ = ledger.enqueue("drill:job", *W1, trigger="drill")
    done, _ = claim(ledger, "drill:other", trigger="drill")
    ledger.finish_success(done, ledger.start_attempt(done, "aws"), 10)
    _expire()
    assert ledger.reclaim_expired(LONG) == [] and ledger.claim_queued(LONG) == []
    assert ledger.last_success_by_provider() == {}
    # the same runs under a production job name are picked up and counted
    prod, _ = claim(ledger, "job", lease=TINY)
    ledger.enqueue("job", *W1)
    ok, _ = claim(ledger, "other")
    ledger.finish_success(ok, ledger.start_attempt(ok, "aws"), 10)
    _expire()
    assert [r.id for r in ledger.reclaim_expired(LONG)] == [prod]
    assert [r.job for r in ledger.claim_queued(LONG)] == ["job"]
    assert set(ledger.last_success_by_provider()) == {"aws"}
    assert queued != prod


def test_upstream_failed_runs_are_requeued_when_their_upstream_succeeds(ledger):
    down, _ = claim(ledger, "down")
    assert ledger.finish_run(down, status="upstream_failed", error="upstream 'up' failed (run 1)")
    other, _ = claim(ledger, "down", W1)  # another window: not requeued
    assert ledger.finish_run(other, status="upstream_failed", error="upstream 'up' failed (run 2)")
    assert ledger.claim_queued(LONG) == [] and ledger.reclaim_expired(LONG) == []
    assert ledger.requeue_upstream_failed(["down"], *W0) == [down]
    run = ledger.get_run(down)
    assert (run.status, run.owner, run.error, run.attempts) == ("queued", None, None, 0)
    assert ledger.get_run(other).status == "upstream_failed"
    assert ledger.requeue_upstream_failed(["down"], *W0) == []  # already queued: nothing to do
    # a manual run or a trigger takes an upstream_failed run at once
    assert claim(ledger, "down", W1) == (other, "claimed")
