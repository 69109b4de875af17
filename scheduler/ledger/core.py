"""The run ledger: one row per (job, window), with attempts, chunks and leases.

SQLAlchemy 2 Core over SQLite (default) or PostgreSQL (for HA). The unique
key ``(job, window_start, window_end)`` is the run's idempotency key: a
window is claimed by one runner at a time and, once succeeded, never again.

Run states: ``queued`` → ``running`` → ``succeeded | failed | cancelled``.
A ``running`` run carries an owner and a lease; a run whose lease expired
(its process died) can be re-claimed and resumed from its recorded chunks.

Leadership: :meth:`Ledger.acquire_leader` takes or renews the leader lease
and returns its fencing token. From then on every write of this ``Ledger``
first checks, in the same transaction, that the token is still current, and
raises :class:`Fenced` otherwise — a deposed leader cannot commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError

from skyfeast.adapters.failures import server_absent
from skyfeast.adapters.waiting import waiting
from skyfeast.scheduler.errors import UserError
from skyfeast.scheduler.ledger.actions import ActionBook
from skyfeast.scheduler.ledger.copies import CopyBook
from skyfeast.scheduler.ledger.drills import DrillBook
from skyfeast.scheduler.ledger.probes import ProbeBook
from skyfeast.scheduler.ledger.run_models import RunModelBook
from skyfeast.scheduler.ledger.schema import (
    SCHEMA_VERSION,
    SchemaTooNew,
    UTCDateTime,
    attempts_t,
    chunks_t,
    cordons_t,
    job_state_t,
    leader_t,
    meta_t,
    migrate,
    run_models_t,
    runs_t,
)

UTC = timezone.utc
LEADER = "daemon"
CONNECT_TIMEOUT = 3.0  # seconds (daemon.ledger_connect_timeout); a ?connect_timeout= in the URL overrides it
STATEMENT_TIMEOUT = 30.0  # seconds (daemon.ledger_statement_timeout); SQLite: the busy timeout
# "interrupted": started, then given back at a clean shutdown; it keeps its chunks and the
# next claimer resumes it (unlike "queued", which starts afresh)
# upstream_failed: a run whose upstream run of the same window failed; it never started (no attempt
# spent) and goes back to queued when that upstream succeeds (requeue_upstream_failed)
RUN_STATES = ("queued", "running", "interrupted", "succeeded", "partial", "failed", "cancelled", "upstream_failed")
# a run whose rows are readers' to read: every model of it written (succeeded), or only some of a group's (partial)
DONE = ("succeeded", "partial")
FAILURE_CLASSES = ("user_code", "data", "config", "infrastructure", "timeout", "cancelled")
__all__ = ["Ledger", "LedgerError", "Fenced", "RunRow", "SCHEMA_VERSION", "UTCDateTime", "open_ledger"]


PENDING = ("queued", "running", "interrupted")


class LedgerError(UserError):
    """The ledger cannot be opened or belongs to an incompatible version."""


class LedgerUnreachable(LedgerError):
    """The ledger's server refused the connection or did not answer in time: not the config's fault,
    and it may answer on the next start (exit status 1, so a supervisor restarts a daemon; exit 2,
    bad config, keeps it down)."""

    exit_code = 1
    failure_class = "infrastructure"
    http_status = 503



class Fenced(Exception):
    """This process's leader token is stale: a newer leader exists; the write was rolled back."""


@dataclass(frozen=True)
class RunRow:
    id: int
    job: str
    window_start: datetime
    window_end: datetime
    status: str
    trigger: str
    provider: str | None
    owner: str | None
    attempts: int
    rows_written: int | None
    partitions: int | None
    join_way: str | None  # how a model job's run reads its upstream jobs (broadcast | shuffle), fixed at its first attempt
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    failure_class: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


def _now() -> datetime:
    return datetime.now(UTC)


def _row(r: Any) -> RunRow:
    m = r._mapping
    return RunRow(**{f: m[f] for f in RunRow.__dataclass_fields__})


