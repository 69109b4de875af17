"""The online-writer contract, the row preparation every writer shares, and the factory.

A writer upserts Arrow rows of one feature view into the online store exactly as
Feast's ``OnlineStore.online_write_batch`` would (same keys, field names,
serialised values and timestamps), except that it never lets an older event
replace a newer one.

Exceptions::

    ValueError
    ├── featurestore.online.OutputSchemaError  the table lacks a column the view needs
    └── EncodingError                          a null join key or event timestamp, an
                                               uncastable value (message names the column)
    WriterError
    ├── StoreUnreachableError                  the store did not answer the writer's first
    │                                          contact within FIRST_CONTACT_S seconds, or
    │                                          (PostgreSQL) a chunk within chunk_deadline()
    ├── StoreRefusedError                      the store refused the writer's credentials
    └── StoreNotReadyError                     the view's online table is missing: run
                                               ``feast apply`` first

Driver errors (sqlite3, redis, psycopg) propagate unchanged: callers retry a
whole ``write``, which is safe because every write is newest-wins idempotent.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skyfeast.featurestore.online import OutputSchemaError
from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers._encode import (
    EncodingError,
    FeatureColumn,
    entity_keys,
    utc_micros,
)

__all__ = [
    "Batch",
    "EncodingError",
    "EncodingWriter",
    "OnlineWriter",
    "FIRST_CONTACT_S",
    "chunk_deadline",
    "StoreNotReadyError",
    "StoreRefusedError",
    "StoreUnreachableError",
    "cut_off_after",
    "WriterError",
    "prepare",
    "writer_class",
    "writer_for",
]


#: Seconds a network store (Redis, PostgreSQL) has to answer a writer's first contact. Its client
#: libraries' own defaults wait a minute (redis-py's ten retries) to over two (psycopg's connect)
#: on a server that accepts and never answers; later commands keep the libraries' timeouts.
FIRST_CONTACT_S = 10.0

#: A PostgreSQL chunk's deadline (libpq has no read timeout, so a server that stops answering
#: mid-write would hold the writer for good): this many seconds, plus a second for every
#: CHUNK_FLOOR_VALUES_S values (feature values) the chunk carries. The floor rate is a sixth of the
#: writer's slowest measured rate (129k values/s, newest-wins updates over stored rows) and a twentieth
#: of its first loads' (336k to 454k; docs/benchmarks.md), so only a store that has stopped meets it.
CHUNK_BASE_S = 60.0
CHUNK_FLOOR_VALUES_S = 20_000


def chunk_deadline(values: int) -> float:
    """Seconds a store transaction of ``values`` feature values may take (see CHUNK_BASE_S)."""
    return CHUNK_BASE_S + values / CHUNK_FLOOR_VALUES_S


@contextlib.contextmanager
def cut_off_after(seconds: float, cut: Callable[[], None]) -> Iterator[Callable[[], bool]]:
    """Run the block; if it still runs after ``seconds``, a timer thread calls ``cut()`` (which closes the
    block's connection, so that a read blocked on a server that never answers returns). Yields a function
    that tells whether the cut happened; once the block has ended, the timer does nothing."""
    lock, state = threading.Lock(), {"done": False, "cut": False}

    def fire() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            with contextlib.suppress(Exception):
                cut()

    timer = threading.Timer(max(0.0, seconds), fire)
    timer.daemon = True
    timer.start()
    try:
        yield lambda: state["cut"]
    finally:
        timer.cancel()
        with lock:
            state["done"] = True


class WriterError(Exception):
    """A writer cannot do its job for a reason other than bad input."""


class StoreUnreachableError(WriterError):
    """The online store did not answer a writer's first contact in time (a server that is down, or
    one that accepts connections and never answers), or stopped answering in the middle of a chunk.
    Another provider's workers may reach it."""

    failure_class = "infrastructure"  # see skyfeast.adapters.failures


class StoreRefusedError(WriterError):
    """The online store refused the writer's credentials: the same for every provider's workers."""

    failure_class = "config"  # see skyfeast.adapters.failures


class StoreNotReadyError(WriterError):
    """The feature view has no online table/keyspace yet (``feast apply`` not run)."""

    failure_class = "data"  # see skyfeast.adapters.failures


