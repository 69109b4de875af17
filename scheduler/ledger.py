"""The run ledger: one row per (job, window), with attempts.

SQLAlchemy 2 Core over SQLite (default) or PostgreSQL. The unique key
``(job, window_start, window_end)`` is the run's idempotency key: a window
can be claimed by one runner at a time and, once succeeded, never again.

Schema version lives in ``skyfeast_meta``; a ledger written by a newer
skyfeast is refused with a clear message instead of being touched.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from scheduler.errors import UserError

SCHEMA_VERSION = 1
UTC = timezone.utc

RUN_STATES = ("running", "succeeded", "failed", "cancelled")
FAILURE_CLASSES = ("user_code", "data", "infrastructure", "timeout", "cancelled")


class LedgerError(UserError):
    """The ledger cannot be opened or belongs to an incompatible version."""


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, returns aware UTC (SQLite has no time zones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()

meta_t = sa.Table(
    "skyfeast_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

runs_t = sa.Table(
    "skyfeast_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(128), nullable=False),
    sa.Column("window_start", UTCDateTime, nullable=False),
    sa.Column("window_end", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(64)),
    sa.Column("owner", sa.String(128)),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("rows_written", sa.BigInteger),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.UniqueConstraint("job", "window_start", "window_end", name="uq_run_window"),
)
sa.Index("ix_runs_job_end", runs_t.c.job, runs_t.c.window_end)

attempts_t = sa.Table(
    "skyfeast_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("skyfeast_runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("outcome", sa.String(16)),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("rows_written", sa.BigInteger),
)


@dataclass(frozen=True)
class RunRow:
    id: int
    job: str
    window_start: datetime
    window_end: datetime
    status: str
    trigger: str
    provider: str | None
    attempts: int
    rows_written: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    failure_class: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = v.isoformat()
        return d


def _now() -> datetime:
    return datetime.now(UTC)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Ledger:
    """Thread-safe (one engine, short transactions)."""

    def __init__(self, url: str):
        self.url = url
        try:
            if url.startswith("sqlite:///"):
                Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
                self.engine = sa.create_engine(url, connect_args={"timeout": 30})
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = sa.create_engine(url, pool_pre_ping=True)
            self._init_schema()
        except (ArgumentError, NoSuchModuleError) as exc:
            raise LedgerError(f"state: {url!r} is not a usable SQLAlchemy URL: {exc}") from None
        except OperationalError as exc:
            raise LedgerError(f"state: cannot open ledger {_safe(url)}: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema
    def _init_schema(self) -> None:
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            row = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).first()
            if row is None:
                try:
                    conn.execute(meta_t.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                except IntegrityError:
                    pass
                return
            found = int(row[0])
        if found > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {_safe(self.url)} has schema version {found}, newer than this skyfeast "
                f"understands ({SCHEMA_VERSION}); upgrade skyfeast instead of downgrading the ledger"
            )

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one())

    # ------------------------------------------------------------------ runs
    def claim(self, job: str, start: datetime, end: datetime, *, trigger: str, lease: timedelta, force: bool = False) -> tuple[int | None, str]:
        """Try to take the run for (job, window).

        Returns ``(run_id, "claimed")`` when the caller now owns it, else
        ``(None, reason)`` with reason ``"succeeded"`` or ``"running"``.
        A failed or cancelled run, or a running one whose lease expired, is
        re-claimed. ``force`` re-runs a succeeded window (idempotent writes).
        """
        now = _now()
        values = dict(
            job=job, window_start=start, window_end=end, status="running", trigger=trigger,
            owner=_owner(), lease_until=now + lease, created_at=now, started_at=now, attempts=0,
        )
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    rid = conn.execute(runs_t.insert().values(**values)).inserted_primary_key[0]
                return int(rid), "claimed"
            except IntegrityError:
                pass
            row = conn.execute(
                sa.select(runs_t.c.id, runs_t.c.status, runs_t.c.lease_until).where(
                    runs_t.c.job == job, runs_t.c.window_start == start, runs_t.c.window_end == end
                )
            ).one()
            claimable = row.status in ("failed", "cancelled") or (
                row.status == "running" and row.lease_until is not None and row.lease_until < now
            ) or (force and row.status == "succeeded")
            if not claimable:
                return None, row.status
            res = conn.execute(
                runs_t.update()
                .where(runs_t.c.id == row.id, runs_t.c.status == row.status, runs_t.c.lease_until == row.lease_until)
                .values(status="running", owner=_owner(), lease_until=now + lease, started_at=now, ended_at=None,
                        trigger=trigger, failure_class=None, error=None)
            )
            if res.rowcount != 1:
                return None, "running"
            return int(row.id), "claimed"

    def start_attempt(self, run_id: int, provider: str) -> int:
        with self.engine.begin() as conn:
            n = conn.execute(sa.select(sa.func.count()).where(attempts_t.c.run_id == run_id)).scalar_one() + 1
            aid = conn.execute(
                attempts_t.insert().values(run_id=run_id, number=n, provider=provider, started_at=_now())
            ).inserted_primary_key[0]
            conn.execute(runs_t.update().where(runs_t.c.id == run_id).values(attempts=n, provider=provider))
        return int(aid)

    def finish_attempt(self, attempt_id: int, *, outcome: str, failure_class: str | None = None,
                       error: str | None = None, rows: int | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                attempts_t.update().where(attempts_t.c.id == attempt_id).values(
                    ended_at=_now(), outcome=outcome, failure_class=failure_class, error=error, rows_written=rows
                )
            )

    def finish_run(self, run_id: int, *, status: str, rows: int | None = None,
                   failure_class: str | None = None, error: str | None = None) -> None:
        assert status in RUN_STATES
        with self.engine.begin() as conn:
            conn.execute(
                runs_t.update().where(runs_t.c.id == run_id).values(
                    status=status, ended_at=_now(), rows_written=rows, failure_class=failure_class,
                    error=error, lease_until=None,
                )
            )

    def extend_lease(self, run_id: int, lease: timedelta) -> None:
        with self.engine.begin() as conn:
            conn.execute(runs_t.update().where(runs_t.c.id == run_id, runs_t.c.status == "running")
                         .values(lease_until=_now() + lease))

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
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(attempts_t).where(attempts_t.c.run_id == run_id).order_by(attempts_t.c.number))
            return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r._mapping.items()} for r in rows]

    def last_success_by_provider(self) -> dict[str, datetime]:
        q = sa.select(runs_t.c.provider, sa.func.max(runs_t.c.ended_at, type_=UTCDateTime)).where(
            runs_t.c.status == "succeeded").group_by(runs_t.c.provider)
        with self.engine.connect() as conn:
            return {p: t for p, t in conn.execute(q) if p}


def _row(r: Any) -> RunRow:
    m = r._mapping
    return RunRow(**{f: m[f] for f in RunRow.__dataclass_fields__})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _safe(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<url>"