class Ledger(CopyBook, ProbeBook, ActionBook, DrillBook, RunModelBook):
    """Thread-safe: one engine, short transactions. ``owner`` names this process in leases."""

    def __init__(self, url: str, *, owner: str | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 statement_timeout: float = STATEMENT_TIMEOUT):
        """``connect_timeout``: seconds to connect to a server (PostgreSQL; libpq's floor is 2).
        ``statement_timeout``: seconds a statement may run before the server cancels it (PostgreSQL),
        or a write waits for SQLite's lock. Raises :class:`LedgerError`, naming the URL (password
        masked) and the cause, when the ledger cannot be opened."""
        self.url = url
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.token: int | None = None  # fencing token while leader
        self.deposed = False  # lost the lease without releasing it: every later write is refused
        self._local = threading.local()
        with _opening(url):
            if url.startswith("sqlite:"):
                path = url.split("sqlite:///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine = sa.create_engine(url, connect_args={"timeout": statement_timeout})
                sa.event.listen(self.engine, "connect", _sqlite_connect)
                sa.event.listen(self.engine, "begin", _sqlite_begin)
            else:
                self.engine = _server_engine(url, connect_timeout, statement_timeout,
                                             pool_pre_ping=True, pool_size=10, max_overflow=20)
            self.is_pg = self.engine.dialect.name == "postgresql"
            if not url.startswith("sqlite:"):
                # a server that completes the login and then never answers would hang the open below for
                # good (its statement_timeout is the server's to enforce): it must answer first, within
                # a deadline; the connection goes back to the pool for the open to use
                _Reach(self.engine, url, connect_timeout, statement_timeout).wait()
            with waiting(f"the ledger at {_safe(url)}", statement_timeout), self.engine.begin() as conn:
                if self.is_pg:  # serialise concurrent first starts
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7707001)"))
                migrate(conn)

    def close(self) -> None:
        self.engine.dispose()

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one())

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; checks the fencing token first when this ledger is leader."""
        if self.deposed:
            raise Fenced(f"this process lost the leader lease (token {self.token}); write refused")
        with self.engine.begin() as conn:
            if self.token is not None:
                q = sa.select(leader_t.c.token, leader_t.c.holder).where(leader_t.c.name == LEADER)
                if self.is_pg:
                    q = q.with_for_update(read=True)  # no takeover can commit before this write does
                row = conn.execute(q).first()
                if row is None or row.token != self.token or row.holder != self.owner:
                    raise Fenced(f"fencing token {self.token} is stale (current: {row.token if row else None})")
            yield conn

    # ------------------------------------------------------------------ leadership
    def acquire_leader(self, holder: str | None, ttl: timedelta) -> int | None:
        """Take the leader lease if free or expired, or renew our own. Returns the fencing token or None.

        The token increases on every change of holder; renewals keep it.
        """
        holder = holder or self.owner
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(leader_t).where(leader_t.c.name == LEADER)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(leader_t.insert().values(name=LEADER, holder=holder, token=1, lease_until=now + ttl))
                except IntegrityError:
                    return self._lost()
                token = 1
            elif self.deposed:
                return None
            elif row.holder == holder and (row.token == self.token or self.token is None):
                token = row.token
                res = conn.execute(leader_t.update().where(leader_t.c.name == LEADER, leader_t.c.token == row.token,
                                                           leader_t.c.holder == holder).values(lease_until=now + ttl))
                if res.rowcount != 1:
                    return self._lost()
            elif row.lease_until < now:
                token = row.token + 1
                res = conn.execute(leader_t.update().where(leader_t.c.name == LEADER, leader_t.c.token == row.token)
                                   .values(holder=holder, token=token, lease_until=now + ttl))
                if res.rowcount != 1:
                    return self._lost()
            else:
                return self._lost()
        self.token = token
        return token

    def _lost(self) -> None:
        if self.token is not None:
            self.deposed = True  # we were leader: keep fencing ourselves off
        return None

    def release_leader(self, holder: str | None = None) -> None:
        holder = holder or self.owner
        with self.engine.begin() as conn:
            conn.execute(leader_t.update().where(leader_t.c.name == LEADER, leader_t.c.holder == holder,
                                                 leader_t.c.token == self.token)
                         .values(lease_until=datetime(1970, 1, 1, tzinfo=UTC)))
        self.token = None
        self.deposed = False

    def leader(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(leader_t).where(leader_t.c.name == LEADER)).first()
        return None if r is None else {"holder": r.holder, "token": r.token, "lease_until": r.lease_until.isoformat()}

    # ------------------------------------------------------------------ claims
    def claim(self, job: str, start: datetime, end: datetime, *, trigger: str, lease: timedelta,
              force: bool = False) -> tuple[int | None, str]:
        """Take the run for (job, window): ``(run_id, "claimed")`` or ``(None, current_status)``.

        Queued, failed and cancelled runs, and running ones whose lease expired,
        are re-claimed. ``force`` also re-claims a succeeded window.
        """
        now = _now()
        with self._write() as conn:
            try:
                with conn.begin_nested():
                    rid = conn.execute(runs_t.insert().values(
                        job=job, window_start=start, window_end=end, status="running", trigger=trigger, owner=self.owner,
                        lease_until=now + lease, created_at=now, started_at=now, attempts=0,
                    )).inserted_primary_key[0]
                return int(rid), "claimed"
            except IntegrityError:
                pass
            row = conn.execute(sa.select(runs_t.c.id, runs_t.c.status, runs_t.c.lease_until).where(
                runs_t.c.job == job, runs_t.c.window_start == start, runs_t.c.window_end == end)).one()
            ok = row.status in ("queued", "failed", "cancelled", "interrupted", "upstream_failed") or (
                force and row.status in DONE) or (
                row.status == "running" and row.lease_until is not None and row.lease_until < now)
            if not ok:
                return None, row.status
            resume = row.status in ("running", "interrupted")
            if not self._take(conn, row.id, row.status, now + lease, trigger=trigger, fresh=not resume):
                # lost a race: another claimer changed the row since we read it; report what it is now
                return None, conn.execute(sa.select(runs_t.c.status).where(runs_t.c.id == row.id)).scalar_one()
            return int(row.id), "claimed"

    def _take(self, conn: sa.Connection, run_id: int, status: str, lease_until: datetime, *,
              trigger: str | None = None, fresh: bool) -> bool:
        """Conditionally move a run to running/owned-by-us. ``fresh`` restarts it (chunks dropped)."""
        values: dict[str, Any] = dict(status="running", owner=self.owner, lease_until=lease_until, ended_at=None,
                                      failure_class=None, error=None)
        if trigger:
            values["trigger"] = trigger
        if fresh:  # a resumed run keeps an operator's pending cancel request
            values.update(started_at=_now(), partitions=None, key_ranges=None, join_way=None, cancel_requested=False)
        q = runs_t.update().where(runs_t.c.id == run_id, runs_t.c.status == status)
        if status == "running":
            q = q.where(runs_t.c.lease_until < _now())
        if conn.execute(q.values(**values)).rowcount != 1:
            return False
        # attempts the previous owner never closed: it died (``lost``) or was stopped (``interrupted``)
        conn.execute(attempts_t.update().where(attempts_t.c.run_id == run_id, attempts_t.c.ended_at.is_(None)).values(
            ended_at=_now(), outcome="lost" if status == "running" else "interrupted",
            error="its process stopped heartbeating" if status == "running" else "its process shut down"))
        if fresh:  # a fresh run also resolves its models' versions again
            conn.execute(chunks_t.delete().where(chunks_t.c.run_id == run_id))
            conn.execute(run_models_t.delete().where(run_models_t.c.run_id == run_id))
        return True

    def claim_many(self, items: list[tuple[str, datetime, datetime]], *, trigger: str,
                   lease: timedelta) -> list[tuple[int, str, datetime, datetime]]:
        """Insert runs for new windows in one transaction; windows that already have a run are skipped."""
        if not items:
            return []
        now = _now()
        rows = [dict(job=j, window_start=s, window_end=e, status="running", trigger=trigger, owner=self.owner,
                     lease_until=now + lease, created_at=now, started_at=now, attempts=0, cancel_requested=False)
                for j, s, e in items]
        dialect = sa.dialects.postgresql if self.is_pg else sa.dialects.sqlite
        stmt = dialect.insert(runs_t).on_conflict_do_nothing(
            index_elements=["job", "window_start", "window_end"]
        ).returning(runs_t.c.id, runs_t.c.job, runs_t.c.window_start, runs_t.c.window_end)
        out: list[tuple[int, str, datetime, datetime]] = []
        with self._write() as conn:
            for i in range(0, len(rows), 2000):
                out += [tuple(r) for r in conn.execute(stmt, rows[i:i + 2000])]
        return out

    def _claim_where(self, cond, lease: timedelta, limit: int, *, fresh: bool,
                     after: dict[str, str | list[str]] | None = None) -> list[RunRow]:
        """Take up to ``limit`` runs matching ``cond``, oldest window first, skipping runs whose
        upstream run (``after``: job → its upstream job, or list of them) of the same window is still pending.

        Candidates are read a page at a time and the upstream check is one query per page,
        so the SQL stays the same size however many jobs have upstreams (one clause per job
        outgrew SQLite's expression depth at a few thousand jobs)."""
        now = _now()
        after = after or {}
        out: list[int] = []
        page = max(limit, 100)
        with self._write() as conn:
            last: tuple[datetime, int] | None = None
            while len(out) < limit:
                q = sa.select(runs_t.c.id, runs_t.c.status, runs_t.c.job, runs_t.c.window_start,
                              runs_t.c.window_end).where(cond)
                if last is not None:
                    q = q.where(sa.or_(runs_t.c.window_end > last[0],
                                       sa.and_(runs_t.c.window_end == last[0], runs_t.c.id > last[1])))
                q = q.order_by(runs_t.c.window_end, runs_t.c.id).limit(page)
                if self.is_pg:
                    q = q.with_for_update(skip_locked=True)
                cands = conn.execute(q).all()
                if not cands:
                    break
                last = (cands[-1].window_end, cands[-1].id)
                waiting = self._waiting(conn, [c for c in cands if c.job in after], after)
                for c in cands:
                    if len(out) >= limit:
                        break
                    if (c.job, c.window_start, c.window_end) in waiting:
                        continue
                    if self._take(conn, c.id, c.status, now + lease, fresh=fresh):
                        out.append(c.id)
                if len(cands) < page:
                    break
            rows = conn.execute(sa.select(runs_t).where(runs_t.c.id.in_(out))).all() if out else []
        return [_row(r) for r in rows]

    @staticmethod
    def _waiting(conn: sa.Connection, cands: list, after: dict[str, str | list[str]]) -> set[tuple[str, datetime, datetime]]:
        """Of ``cands`` (runs of jobs that have an upstream), those whose upstream run of the same
        window is queued, running or interrupted."""
        if not cands:
            return set()
        def upstreams(job: str) -> list[str]:
            ups = after[job]
            return [ups] if isinstance(ups, str) else list(ups)

        ends = {c.window_end for c in cands}
        ups = {u for c in cands for u in upstreams(c.job)}
        pending = {(r.job, r.window_start, r.window_end) for r in conn.execute(
            sa.select(runs_t.c.job, runs_t.c.window_start, runs_t.c.window_end).where(
                runs_t.c.status.in_(PENDING), runs_t.c.window_end.in_(ends), runs_t.c.job.in_(ups)))}
        return {(c.job, c.window_start, c.window_end) for c in cands
                if any((u, c.window_start, c.window_end) in pending for u in upstreams(c.job))}

    def claim_queued(self, lease: timedelta, limit: int = 100, *, after: dict[str, str | list[str]] | None = None) -> list[RunRow]:
        """Queued runs, started afresh. ``after`` maps a job to its upstream job: a run of such a
        job is left alone while the upstream run of its window is still queued, running or
        interrupted (it would only be handed back), so a waiting run is not re-claimed every poll."""
        return self._claim_where(sa.and_(runs_t.c.status == "queued", _production), lease, limit, fresh=True,
                                 after=after)

    def reclaim_expired(self, lease: timedelta, limit: int = 100, *,
                        after: dict[str, str | list[str]] | None = None) -> list[RunRow]:
        """Running runs whose owner stopped heartbeating, and runs interrupted by a clean
        shutdown: take them over, keeping their chunks. ``after`` as for :meth:`claim_queued`."""
        cond = sa.and_(sa.or_(sa.and_(runs_t.c.status == "running", runs_t.c.lease_until < _now()),
                              runs_t.c.status == "interrupted"), _production)
        return self._claim_where(cond, lease, limit, fresh=False, after=after)

    def release_runs(self, run_ids: list[int]) -> None:
        """Give up runs we claimed but will not execute: never-started ones go back to ``queued``,
        started ones become ``interrupted``: they keep their chunks and are claimable at once."""
        mine = sa.and_(runs_t.c.id.in_(run_ids), runs_t.c.owner == self.owner, runs_t.c.status == "running")
        with self._write() as conn:
            conn.execute(runs_t.update().where(mine, runs_t.c.attempts == 0)
                         .values(status="queued", owner=None, lease_until=None, started_at=None))
            conn.execute(runs_t.update().where(mine).values(status="interrupted", owner=None, lease_until=None))

    def enqueue(self, job: str, start: datetime, end: datetime, *, trigger: str = "manual") -> tuple[int, str]:
        """Ask a daemon to run (job, window). Returns (run_id, status) — "queued" or the existing state."""
        now = _now()
        with self._write() as conn:
            try:
                with conn.begin_nested():
                    rid = conn.execute(runs_t.insert().values(
                        job=job, window_start=start, window_end=end, status="queued", trigger=trigger,
                        created_at=now, attempts=0, cancel_requested=False)).inserted_primary_key[0]
                return int(rid), "queued"
            except IntegrityError:
                pass
            row = conn.execute(sa.select(runs_t.c.id, runs_t.c.status).where(
                runs_t.c.job == job, runs_t.c.window_start == start, runs_t.c.window_end == end)).one()
            if row.status in ("failed", "cancelled", "upstream_failed"):
                conn.execute(runs_t.update().where(runs_t.c.id == row.id, runs_t.c.status == row.status)
                             .values(status="queued", trigger=trigger, owner=None, lease_until=None))
                return int(row.id), "queued"
            return int(row.id), row.status

    def request_cancel(self, run_id: int) -> str | None:
        """Cancel a queued run now, or ask the owner of a running one to cancel. Returns the resulting status."""
        with self._write() as conn:
            r = conn.execute(sa.select(runs_t.c.status).where(runs_t.c.id == run_id)).first()
            if r is None:
                return None
            if r.status in ("queued", "interrupted"):
                conn.execute(runs_t.update().where(runs_t.c.id == run_id, runs_t.c.status == r.status)
                             .values(status="cancelled", ended_at=_now(), failure_class="cancelled",
                                     error="cancelled by operator before it started" if r.status == "queued"
                                     else "cancelled by operator while interrupted"))
                return "cancelled"
            if r.status == "running":
                conn.execute(runs_t.update().where(runs_t.c.id == run_id).values(cancel_requested=True))
                return "cancelling"
            return r.status

    def heartbeat(self, run_ids: list[int], lease: timedelta) -> set[int]:
        """Extend our leases; return the runs we must stop (cancel requested, or no longer ours)."""
        with self._write() as conn:
            conn.execute(runs_t.update().where(runs_t.c.id.in_(run_ids), runs_t.c.owner == self.owner,
                                               runs_t.c.status == "running").values(lease_until=_now() + lease))
            rows = conn.execute(sa.select(runs_t.c.id, runs_t.c.owner, runs_t.c.status, runs_t.c.cancel_requested)
                                .where(runs_t.c.id.in_(run_ids))).all()
        return {r.id for r in rows if r.cancel_requested or r.owner != self.owner or r.status != "running"}

    # ------------------------------------------------------------------ progress
    def start_attempt(self, run_id: int, provider: str) -> int:
        with self._write() as conn:
            n = conn.execute(sa.select(sa.func.count()).where(attempts_t.c.run_id == run_id)).scalar_one() + 1
            aid = conn.execute(attempts_t.insert().values(run_id=run_id, number=n, provider=provider,
                                                          started_at=_now())).inserted_primary_key[0]
            conn.execute(runs_t.update().where(runs_t.c.id == run_id).values(attempts=n, provider=provider))
        return int(aid)

    def finish_attempt(self, attempt_id: int, *, outcome: str, failure_class: str | None = None,
                       error: str | None = None, rows: int | None = None) -> None:
        with self._write() as conn:
            conn.execute(attempts_t.update().where(attempts_t.c.id == attempt_id).values(
                ended_at=_now(), outcome=outcome, failure_class=failure_class, error=error, rows_written=rows))

    def set_partitions(self, run_id: int, n: int, key_ranges: str | None = None, join: str | None = None) -> None:
        """Fix a run's chunking once: its chunk count, its key-range split as JSON (if any), and a
        composed model job's ``join`` (``broadcast`` or ``shuffle``, if any)."""
        with self._write() as conn:
            conn.execute(runs_t.update().where(runs_t.c.id == run_id, runs_t.c.partitions.is_(None))
                         .values(partitions=n, key_ranges=key_ranges, join_way=join))

    def key_ranges(self, run_id: int) -> str | None:
        """The JSON key-range split :meth:`set_partitions` stored, or None (hash chunks, or not fixed yet)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs_t.c.key_ranges).where(runs_t.c.id == run_id)).scalar_one_or_none()

    def join_way(self, run_id: int) -> str | None:
        """The join :meth:`set_partitions` stored for a composed model job's run, or None."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(runs_t.c.join_way).where(runs_t.c.id == run_id)).scalar_one_or_none()

    def record_chunk(self, run_id: int, chunk: int, stats: dict, attempt_id: int | None = None) -> None:
        with self._write() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(chunks_t.insert().values(
                        run_id=run_id, chunk=chunk, attempt_id=attempt_id, rows_in=stats.get("rows_in", 0),
                        rows_out=stats.get("rows_out", 0), rows_online=stats.get("rows_online", 0),
                        file=stats.get("file"), done_at=_now()))
            except IntegrityError:
                pass  # already recorded (a resumed attempt rewrote it): idempotent

    def chunks(self, run_id: int) -> dict[int, dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(chunks_t).where(chunks_t.c.run_id == run_id)).all()
        return {r.chunk: {"rows_in": r.rows_in, "rows_out": r.rows_out, "rows_online": r.rows_online,
                          "file": r.file, "attempt_id": r.attempt_id} for r in rows}

    def finish_success(self, run_id: int, attempt_id: int, rows: int, *, copy_to_primary: bool = False,
                       published: dict[int, dict] | None = None, status: str = "succeeded",
                       error: str | None = None) -> bool:
        """Mark the attempt and the run succeeded in one transaction, so a crash can never leave
        a succeeded attempt under a run that is still running. False if the run was taken over.
        ``copy_to_primary`` queues its offline parts for the reconciler in the same transaction;
        ``published`` (chunk → ``{"file", "rows_online"}``) replaces each chunk's staged part
        with the part it was published to.  ``status`` ``partial`` (with ``error`` naming the models
        that failed) ends a model-group run of which only some models were written."""
        now = _now()
        if status not in DONE:
            raise ValueError(f"finish_success: status {status!r} is not one of {DONE}")
        with self._write() as conn:
            res = conn.execute(runs_t.update().where(runs_t.c.id == run_id, runs_t.c.owner == self.owner).values(
                status=status, ended_at=now, rows_written=rows, failure_class=None, error=error,
                lease_until=None, cancel_requested=False))
            if res.rowcount != 1:
                return False
            conn.execute(attempts_t.update().where(attempts_t.c.id == attempt_id).values(
                ended_at=now, outcome="succeeded", rows_written=rows))
            for chunk, pub in (published or {}).items():
                conn.execute(chunks_t.update().where(chunks_t.c.run_id == run_id, chunks_t.c.chunk == chunk)
                             .values(file=pub["file"], rows_online=pub["rows_online"]))
            if copy_to_primary:
                self.mark_copy_pending(conn, run_id)
        return True

    def requeue_upstream_failed(self, jobs: list[str], start: datetime, end: datetime) -> list[int]:
        """Runs of ``jobs`` for this window that were marked ``upstream_failed`` go back to ``queued``
        (their upstream has just succeeded), for a daemon to pick up. Returns their ids."""
        if not jobs:
            return []
        with self._write() as conn:
            ids = [r.id for r in conn.execute(sa.select(runs_t.c.id).where(
                runs_t.c.job.in_(jobs), runs_t.c.window_start == start, runs_t.c.window_end == end,
                runs_t.c.status == "upstream_failed"))]
            if ids:
                conn.execute(runs_t.update().where(runs_t.c.id.in_(ids), runs_t.c.status == "upstream_failed").values(
                    status="queued", owner=None, lease_until=None, started_at=None, ended_at=None, error=None))
        return ids

    def finish_run(self, run_id: int, *, status: str, rows: int | None = None,
                   failure_class: str | None = None, error: str | None = None) -> bool:
        """Record the end of a run we own. Returns False if another process took it over meanwhile."""
        assert status in RUN_STATES
        with self._write() as conn:
            res = conn.execute(runs_t.update().where(runs_t.c.id == run_id, runs_t.c.owner == self.owner).values(
                status=status, ended_at=_now(), rows_written=rows, failure_class=failure_class, error=error,
                lease_until=None, cancel_requested=False))
        return res.rowcount == 1

    # ------------------------------------------------------------------ job state
    def last_fires(self) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            return {r.job: r.last_fire for r in conn.execute(sa.select(job_state_t))}

    def set_last_fires(self, fires: dict[str, datetime]) -> None:
        if not fires:
            return
        dialect = sa.dialects.postgresql if self.is_pg else sa.dialects.sqlite
        stmt = dialect.insert(job_state_t)
        stmt = stmt.on_conflict_do_update(index_elements=["job"], set_={"last_fire": stmt.excluded.last_fire},
                                          where=job_state_t.c.last_fire < stmt.excluded.last_fire)
        with self._write() as conn:
            conn.execute(stmt, [{"job": j, "last_fire": f} for j, f in fires.items()])

    # ------------------------------------------------------------------ cordons
    def cordon(self, provider: str, *, reason: str | None, by: str | None = None) -> None:
        with self.engine.begin() as conn:  # an operator action: not fenced
            conn.execute(cordons_t.delete().where(cordons_t.c.provider == provider))
            conn.execute(cordons_t.insert().values(provider=provider, reason=reason, by=by or self.owner, at=_now()))

    def uncordon(self, provider: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(cordons_t.delete().where(cordons_t.c.provider == provider)).rowcount == 1

    def cordons(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r.provider: {"reason": r.reason, "by": r.by, "at": r.at.isoformat()}
                    for r in conn.execute(sa.select(cordons_t))}

    # ------------------------------------------------------------------ queries
    def get_run(self, run_id: int) -> RunRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(runs_t).where(runs_t.c.id == run_id)).first()
        return _row(r) if r else None

    def find_run(self, job: str, start: datetime, end: datetime) -> RunRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(runs_t).where(
                runs_t.c.job == job, runs_t.c.window_start == start, runs_t.c.window_end == end)).first()
        return _row(r) if r else None

    def runs(self, *, job: str | None = None, status: str | None = None, limit: int = 50) -> list[RunRow]:
        q = sa.select(runs_t).order_by(runs_t.c.window_end.desc(), runs_t.c.id.desc()).limit(limit)
        if job:
            q = q.where(runs_t.c.job == job)
        if status:
            q = q.where(runs_t.c.status == status)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        return self.attempts_of([run_id])[run_id]

    def attempts_of(self, run_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """run id → its attempts in order (an empty list for a run without), in one query."""
        out: dict[int, list[dict[str, Any]]] = {rid: [] for rid in run_ids}
        if not run_ids:
            return out
        q = (sa.select(attempts_t).where(attempts_t.c.run_id.in_(run_ids))
             .order_by(attempts_t.c.run_id, attempts_t.c.number))
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                out[r.run_id].append({k: (v.isoformat() if isinstance(v, datetime) else v)
                                      for k, v in r._mapping.items()})
        return out

    def last_success_by_provider(self) -> dict[str, datetime]:
        q = sa.select(runs_t.c.provider, sa.func.max(runs_t.c.ended_at, type_=UTCDateTime)).where(
            runs_t.c.status == "succeeded", _production).group_by(runs_t.c.provider)
        with self.engine.connect() as conn:
            return {p: t for p, t in conn.execute(q) if p}


# drills record their runs as job ``drill:JOB`` (skyfeast.scheduler.drills.records): a daemon never
# claims or resumes one, and they do not count as a provider's production successes
DRILL_JOB_PREFIX = "drill:"
_production = ~runs_t.c.job.startswith(DRILL_JOB_PREFIX, autoescape=True)


def _pg_options(url: str, statement_timeout: float) -> dict[str, str]:
    """libpq ``options`` adding ``statement_timeout`` to the URL's own (which win when they set it)."""
    own = sa.engine.make_url(url).query.get("options", "")
    own = " ".join(own) if isinstance(own, tuple) else own
    if "statement_timeout" in own:
        return {}
    return {"options": f"{own} -c statement_timeout={int(statement_timeout * 1000)}".strip()}


@contextmanager
def _opening(url: str) -> Iterator[None]:
    """Turns the ways opening ``url`` fails into one :class:`LedgerError` naming it (password masked)."""
    try:
        yield
    except SchemaTooNew as exc:
        raise LedgerError(f"ledger {_safe(url)} has {exc}; upgrade skyfeast instead of downgrading the ledger") from None
    except (ArgumentError, NoSuchModuleError) as exc:
        raise LedgerError(f"state: {_safe(url)!r} is not a usable SQLAlchemy URL: {exc}") from None
    except ImportError as exc:  # the dialect's driver is not installed
        extra = " (pip install 'skyfeast[postgres]')" if url.startswith("postgresql") else ""
        raise LedgerError(f"state: {_safe(url)}: driver {exc.name or exc} is not installed{extra}") from None
    except OperationalError as exc:
        server = not url.startswith("sqlite") and server_absent(str(exc.orig))  # not a refused login
        error = LedgerUnreachable if server else LedgerError
        raise error(f"state: cannot open ledger {_safe(url)}: {exc.orig}") from None
    except DatabaseError as exc:  # e.g. SQLite's "file is not a database": another file at the ledger's path
        hint = " (is it the ledger's file?)" if url.startswith("sqlite:") else ""
        raise LedgerError(f"state: cannot open ledger {_safe(url)}: {exc.orig}{hint}") from None


def _connect_seconds(url: str, connect_timeout: float) -> float:
    """The connect deadline the driver gets: the URL's own ``?connect_timeout=``, else ``connect_timeout``;
    at least 2 s either way (libpq's floor). The URL's 0 (libpq: wait for ever) counts as ``connect_timeout``
    here: the client's own deadline still ends the wait."""
    try:
        own = float(sa.engine.make_url(url).query["connect_timeout"])
    except (KeyError, ValueError, TypeError, ArgumentError):
        own = 0.0
    return max(2, round(own if own > 0 else connect_timeout))


def _hosts(url: str) -> int:
    """How many servers libpq may try in turn for ``url`` (``?host=a&host=b`` or ``host=a,b``), each with its
    own connect timeout."""
    try:
        host = sa.engine.make_url(url).query.get("host")
    except ArgumentError:
        return 1
    names = host if isinstance(host, tuple) else (host or "").split(",")
    return max(1, len([h for n in names for h in str(n).split(",") if h.strip()]))


def _server_engine(url: str, connect_timeout: float, statement_timeout: float, **kw: Any) -> sa.Engine:
    # a server that accepts and never answers must fail in seconds, naming itself, not in minutes
    args: dict[str, Any] = {} if "connect_timeout" in url else {"connect_timeout": max(2, round(connect_timeout))}
    if url.startswith("postgresql"):
        args.update(_pg_options(url, statement_timeout))
    return sa.create_engine(url, connect_args=args, **kw)


def _answer_seconds(connect_seconds: float, statement_timeout: float) -> float:
    """How long a server that has just accepted a login may take to answer its first statements
    (the driver's set-up queries, then ``SELECT 1``): as long as connecting may take, and no longer
    than the server itself would let them run (its ``statement_timeout``, and a second for its error
    to arrive). Those statements do no work: a server that has not answered them by then is as
    unreachable as one that never accepts the login, whatever ``ledger_statement_timeout`` allows
    the ledger's real statements (30 s by default)."""
    return min(connect_seconds, statement_timeout + 1)


class _Reach:
    """Connects with ``engine`` and has the server answer ``SELECT 1``, on a daemon thread (a socket
    read of a silent server cannot be interrupted), each step under its own deadline and announced
    with it past :data:`~skyfeast.adapters.waiting.NOTICE_AFTER`: connecting, the driver's connect
    timeout (the client gives up one second later, should the driver not); then the first answer,
    :func:`_answer_seconds` from the moment the login was accepted. :meth:`wait` waits for the end and
    raises :class:`LedgerError` when a deadline passed, or what reaching raised (a
    :class:`LedgerError` for the ways :func:`_opening` knows)."""

    def __init__(self, engine: sa.Engine, url: str, connect_timeout: float, statement_timeout: float, *,
                 dispose: bool = False):
        self.url, self.engine, self._dispose = url, engine, dispose
        self.connect_s = _connect_seconds(url, connect_timeout)
        self.answer_s = _answer_seconds(self.connect_s, statement_timeout)
        # libpq tries a URL's servers in turn, each under the connect timeout (what the notice announces); the
        # client's own deadline allows a second more, should the driver not give up
        self.driver_s = self.connect_s * _hosts(url)
        self.login_s = self.driver_s + 1
        self.what = f"the ledger at {_safe(url)}"
        self._lock = threading.Lock()
        self._notice: Any = None  # the current step's waiting()
        self._over = False  # given up on: the thread, should it ever wake, announces nothing more
        self._answer_by: float | None = None  # monotonic deadline of the first answer, once connected
        self._failed: list[BaseException] = []
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="skyfeast-reach-ledger", daemon=True)
        self._thread.start()

    def _step(self, what: str | None, seconds: float = 0) -> None:
        """Take the current step's notice down; start ``what``'s (None: none)."""
        with self._lock:
            if self._notice is not None:
                self._notice.__exit__(None, None, None)
                self._notice = None
            if what is not None and not self._over:
                self._notice = waiting(what, seconds)
                self._notice.__enter__()

    def _connected(self, *_: Any) -> None:  # the pool's "connect" event: the server accepted the login
        if threading.current_thread() is self._thread and self._answer_by is None:
            self._answer_by = time.monotonic() + self.answer_s
            self._step(f"{self.what} to answer", self.answer_s)

    def _run(self) -> None:
        sa.event.listen(self.engine, "connect", self._connected, insert=True)  # before the driver's set-up
        self._step(self.what, self.driver_s)
        try:
            with _opening(self.url), self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except BaseException as exc:  # noqa: BLE001  (raised by wait(), in the caller's thread)
            self._failed.append(exc)
        finally:
            self._step(None)
            with contextlib.suppress(Exception):
                sa.event.remove(self.engine, "connect", self._connected)
            if self._dispose:
                self.engine.dispose()

    def wait(self) -> None:
        while self._thread.is_alive():
            by = self._answer_by or self._t0 + self.login_s
            left = by - time.monotonic()
            if left <= 0:
                self._over = True
                self._step(None)
                if self._answer_by is None:
                    raise LedgerUnreachable(f"state: cannot open ledger {_safe(self.url)}: no connection within "
                                            f"{self.login_s:.0f} s (connect timeout {self.connect_s:.0f} s)")
                raise LedgerUnreachable(
                    f"state: the ledger at {_safe(self.url)} accepted the connection but did not answer within "
                    f"{self.answer_s:.0f} s (a server answers SELECT 1 at once; "
                    f"daemon.ledger_connect_timeout bounds the wait)")
            self._thread.join(min(left, 0.1))  # the first answer's deadline starts once connected
        if self._failed:
            raise self._failed[0]