class OnlineWriter(abc.ABC):
    """Writes rows of one feature view (``target``) to the online store its repo configures.

    Construction opens nothing; the first :meth:`write` connects.  A writer is not
    thread-safe; use one per thread or task.
    """

    #: True when the store keeps rows in a B-tree ordered by the serialised entity key:
    #: callers then split work by key range (:mod:`skyfeast.featurestore.partitioning`), not by hash.
    key_ordered: bool = False
    #: Seconds a network store has to answer this writer's first contact (:data:`FIRST_CONTACT_S`).
    first_contact_s: float = FIRST_CONTACT_S
    #: True when one writer at a time, in ascending key-range order, beats writers in parallel:
    #: the store takes one writer at a time anyway, and rows inserted below stored keys cost it
    #: more than rows appended past them (:func:`skyfeast.featurestore.materialize.run_plans`
    #: then chains a view's partition writes).
    ordered_writes: bool = False

    def __init__(self, target: WriteTarget):
        self.target = target
        # set by a caller that knows no other writer of this store runs meanwhile (a chained
        # partition write): the writer may then use more than one thread
        self.alone = False

    @abc.abstractmethod
    def write(self, table: pa.Table) -> int:
        """Upsert rows (join keys + features + timestamp field [+ created ts]) into the online store.

        Newest event wins: a row whose event timestamp is older than what is stored
        for that entity does not overwrite it, and of several rows for the same
        entity in one call only the newest is written (equal event timestamps:
        the newer created timestamp, then the later row).  An equal timestamp
        does overwrite what is stored, so re-running a corrected interval repairs
        it.  Returns the number of entity rows sent after collapsing duplicates.

        Raises ``OutputSchemaError`` for missing columns, :class:`EncodingError`
        for values Feast could not store, :class:`StoreNotReadyError` when the
        view's online table does not exist.
        """

    def close(self) -> None:
        """Release connections. The writer may be used again afterwards (it reconnects)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- prepared rows


@dataclass
class Batch:
    """Rows ready to store: one per entity, entity keys serialised, timestamps in UTC µs."""

    target: WriteTarget
    table: pa.Table
    entity_keys: pa.Array
    event_us: np.ndarray
    created_us: np.ndarray | None
    created_present: np.ndarray | None

    def __len__(self) -> int:
        return len(self.event_us)

    def chunks(self, size: int) -> Iterator[Batch]:
        for start in range(0, len(self), size):
            yield self.slice(start, min(start + size, len(self)))

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start`` to ``stop`` (zero-copy)."""
        return Batch(
            self.target,
            self.table.slice(start, stop - start),
            self.entity_keys.slice(start, stop - start),
            self.event_us[start:stop],
            None if self.created_us is None else self.created_us[start:stop],
            None if self.created_present is None else self.created_present[start:stop],
        )

    def take(self, rows: np.ndarray) -> Batch:
        """The batch of the given row positions (in that order)."""
        idx = pa.array(rows)
        return Batch(
            self.target,
            self.table.take(idx),
            self.entity_keys.take(idx),
            self.event_us[rows],
            None if self.created_us is None else self.created_us[rows],
            None if self.created_present is None else self.created_present[rows],
        )

    @cached_property
    def features(self) -> list[FeatureColumn]:
        types = _feature_types(self.target)
        return [FeatureColumn(name, self.table.column(name), types[name]) for name in self.target.features]


def _feature_types(target: WriteTarget) -> dict:
    return {f.name: f.dtype.to_value_type() for f in target.feature_view.features}


def join_key_types(target: WriteTarget) -> dict:
    """Feast value type of each join key, in ``target.join_keys`` order."""
    types = {ec.name: ec.dtype.to_value_type() for ec in target.feature_view.entity_columns}
    return {k: types[k] for k in target.join_keys}


def created_column(target: WriteTarget) -> str | None:
    source = target.feature_view.batch_source
    return (getattr(source, "created_timestamp_column", None) or None) if source is not None else None


