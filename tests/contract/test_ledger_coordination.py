"""Ledger coordination contract (SQLite and PostgreSQL): leader lease and fencing, batch claims,
orphan reclaim, release, queueing, operator cancel and cordons."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.ledger import Fenced, Ledger

UTC = timezone.utc
S = datetime(2026, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
LEASE = timedelta(seconds=30)


@pytest.fixture
def pair(ledger_url):
    a, b = Ledger(ledger_url, owner="host-a:1"), Ledger(ledger_url, owner="host-b:2")
    yield a, b
    a.close()
    b.close()


def test_one_leader_renewal_keeps_token_takeover_increments_it(pair):
    a, b = pair
    assert a.acquire_leader(None, timedelta(seconds=1)) == 1
    assert b.acquire_leader(None, timedelta(seconds=5)) is None
    assert a.acquire_leader(None, timedelta(seconds=1)) == 1  # renewal
    time.sleep(1.2)
    assert b.acquire_leader(None, timedelta(seconds=5)) == 2  # takeover after expiry
    assert a.leader()["holder"] == "host-b:2"


def test_deposed_leader_cannot_write_even_after_noticing(pair):
    a, b = pair
    a.acquire_leader(None, timedelta(milliseconds=500))
    time.sleep(0.7)
    assert b.acquire_leader(None, LEASE) == 2
    with pytest.raises(Fenced):
        a.claim_many([("j", S, S + H)], trigger="schedule", lease=LEASE)
    assert a.acquire_leader(None, LEASE) is None  # a notices it lost the lease
    for write in (lambda: a.set_last_fires({"j": S}), lambda: a.claim("j", S, S + H, trigger="t", lease=LEASE),
                  lambda: a.finish_run(1, status="failed")):
        with pytest.raises(Fenced):
            write()
    assert b.claim_many([("j", S, S + H)], trigger="schedule", lease=LEASE)  # the new leader can


def test_claim_many_skips_windows_that_have_a_run(pair):
    a, _ = pair
    first = a.claim_many([("j", S, S + H), ("k", S, S + H)], trigger="schedule", lease=LEASE)
    again = a.claim_many([("j", S, S + H), ("j", S + H, S + 2 * H)], trigger="schedule", lease=LEASE)
    assert sorted(r[1] for r in first) == ["j", "k"]
    assert [(r[1], r[2]) for r in again] == [("j", S + H)]


def test_expired_run_is_reclaimed_with_its_chunks_and_pending_cancel(pair):
    a, b = pair
    rid, _ = a.claim("j", S, S + H, trigger="t", lease=timedelta(seconds=2))
    a.set_partitions(rid, 4)
    a.record_chunk(rid, 0, {"rows_out": 5})
    assert a.request_cancel(rid) == "cancelling"
    assert b.reclaim_expired(LEASE) == []  # lease still valid
    time.sleep(2.2)
    (row,) = b.reclaim_expired(LEASE)
    assert row.id == rid and row.owner == "host-b:2" and row.partitions == 4
    assert b.chunks(rid)[0]["rows_out"] == 5
    assert b.heartbeat([rid], LEASE) == {rid}  # the operator's cancel survives the takeover
    assert a.heartbeat([rid], LEASE) == {rid}  # and a is told the run is no longer its own


def test_release_requeues_unstarted_and_expires_started(pair):
    a, b = pair
    (r1, *_), (r2, *_) = a.claim_many([("j", S, S + H), ("j", S + H, S + 2 * H)], trigger="s", lease=LEASE)
    a.start_attempt(r2, "aws")
    a.set_partitions(r2, 2)
    a.record_chunk(r2, 0, {"rows_out": 3})
    a.release_runs([r1, r2])
    assert a.get_run(r1).status == "queued"
    assert a.get_run(r2).status == "interrupted" and a.get_run(r2).owner is None
    assert [r.id for r in b.claim_queued(LEASE)] == [r1]
    (row,) = b.reclaim_expired(LEASE)
    assert row.id == r2 and row.status == "running" and row.owner == "host-b:2"
    assert b.chunks(r2)[0]["rows_out"] == 3  # resumed, not restarted


def test_interrupted_run_resumes_through_claim_and_can_be_cancelled(pair):
    a, b = pair
    (r1, *_), (r2, *_) = a.claim_many([("j", S, S + H), ("j", S + H, S + 2 * H)], trigger="s", lease=LEASE)
    for rid in (r1, r2):
        a.start_attempt(rid, "aws")
        a.set_partitions(rid, 2)
        a.record_chunk(rid, 1, {"rows_out": 7})
    a.release_runs([r1, r2])
    assert b.claim("j", S, S + H, trigger="manual", lease=LEASE) == (r1, "claimed")
    assert b.chunks(r1)[1]["rows_out"] == 7
    assert a.request_cancel(r2) == "cancelled"
    assert a.get_run(r2).error == "cancelled by operator while interrupted"
    assert b.reclaim_expired(LEASE) == []


def test_enqueue_and_operator_cancel(pair):
    a, _ = pair
    assert a.enqueue("j", S, S + H) == (1, "queued")
    assert a.enqueue("j", S, S + H) == (1, "queued")  # no duplicate
    assert a.request_cancel(1) == "cancelled"
    assert a.enqueue("j", S, S + H) == (1, "queued")  # a cancelled window can be queued again
    (row,) = a.claim_queued(LEASE)
    a.finish_run(row.id, status="succeeded")
    assert a.enqueue("j", S, S + H) == (1, "succeeded")
    assert a.request_cancel(999) is None


def test_cordons_round_trip(pair):
    a, b = pair
    a.cordon("aws", reason="maintenance")
    assert b.cordons()["aws"]["reason"] == "maintenance"
    assert b.uncordon("aws") and not b.uncordon("aws")
    assert a.cordons() == {}


def test_a_run_waiting_for_its_upstream_is_not_claimed_until_the_upstream_ends(pair):
    a, b = pair
    after = {"model": "feat"}
    model, _ = a.enqueue("model", S, S + H)
    feat, _ = a.enqueue("feat", S, S + H)
    other, _ = a.enqueue("model", S + H, S + 2 * H)  # its window has no upstream run at all
    assert sorted(r.id for r in b.claim_queued(LEASE, after=after)) == sorted([feat, other])
    assert b.claim_queued(LEASE, after=after) == []  # upstream running: still waiting
    b.start_attempt(feat, "aws")
    b.release_runs([feat])  # interrupted: still pending
    assert a.get_run(feat).status == "interrupted"
    assert b.claim_queued(LEASE, after=after) == []
    (row,) = b.reclaim_expired(LEASE, after=after)
    assert row.id == feat
    b.finish_run(feat, status="succeeded")
    assert [r.id for r in b.claim_queued(LEASE, after=after)] == [model]
    # without ``after`` nothing is held back (the runner's own check still guards the input)
    c, _ = a.enqueue("feat", S + 2 * H, S + 3 * H)
    m, _ = a.enqueue("model", S + 2 * H, S + 3 * H)
    assert sorted(r.id for r in b.claim_queued(LEASE)) == sorted([c, m])


def test_claims_stay_bounded_with_thousands_of_jobs_waiting_on_upstreams(pair):
    """2,000 jobs, 1,000 of them model jobs each waiting on its own feature job: one claim pass of the
    daemon's shape takes every claimable run, holds back exactly the waiting ones, and its SQL does
    not grow with the number of jobs (it once built one clause per job and broke SQLite's
    expression-depth limit, so the daemon dispatched nothing)."""
    a, b = pair
    after = {f"model{i}": f"feat{i}" for i in range(1000)}
    items = [(f"feat{i}", S, S + H) for i in range(1000)] + [(m, S, S + H) for m in after]
    for job, start, end in items:
        a.enqueue(job, start, end)
    t0 = time.monotonic()
    claimed = b.claim_queued(LEASE, limit=5000, after=after)
    elapsed = time.monotonic() - t0
    jobs = {r.job for r in claimed}
    assert len(claimed) == 1000 and jobs == {f"feat{i}" for i in range(1000)}  # every model waits: feats pending
    for r in claimed[:200]:
        b.finish_run(r.id, status="succeeded")
    done = {r.job for r in claimed[:200]}
    ready = {m for m, up in after.items() if up in done}
    assert ready and {r.job for r in b.claim_queued(LEASE, limit=5000, after=after)} == ready
    assert elapsed < 30, f"one claim pass over 2,000 runs took {elapsed:.1f}s"
