"""SQLite online writer: Feast's row layout, staged one row per entity, upserted in SQL.

Layout (``feast.infra.online_stores.sqlite``): one table per feature view named
``compute_table_id(project, view)``, one row per entity × feature with
``entity_key, feature_name, value, value_text[, value_num], event_ts,
created_ts``.  Feast binds its naive-UTC datetimes through the ``datetime``
adapter it registers last, ``int(dt.timestamp())``, so the timestamp columns
hold whole epoch seconds; this writer stores the same integers.

Per chunk: ``executemany`` one *wide* row per entity (key, timestamps, every
feature's value/text) into a TEMP table — a twentieth of the statements of one
row per value, and outside the database's write lock, since a TEMP table is
private to the connection — then, in one ``BEGIN IMMEDIATE`` transaction, one
``INSERT ... SELECT`` crossing it with the feature names unpivots it inside
SQLite.  Entities arrive sorted by key and names are sorted, so the upsert
walks the primary-key B-tree in order.

Encoding happens before the write lock is taken, and skyfeast writers of one
database queue on a lock file beside it (``flock``), so parallel Dask workers
encode while one of them writes and hand the lock over without SQLite's
busy-wait sleeps.

Within one ``write`` call of several chunks, where this process writes alone
(outside a Dask worker: the in-process path; or a chained partition write, see
``ordered_writes``), two lanes take turns: while one lane's connection runs a
chunk's upsert (SQLite's own work, which releases the GIL), the other encodes
and stages the next chunk (Python's work, which needs it).  Each lane has its own
connection and TEMP stage; encodings run one chunk at a time and so do upserts,
in chunk order, so the keys arrive in the same ascending order as without lanes,
and a chunk that fails stops every chunk after it.  The first chunk is cut to a
quarter, since its encoding is the one nothing overlaps.

``ordered_writes``: SQLite takes one writer at a time, and rows inserted below
stored keys cost it about a third more than rows appended past them, so
``skyfeast materialize`` chains a view's partition writes in ascending key order
(:func:`skyfeast.featurestore.materialize.run_plans`).

The journal mode and ``synchronous`` are left as Feast and the user set them:
durability is unchanged.

Newest wins inside SQLite: ``ON CONFLICT DO UPDATE ... WHERE excluded.event_ts
>= stored event_ts``.  Because Feast's column only has whole seconds, two events
within the same second count as equal, and the later write wins.  When no stored row's key lies within the chunk's key
range (asked with one index seek inside the chunk's ``BEGIN IMMEDIATE``, so no
writer can add one meanwhile), there is nothing to resolve and the rows go in by
a plain ``INSERT``, which spares SQLite the conflict clause's work per row (as
the PostgreSQL writer COPYs such chunks straight into Feast's table).  A cold
load is all fresh ranges: range partitioning gives each chunk a slice of the key
order that no other chunk shares.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's busy handler alone
    fcntl = None

import numpy as np

from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers._columns import to_list
from skyfeast.featurestore.writers._encode import sqlite_seconds
from skyfeast.featurestore.writers.base import Batch, EncodingWriter, StoreNotReadyError

log = logging.getLogger(__name__)

_STAGE = "skyfeast_stage"
# Features per staging pass: 3 + 3 * 200 columns and bound variables stay far
# below SQLite's defaults (2000 columns, 32766 variables).
_GROUP = 200


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pick(prefix: str, width: int, lo: int = 0, hi: int | None = None) -> str:
    """``s.{prefix}{f.i}``: the stage column of the current feature, as a balanced tree of ``CASE``s.
    SQLite tests a flat ``CASE f.i WHEN 0 ... WHEN width-1`` branch by branch, half the width per row
    on average; the tree takes log2(width) tests (24 features: 5 against 12), which cut a 100k-entity
    upsert by about a tenth (docs/benchmarks.md)."""
    hi = width if hi is None else hi
    if hi - lo == 1:
        return f"s.{prefix}{lo}"
    mid = (lo + hi) // 2
    return f"CASE WHEN f.i < {mid} THEN {_pick(prefix, width, lo, mid)} ELSE {_pick(prefix, width, mid, hi)} END"


class SqliteWriter(EncodingWriter):
    """One connection per writer; one ``BEGIN IMMEDIATE`` transaction per chunk."""

    key_ordered = True
    ordered_writes = True

    def __init__(self, target: WriteTarget, *, chunk_rows: int = 20_000, busy_timeout_s: float = 30.0,
                 serialize: bool = True, lanes: bool | None = None):
        super().__init__(target, chunk_rows=chunk_rows)
        self.busy_timeout_s = busy_timeout_s
        self.serialize = serialize  # queue on a lock file beside the database (see _write_lock)
        # stage the next chunk while the previous one is upserted (module docstring); None: only
        # outside a Dask worker (see _lanes)
        self.lanes = lanes
        self._lock_fd: int | None = None
        self._conns: list[sqlite3.Connection | None] = [None, None]  # one per lane
        self._with_num = False
        self.inserted = 0  # statements that took the plain INSERT (a fresh key range)...
        self.upserted = 0  # ...and the newest-wins upsert

    @property
    def db_path(self) -> str:
        cfg = self.target.repo_config
        path = Path(cfg.online_store.path)
        if cfg.repo_path and not path.is_absolute():
            return str(Path(cfg.repo_path) / path)
        return str(path)

    @property
    def table_name(self) -> str:
        from feast.infra.online_stores.helpers import compute_table_id

        cfg = self.target.repo_config
        return compute_table_id(cfg.project, self.target.feature_view, cfg.registry.enable_online_feature_view_versioning)

    def _connect(self, lane: int = 0) -> sqlite3.Connection:
        if self._conns[lane] is not None:
            return self._conns[lane]
        conn = sqlite3.connect(self.db_path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        try:
            cols = {row[1] for row in conn.execute(f"PRAGMA table_info({_quote(self.table_name)})")}
            if not cols:
                raise StoreNotReadyError(
                    f"SQLite table {self.table_name!r} does not exist in {self.db_path}; run `feast apply`"
                )
            # Feast writes value_num only when the store asks for it and the column exists.
            wants_num = bool(getattr(self.target.repo_config.online_store, "enable_openai_compatible_store", False))
            self._with_num = wants_num and "value_num" in cols
            # Connection-local: the stage and the sort stay in memory, the B-tree pages in cache.
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")
            columns = ["entity_key BLOB", "event_ts", "created_ts"]
            for j in range(min(len(self.target.features), _GROUP)):
                columns += [f"v{j} BLOB", f"t{j} TEXT"] + ([f"n{j} REAL"] if self._with_num else [])
            conn.execute(f"DROP TABLE IF EXISTS temp.{_STAGE}")
            conn.execute(f"CREATE TEMP TABLE {_STAGE} ({', '.join(columns)})")
        except BaseException:
            conn.close()
            raise
        self._conns[lane] = conn
        return conn

    def _stage_sql(self, width: int) -> str:
        cols = ["entity_key", "event_ts", "created_ts"]
        for j in range(width):
            cols += [f"v{j}", f"t{j}"] + ([f"n{j}"] if self._with_num else [])
        return f"INSERT INTO {_STAGE} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    def _upsert_sql(self, width: int, upsert: bool = True) -> str:
        """The stage crossed with the feature names into Feast's table; with ``upsert``, newest wins
        over stored rows (``ON CONFLICT``), else a plain ``INSERT`` for a chunk whose key range holds
        no stored row (:meth:`_fresh`), which spares SQLite the conflict clause's work per row."""
        t = _quote(self.table_name)
        target_cols = ["value", "value_text", *(["value_num"] if self._with_num else []), "event_ts", "created_ts"]
        picks = [_pick("v", width), _pick("t", width), *([_pick("n", width)] if self._with_num else []),
                 "s.event_ts", "s.created_ts"]
        names = ", ".join(f"({j}, ?)" for j in range(width))
        updates = ", ".join(f"{c} = excluded.{c}" for c in target_cols)
        # CROSS JOIN fixes the loop order (stage outer, names inner): rows come out in key order.
        sql = (
            f"WITH f(i, name) AS (VALUES {names}) "
            f"INSERT INTO {t} (entity_key, feature_name, {', '.join(target_cols)}) "
            f"SELECT s.entity_key, f.name, {', '.join(picks)} FROM {_STAGE} AS s CROSS JOIN f WHERE true"
        )
        if not upsert:
            return sql
        return (
            f"{sql} ON CONFLICT(entity_key, feature_name) DO UPDATE SET {updates} "
            f"WHERE {t}.event_ts IS NULL OR excluded.event_ts >= {t}.event_ts"
        )

    def _fresh(self, conn: sqlite3.Connection, lo: bytes, hi: bytes) -> bool:
        """Whether no stored row's key lies in ``[lo, hi]``, the chunk's key range: one index seek.
        Asked inside the chunk's ``BEGIN IMMEDIATE``, so no writer can add such a row before the insert."""
        row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {_quote(self.table_name)} "
                           "WHERE entity_key BETWEEN ? AND ?)", (lo, hi)).fetchone()
        return not row[0]

    def _write_chunks(self, chunks: list[Batch]) -> None:
        if len(chunks) > 1 and self._lanes():
            # a short first chunk: its encoding is the only one nothing overlaps
            lead = max(1, len(chunks[0]) // 4)
            if len(chunks[0]) > lead:
                chunks = [chunks[0].slice(0, lead), chunks[0].slice(lead, len(chunks[0])), *chunks[1:]]
            self._write_in_lanes(chunks)
        else:
            super()._write_chunks(chunks)

    def _lanes(self) -> bool:
        """Whether this writer uses two lanes. By default only where this process writes alone
        (``skyfeast materialize``'s in-process path): on a Dask worker, other workers' tasks keep
        the cores busy and queue on the same write lock, and a second lane per worker only added
        contention (a 200k-entity load on two workers took 7.9 and 9.7 s with lanes, 6.9 and
        8.7 s without: docs/benchmarks.md).  A caller that writes alone (:attr:`alone`: a chained
        partition write, while no other partition of the view writes) gets lanes there too."""
        if self.lanes is not None:
            return self.lanes
        if self.alone:
            return True
        try:
            from distributed import get_worker

            get_worker()
            return False
        except (ImportError, ValueError):  # not inside a Dask task
            return True

    def _write_chunk(self, chunk: Batch) -> None:
        conn = self._connect()
        groups = self._encode(chunk)
        self._stage(conn, groups)
        self._upsert(conn, groups)

    def _write_in_lanes(self, chunks: list[Batch]) -> None:
        """Chunk ``k`` on lane ``k % 2``: a lane waits until chunk ``k - 1`` is staged, encodes and
        stages chunk ``k``, waits until chunk ``k - 1`` is upserted, then upserts it; the first error
        stops both lanes and is raised here.  Encoding and staging (Python's work, under the GIL)
        thus run one chunk at a time, beside the other lane's upsert: two lanes encoding at once
        would only share the GIL and delay the first upsert."""
        cond = threading.Condition()
        state = {"staged": 0, "next": 0, "error": None}
        # the other lane's turn comes once its chunk is upserted: a statement waits at most
        # busy_timeout_s for the database lock, so this only bounds a hung store
        patience = max(600.0, 4 * self.busy_timeout_s)

        def fail(exc: BaseException) -> None:
            with cond:
                if state["error"] is None:
                    state["error"] = exc
                cond.notify_all()

        def wait(key: str, k: int, what: str) -> bool:
            """Until ``state[key]`` reaches ``k`` (False: another lane failed)."""
            with cond:
                if not cond.wait_for(lambda: state[key] >= k or state["error"] is not None, patience):
                    raise TimeoutError(f"SQLite writer: chunk {k} waited {patience:.0f} s for chunk "
                                       f"{k - 1}'s {what} into {self.db_path}")
                return state["error"] is None

        def done(key: str, k: int) -> None:
            with cond:
                state[key] = k + 1
                cond.notify_all()

        def lane(index: int) -> None:
            conn = None
            try:
                conn = self._connect(index)
                for k in range(index, len(chunks), 2):
                    if not wait("staged", k, "staging"):
                        return
                    groups = self._encode(chunks[k])
                    self._stage(conn, groups)
                    done("staged", k)
                    if not wait("next", k, "upsert"):
                        return
                    self._upsert(conn, groups, clear=False)
                    done("next", k)
                    self._clear_stage(conn)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                fail(exc)
            finally:
                if conn is not None:
                    self._clear_stage(conn)

        other = threading.Thread(target=lane, args=(1,), name="skyfeast-sqlite-lane", daemon=True)
        other.start()
        lane(0)
        other.join()
        if state["error"] is not None:
            raise state["error"]

    def _encode(self, chunk: Batch) -> list[tuple[int, list[str], list[tuple]]]:
        """The chunk's staging rows, ``_GROUP`` features at a time: ``(width, names, rows)``."""
        keys = to_list(chunk.entity_keys)
        event = sqlite_seconds(chunk.event_us, np.ones(len(chunk), dtype=bool))
        if chunk.created_us is None:
            created = [None] * len(chunk)
        else:
            created = sqlite_seconds(chunk.created_us, chunk.created_present)
        features = sorted(chunk.features, key=lambda f: f.name)
        groups = []
        for start in range(0, len(features), _GROUP):
            group = features[start : start + _GROUP]
            columns = [keys, event, created]
            for feature in group:
                columns += [to_list(feature.proto_bytes), feature.sql_text]
                if self._with_num:
                    columns.append(feature.sql_num)
            groups.append((len(group), [f.name for f in group], list(zip(*columns))))
        return groups

    def _stage(self, conn: sqlite3.Connection, groups) -> None:
        """The first group into the connection's TEMP stage: no lock on the database, so it runs
        while another writer (or the other lane) writes."""
        width, _, rows = groups[0]
        try:
            conn.execute("BEGIN")
            conn.executemany(self._stage_sql(width), rows)
            conn.execute("COMMIT")
        except BaseException:
            self._clear_stage(conn)
            raise

    def _upsert(self, conn: sqlite3.Connection, groups, *, clear: bool = True) -> None:
        """The staged chunk into Feast's table in one ``BEGIN IMMEDIATE`` transaction (later groups of
        a view wider than ``_GROUP`` features are staged inside it); the stage is emptied after.
        A chunk whose key range holds no stored row is inserted without the conflict clause; should
        its rows still collide (keys repeated within the chunk), that statement is undone and the
        newest-wins upsert runs instead.  ``clear=False`` leaves emptying the stage to the caller
        (the lanes empty it after handing the turn on)."""
        rows = groups[0][2]
        # the chunk's key range, before the lock (Python's work)
        lo, hi = (min(r[0] for r in rows), max(r[0] for r in rows)) if rows else (None, None)
        try:
            with self._write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    fresh = lo is not None and self._fresh(conn, lo, hi)
                    for index, (width, names, rows) in enumerate(groups):
                        if index:  # more than _GROUP features: the next group, inside the lock
                            conn.execute(f"DELETE FROM {_STAGE}")
                            conn.executemany(self._stage_sql(width), rows)
                        if fresh:
                            try:
                                conn.execute(self._upsert_sql(width, upsert=False), names)
                                self.inserted += 1
                                continue
                            except sqlite3.IntegrityError:  # SQLite undid that statement alone
                                fresh = False
                        conn.execute(self._upsert_sql(width), names)
                        self.upserted += 1
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        finally:
            if clear:
                self._clear_stage(conn)

    @staticmethod
    def _clear_stage(conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):  # keep the original error
            if conn.in_transaction:  # the stage's own transaction failed
                conn.execute("ROLLBACK")
            conn.execute(f"DELETE FROM {_STAGE}")

    @contextlib.contextmanager
    def _write_lock(self):
        """Queue behind other skyfeast writers of this database file on a lock file.

        SQLite's busy handler polls with sleeps of up to 100 ms, so writers that
        contend for the one write lock lose that much per handover; ``flock``
        wakes the next writer as soon as the previous one commits.  Feast's own
        writers and readers ignore this file and still meet SQLite's locking
        (``busy_timeout_s``), so it is an optimisation, never a requirement: a
        writer that waits ``busy_timeout_s`` for the lock file goes on without it.
        """
        if fcntl is None or not self.serialize:
            yield
            return
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self.db_path + ".skyfeast-lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # read-only directory: SQLite's own locking still applies
                self.serialize = False
                yield
                return
        if not _flock_within(self._lock_fd, self.busy_timeout_s):
            # held for busy_timeout_s by a writer that is stopped or hung: go on without the queue,
            # for the rest of this writer's life (not a wait per chunk); SQLite's own lock and busy
            # timeout decide, as they do for Feast's writers
            log.warning("%s.skyfeast-lock held for %.0f s by another writer: writing without it",
                        self.db_path, self.busy_timeout_s)
            self.serialize = False
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for lane, conn in enumerate(self._conns):
            if conn is not None:
                conn.close()
                self._conns[lane] = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _flock_within(fd: int, seconds: float) -> bool:
    """Take ``fd``'s exclusive ``flock`` within ``seconds`` (False: not taken). A blocking ``flock``
    has no timeout, and a stopped or hung holder would keep its waiters for good; this polls, with
    pauses of at most 2 ms, so a handover still takes milliseconds, not SQLite's 100 ms sleeps."""
    end, pause = time.monotonic() + seconds, 0.0002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.002)