def prepare(target: WriteTarget, table: pa.Table) -> Batch:
    """Validate ``table``, serialise entity keys and keep the newest row per entity."""
    need = [*target.join_keys, *target.features, target.timestamp_field]
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise OutputSchemaError(
            f"output for feature view {target.name!r} lacks column(s) {missing}; it has {table.column_names}"
        )
    created_name = created_column(target)
    keep = need + ([created_name] if created_name in table.column_names else [])
    table = table.select(list(dict.fromkeys(keep))).combine_chunks()

    keys = entity_keys(table, join_key_types(target))
    event_us, present = utc_micros(table.column(target.timestamp_field), target.timestamp_field)
    if not present.all():
        raise EncodingError(f"timestamp field {target.timestamp_field!r} has {int((~present).sum())} null value(s)")
    created_us = created_present = None
    if created_name in table.column_names:
        created_us, created_present = utc_micros(table.column(created_name), created_name)

    order = newest_per_key(keys, event_us, created_us, created_present)
    idx = pa.array(order)
    table, keys = table.take(idx), keys.take(idx)
    event_us = event_us[order]
    if created_us is not None:
        created_us, created_present = created_us[order], created_present[order]
    return Batch(target, table, keys, event_us, created_us, created_present)


def newest_per_key(keys: pa.Array, event_us: np.ndarray, created_us=None, created_present=None) -> np.ndarray:
    """Row indices, in ascending key order, of the newest (event, created, position) row per key.

    Key order is also the stores' primary-key order, so each chunk touches one
    narrow range of their B-trees.
    """
    n = len(keys)
    if n < 2:
        return np.arange(n)
    created = pa.nulls(n, pa.int64()) if created_us is None else pa.array(created_us, mask=~created_present)
    frame = pa.table({"k": keys, "e": event_us, "c": created, "i": np.arange(n)})
    order = pc.sort_indices(
        frame,
        sort_keys=[("k", "ascending", "at_start"), ("e", "ascending", "at_start"),
                   ("c", "ascending", "at_start"), ("i", "ascending", "at_start")],
    ).to_numpy()
    ordered = keys.take(pa.array(order))
    last = np.ones(n, dtype=bool)
    last[:-1] = pc.not_equal(ordered.slice(1), ordered.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return order[last]


class EncodingWriter(OnlineWriter):
    """A writer that encodes rows itself, ``chunk_rows`` entities per store transaction."""

    def __init__(self, target: WriteTarget, *, chunk_rows: int = 20_000):
        super().__init__(target)
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self.chunk_rows = chunk_rows

    def write(self, table: pa.Table) -> int:
        if table.num_rows == 0:
            return 0
        batch = prepare(self.target, table)
        self._write_chunks(list(batch.chunks(self.chunk_rows)))
        return len(batch)

    def _write_chunks(self, chunks: list[Batch]) -> None:
        """Store one ``write`` call's chunks, in order (a writer may overlap their work)."""
        for chunk in chunks:
            self._write_chunk(chunk)

    @abc.abstractmethod
    def _write_chunk(self, chunk: Batch) -> None:
        """Store ``chunk`` (distinct entities) atomically where the store allows, newest-wins."""


# ---------------------------------------------------------------- factory

_SQLITE_TYPES = ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore")


def writer_class(target: WriteTarget) -> type[OnlineWriter]:
    """The writer class :func:`writer_for` picks for ``target``'s store (imports nothing else)."""
    cfg = target.repo_config
    store = cfg.online_store
    kind = getattr(store, "type", None)
    native = cfg.entity_key_serialization_version == 3 and not getattr(store, "vector_enabled", False)
    if native and kind in _SQLITE_TYPES:
        from skyfeast.featurestore.writers.sqlite import SqliteWriter

        return SqliteWriter
    if native and kind == "redis" and getattr(store.redis_type, "value", store.redis_type) == "redis":
        from skyfeast.featurestore.writers.redis import RedisWriter

        return RedisWriter
    if native and kind == "postgres":
        from skyfeast.featurestore.writers.postgres import PostgresWriter

        return PostgresWriter
    from skyfeast.featurestore.writers.fallback import FallbackWriter

    return FallbackWriter


def writer_for(target: WriteTarget, **options) -> OnlineWriter:
    """The native writer for the repo's online store, else :class:`FallbackWriter`.

    Native writers cover SQLite, standalone Redis and PostgreSQL with entity key
    serialisation v3 and no vector search; anything else goes through Feast's
    own ``online_write_batch``.  ``options`` go to the writer's constructor.
    """
    return writer_class(target)(target, **options)