def reach_ledger(cfg: Any) -> Callable[[], None]:
    """Start reaching the ledger's server of a :class:`~skyfeast.scheduler.config.Config` in the
    background; returns a call that waits for it and raises :class:`LedgerError` if it could not.

    Only a connection and ``SELECT 1`` (:class:`_Reach`, with its deadlines): no table is read or
    written, so a command may still fail on its config afterwards and leave the ledger as it was.
    A command starts this before its slow config checks (Feast's repo, the jobs' imports), so that a
    server that never answers costs their time or the reach's deadlines, whichever is longer, not
    both. :func:`open_ledger` reaches the server under the same deadlines again. A SQLite ledger has
    no server: nothing to reach."""
    url, d = cfg.state_url, cfg.daemon
    if url.startswith("sqlite:"):
        return lambda: None
    connect_s, statement_s = d.ledger_connect_timeout.total_seconds(), d.ledger_statement_timeout.total_seconds()
    try:
        with _opening(url):
            engine = _server_engine(url, connect_s, statement_s, poolclass=sa.pool.NullPool)
    except LedgerError as exc:
        error = exc  # ``exc`` itself is unbound when the except block ends

        def failed() -> None:
            raise error
        return failed
    except Exception as exc:  # noqa: BLE001  (the real open, which follows, reports it in its words)
        logging.getLogger(__name__).debug("reaching the ledger ahead failed: %s", exc)
        return lambda: None
    reach = _Reach(engine, url, connect_s, statement_s, dispose=True)

    def reached() -> None:
        try:
            reach.wait()
        except LedgerError:
            raise
        except Exception as exc:  # noqa: BLE001  (the real open, which follows, reports it in its words)
            logging.getLogger(__name__).debug("reaching the ledger ahead failed: %s", exc)
    return reached


def open_ledger(cfg: Any, **kw: Any) -> Ledger:
    """The ledger of a :class:`~skyfeast.scheduler.config.Config`, with its ``daemon`` timeouts."""
    d = cfg.daemon
    return Ledger(cfg.state_url, connect_timeout=d.ledger_connect_timeout.total_seconds(),
                  statement_timeout=d.ledger_statement_timeout.total_seconds(), **kw)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" hook issue BEGIN IMMEDIATE
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # each pooled connection keeps its own page cache (SQLite's default: 2 MiB); a daemon's run threads
    # hold up to 15, so 1 MiB each saves ~15 MB at 10,000 jobs for no measured loss of claim speed
    cur.execute("PRAGMA cache_size=-1024")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # take the write lock up front: a fencing check and the write it guards see the same database
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _safe(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<url>"
