"""PostgreSQL online writer: binary COPY into a temp table, one newest-wins upsert.

Layout (``feast.infra.online_stores.postgres_online_store.postgres``): one table
per feature view named ``compute_table_id(project, view)`` in the configured
schema, one row per entity × feature: ``entity_key BYTEA, feature_name TEXT,
value BYTEA, value_text TEXT[, value_num DOUBLE PRECISION], vector_value,
event_ts TIMESTAMPTZ, created_ts TIMESTAMPTZ``.  Feast fills ``value_num``
whenever that column exists, and sends naive-UTC datetimes as ``timestamp``
parameters, which PostgreSQL converts to ``timestamptz`` in the session time
zone.  The stage table therefore has ``timestamp`` columns, so the same
conversion happens here and the stored instants are identical.

Per chunk, in one transaction: ``COPY ... FROM STDIN (FORMAT BINARY)`` of a
buffer built by :mod:`._columns` (no per-row Python), then ``INSERT ... SELECT
... ORDER BY entity_key, feature_name ON CONFLICT (entity_key, feature_name) DO
UPDATE ... WHERE stored.event_ts IS NULL OR EXCLUDED.event_ts >= stored.event_ts``
(in primary-key order, which roughly halves the index work).

When none of the chunk's entities is stored yet (checked first, on the
``entity_key`` index, in the same transaction) there is nothing to resolve: the
rows are COPYed straight into Feast's table in primary-key order, the server's
bulk-load path (``bench/materialize.py`` prints its one-connection ceiling).
That needs the session time zone to be UTC, since Feast's ``timestamp``
parameters are converted in the session zone and binary ``timestamptz`` is UTC;
in any other zone the stage is used with a plain ``INSERT ... SELECT``.  A
concurrent writer that inserts one of those entities first makes the chunk fail
with a unique violation, and it is redone as the upsert.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import time

import numpy as np
import pyarrow as pa

from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._columns import to_list
from skyfeast.featurestore.writers.base import (
    FIRST_CONTACT_S,
    Batch,
    EncodingWriter,
    StoreNotReadyError,
    StoreUnreachableError,
    chunk_deadline,
    cut_off_after,
)

_STAGE = "skyfeast_online_stage"
_STAGE_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "value_num", "event_ts", "created_ts")
_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (entity_key BYTEA, feature_name TEXT, value BYTEA, "
    "value_text TEXT, value_num DOUBLE PRECISION, event_ts TIMESTAMP, created_ts TIMESTAMP) ON COMMIT DELETE ROWS"
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


def _field(data: pa.Array, present: np.ndarray | None = None) -> pa.Array:
    """COPY binary field: int32 BE length + bytes, or length -1 (NULL) where not ``present``."""
    lens = col.lengths(data).astype(np.int64)
    if present is not None:
        lens = np.where(present, lens, -1)
    return col.join(col.fixed(col.le_bytes(lens, ">i4")), data)


def _fixed_field(payload: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """COPY binary field for an ``(n, w)`` big-endian payload; NULL where not ``present``."""
    n, width = payload.shape
    mat = np.empty((n, 4 + width), dtype=np.uint8)
    mat[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
    mat[:, 4:] = payload
    if present is None or present.all():
        return col.fixed(mat)
    nulls = np.broadcast_to(np.frombuffer(_NULL, dtype=np.uint8), (n, 4))
    return col.join(col.fixed(mat, present), col.fixed(np.ascontiguousarray(nulls), ~present))


def _timestamp_field(micros: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    return _fixed_field(col.le_bytes(micros - _PG_EPOCH_US, ">i8"), present)


class PostgresWriter(EncodingWriter):
    """One psycopg connection per writer (Feast's connection settings); a transaction per chunk."""

    key_ordered = True

    def __init__(self, target: WriteTarget, *, chunk_rows: int = 20_000):
        super().__init__(target, chunk_rows=chunk_rows)
        self._conn = None
        self._upsert = None
        self._with_num = False
        self._direct = False  # fresh chunks may be copied straight into Feast's table (see _connect)

    @property
    def table_name(self) -> str:
        from feast.infra.online_stores.helpers import compute_table_id

        cfg = self.target.repo_config
        return compute_table_id(cfg.project, self.target.feature_view, cfg.registry.enable_online_feature_view_versioning)

    def _connect(self):
        if self._conn is not None and not (self._conn.closed or self._conn.broken):
            return self._conn
        store = self.target.repo_config.online_store
        label, limit = self.target.online_label, self.first_contact_s
        by = time.monotonic() + limit
        conn = connect(store, label, limit)
        try:
            with answering(conn, by - time.monotonic(), message=f"the online store ({label}) accepted the "
                           f"connection but did not answer within {limit:g} s"), conn.cursor() as cur:
                cur.execute("SELECT to_regclass(quote_ident(%s))", (self.table_name,))
                if cur.fetchone()[0] is None:
                    raise StoreNotReadyError(
                        f"PostgreSQL table {self.table_name!r} does not exist in database {store.database!r}; "
                        "run `feast apply`"
                    )
                # The same test Feast makes to decide whether it fills value_num.
                cur.execute(
                    "SELECT 1 FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s AND column_name = 'value_num'",
                    (store.db_schema or store.user, self.table_name),
                )
                self._with_num = cur.fetchone() is not None
                # Feast binds naive-UTC datetimes as ``timestamp``, converted in the session time
                # zone; binary ``timestamptz`` COPY carries UTC instants. They agree only in UTC.
                cur.execute("SELECT current_setting('TimeZone')")
                self._direct = cur.fetchone()[0] in ("UTC", "Etc/UTC", "GMT", "Etc/GMT", "Universal", "Zulu")
                cur.execute(_STAGE_DDL)
                conn.commit()
        except BaseException:
            conn.close()
            raise
        self._upsert = self._upsert_sql()
        self._conn = conn
        return conn

    def _upsert_sql(self):
        from psycopg import sql

        cols = ["entity_key", "feature_name", "value", "value_text", *(["value_num"] if self._with_num else [])]
        cols += ["event_ts", "created_ts"]
        table = sql.Identifier(self.table_name)
        ids = sql.SQL(", ").join(map(sql.Identifier, cols))
        updates = sql.SQL(", ").join(
            [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols[2:]]
            + [sql.SQL("vector_value = NULL")]  # Feast rewrites it with NULL for scalar features
        )
        insert = sql.SQL("INSERT INTO {t} ({ids}) SELECT {ids} FROM {stage} ORDER BY entity_key, feature_name").format(
            t=table, ids=ids, stage=sql.Identifier(_STAGE))
        upsert = sql.SQL(
            "{insert} ON CONFLICT (entity_key, feature_name) DO UPDATE SET {updates} "
            "WHERE {t}.event_ts IS NULL OR EXCLUDED.event_ts >= {t}.event_ts"
        ).format(insert=insert, t=table, updates=updates)
        probe = sql.SQL("SELECT EXISTS (SELECT 1 FROM {t} WHERE entity_key = ANY(%b))").format(t=table)
        direct = sql.SQL("COPY {t} ({ids}) FROM STDIN (FORMAT BINARY)").format(t=table, ids=ids)
        return insert, upsert, probe, direct

    def _write_chunk(self, chunk: Batch) -> None:
        from psycopg.errors import UniqueViolation

        try:
            self._write_chunk_once(chunk, fresh_ok=True)
        except UniqueViolation:  # another writer inserted one of these entities meanwhile
            self._write_chunk_once(chunk, fresh_ok=False)

    def _write_chunk_once(self, chunk: Batch, *, fresh_ok: bool) -> None:
        conn = self._connect()
        insert, upsert, probe, direct = self._upsert
        key = _field(chunk.entity_keys)
        event = _timestamp_field(chunk.event_us)
        if chunk.created_us is None:
            created = col.const(_NULL)
        else:
            created = _timestamp_field(chunk.created_us, chunk.created_present)
        n = len(chunk)
        values = n * len(chunk.features)
        seconds = chunk_deadline(values)
        cut_message = (f"the online store ({self.target.online_label}) stopped answering: a chunk of {n:,} rows "
                       f"({values:,} values) took more than {seconds:.0f} s")
        try:
            with answering(conn, seconds, message=cut_message), conn.cursor() as cur:
                # None of the chunk's entities stored yet (the common case of a first
                # materialisation): no conflict to resolve, so the rows need no ON CONFLICT.
                # A concurrent insert of one of them fails the chunk with UniqueViolation,
                # and the caller redoes it as an upsert.
                fresh = fresh_ok
                if fresh:
                    # %b, a binary bytea[]: in text, psycopg escapes every key through a regex.
                    # Always through the entity_key index: psycopg prepares a statement after a
                    # few executions, and PostgreSQL's generic plan for ``= ANY($1)`` may be a
                    # sequential scan comparing every stored row with every key (measured: a
                    # probe of 20k keys on 8M rows still running after 18 minutes).
                    cur.execute("SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)")
                    seqscan = cur.fetchone()[0]
                    cur.execute(probe, (to_list(chunk.entity_keys),), prepare=False)
                    fresh = not cur.fetchone()[0]
                    cur.execute("SELECT set_config('enable_seqscan', %s, true)", (seqscan,))
                if fresh and self._direct:
                    # straight into Feast's table, in primary-key order (entity, then feature name)
                    features = sorted(chunk.features, key=lambda f: f.name)
                    per_feature = [self._copy_rows(f, key, event, created, stage=False) for f in features]
                    order = (np.arange(n)[:, None] + np.arange(len(features))[None, :] * n).ravel()
                    rows = pa.concat_arrays(per_feature).take(pa.array(order))
                    with cur.copy(direct) as copy:
                        copy.write(_COPY_HEADER)
                        copy.write(col.span(rows, 0, len(rows)))
                        copy.write(_COPY_TRAILER)
                else:
                    with cur.copy(f"COPY {_STAGE} ({', '.join(_STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.write(_COPY_HEADER)
                        for feature in chunk.features:
                            copy.write(col.span(self._copy_rows(feature, key, event, created, stage=True), 0, n))
                        copy.write(_COPY_TRAILER)
                    cur.execute(insert if fresh else upsert)
                conn.commit()  # within the deadline too
        except BaseException:
            if not (conn.closed or conn.broken):
                conn.rollback()
            raise

    def _copy_rows(self, feature, key, event, created, *, stage: bool) -> pa.Array:
        """One binary COPY tuple per entity for ``feature``: the stage's columns, or Feast's
        table's (``value_num`` only where the table has it)."""
        name = feature.name.encode()
        if self._with_num:
            nums, present = feature.sql_num_array()
            num = [_fixed_field(col.le_bytes(nums, ">f8"), present)]
        else:
            num = [col.const(_NULL)] if stage else []
        text = feature.sql_text_array()
        width = len(_STAGE_COLUMNS) if stage else 6 + (1 if self._with_num else 0)
        return col.join(
            col.const(struct.pack(">h", width)),
            key,
            col.const(struct.pack(">i", len(name)) + name),
            _field(feature.proto_bytes),
            _field(col.as_binary(text), text.is_valid().to_numpy(zero_copy_only=False)),
            *num,
            event,
            created,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect(store, label: str, limit: float = FIRST_CONTACT_S):
    """Feast's own connection (``_get_conn``: the same conninfo, options and SSL settings), with
    ``limit`` seconds to connect (psycopg waits 130 s by default on a server that never answers); a
    refusal is tried again every half second while time is left. Raises :class:`StoreUnreachableError`
    naming the store (``label``) when time runs out; the server's own refusals (a wrong password, a
    missing database) propagate as psycopg raised them."""
    import psycopg
    from feast.infra.utils.postgres.connection_utils import _get_conn_kwargs, _get_conninfo

    end = time.monotonic() + limit
    tries = 0
    while True:
        tries += 1
        try:
            # libpq's floor is 2 s, and it counts per address of a host that has several
            return psycopg.connect(conninfo=_get_conninfo(store), keepalives_idle=store.keepalives_idle,
                                   connect_timeout=max(2, math.ceil(end - time.monotonic())), **_get_conn_kwargs(store))
        except psycopg.OperationalError as exc:
            timed_out = isinstance(exc, psycopg.errors.ConnectionTimeout)
            if not (timed_out or "Connection refused" in str(exc)):
                raise
            if timed_out or time.monotonic() >= end:
                first = str(exc).strip().splitlines()[0]
                raise StoreUnreachableError(f"the online store ({label}) did not answer within {limit:g} s "
                                            f"({tries} {'try' if tries == 1 else 'tries'}): {first}") from exc
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))


@contextlib.contextmanager
def answering(conn, seconds: float, *, message: str):
    """The block (a connection's first statements, or a chunk's) gets ``seconds`` to finish. Past them
    a timer shuts the connection's socket down: libpq has no read timeout, and nothing else ends a read
    from a server that accepted the login and never answers, or stopped answering. The block's error
    then becomes a :class:`StoreUnreachableError` saying ``message`` (which names the store), as does
    a shutdown that came just as the block ended; either way the connection is closed."""

    def shut() -> None:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)  # the same socket as libpq's: its read returns at once

    with cut_off_after(seconds, shut) as was_cut:
        try:
            yield
        except Exception as exc:
            if was_cut():
                conn.close()  # its socket is shut: the writer's next chunk connects again
                raise StoreUnreachableError(message) from exc
            raise
    if was_cut():  # as the block ended (a COMMIT that was answered may have stored the chunk)
        conn.close()
        raise StoreUnreachableError(message)
