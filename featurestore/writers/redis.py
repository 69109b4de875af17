"""Redis online writer: Feast's hash layout, written over hand-built RESP.

Layout (``feast.infra.online_stores.redis``): one hash per entity and project,
key ``serialize_entity_key(...) + project``; field ``mmh3("{view}:{feature}")``
(4 bytes LE) holds ``ValueProto`` bytes; field ``_ts:{view}`` holds a serialised
``google.protobuf.Timestamp``; ``key_ttl_seconds`` re-arms ``EXPIRE`` on every
write.  Only standalone Redis (``redis_type: redis``) is handled here; cluster
and sentinel go to the fallback writer.

Every row reaches Redis through one of three paths, and each keeps newest-wins:

* stored keys: per group of keys, ``WATCH``, ``HGET`` of each key's
  ``_ts:{view}``, the newest-wins check in the client, then plain ``HSET`` commands of
  the keys whose stored timestamp is not newer in ``MULTI``/``EXEC``
  (:mod:`._guard`); a group whose ``EXEC`` aborts (another client wrote one of
  its keys meanwhile) goes to the newest-wins script (:mod:`._lua`), which makes
  the same check and write atomically inside Redis at two to three times the
  server's cost;
* new keys, Redis 7 and later: ``RESTORE`` without ``REPLACE`` of a payload
  built for all rows at once (:mod:`._dump`), the hash Feast's ``HSET`` would
  leave, for far less server work than inserting its fields one by one.  A key
  that exists answers BUSYKEY and goes to the stored-key path, so RESTORE never
  overwrites anything;
* new keys where RESTORE is not available (older servers, CONFIG or RESTORE
  refused by ACLs) or a hash would not be a listpack: per group of keys,
  ``WATCH`` and ``EXISTS``; if none exists, plain ``HSET``s (and ``EXPIRE``s)
  in ``MULTI``/``EXEC``, which aborts if another client touched a watched key
  meanwhile.  Such a group, or one with a stored key, goes to the stored-key path.

A chunk whose keys are mostly stored (a re-materialisation,
``materialize-incremental``) skips the new-key paths: one ``EXISTS`` of a sample
of its keys sends it straight to the stored-key path, before any RESTORE payload or
``HSET`` is built for keys that would only bounce off.  Commands are packed by
:mod:`._columns` into RESP buffers directly from Arrow, so Python does no
per-value work, and are pipelined in windows of a few megabytes (:mod:`._resp`).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers import _lua
from skyfeast.featurestore.writers._dump import RDB_VERSION as _RDB_VERSION  # read per call, so patchable here
from skyfeast.featurestore.writers._dump import listpack_limits, restore_rows
from skyfeast.featurestore.writers._encode import timestamp_proto
from skyfeast.featurestore.writers._guard import write_guarded
from skyfeast.featurestore.writers._lua import MAX_FEATURES, UPSERT_LUA
from skyfeast.featurestore.writers._multi import commands_per_key, hset_rows, write_new
from skyfeast.featurestore.writers._resp import borrowed, bulk_rows, replies
from skyfeast.featurestore.writers.base import (
    FIRST_CONTACT_S,
    Batch,
    EncodingWriter,
    StoreRefusedError,
    StoreUnreachableError,
    cut_off_after,
)


class RedisWriter(EncodingWriter):
    """Feast's Redis hashes, newest-wins: new keys by ``RESTORE`` or ``MULTI``/``EXEC``, stored keys
    by ``WATCH``-guarded ``HSET`` commands in ``MULTI``/``EXEC`` (``guard_group`` entities per group), and
    what those abort by pipelined ``EVALSHA`` of :data:`UPSERT_LUA`, ``keys_per_call`` entities per call."""

    def __init__(
        self,
        target: WriteTarget,
        *,
        chunk_rows: int = 20_000,
        keys_per_call: int | None = None,
        window_bytes: int = 4 << 20,
        fresh_group: int = 64,
        restore: bool = True,
        guard_group: int | None = None,
    ):
        super().__init__(target, chunk_rows=chunk_rows)
        nf = len(target.features)
        if nf > MAX_FEATURES:
            raise ValueError(f"{target.name!r} has {nf} features; RedisWriter handles at most {MAX_FEATURES}")
        # A script blocks the server while it runs: capping a call at ~4,000 values keeps that
        # short, so online reads stay fast during materialisation; larger calls gain nothing.
        self.keys_per_call = keys_per_call or max(1, min(100, 4_000 // (nf + 1)))
        self.window_bytes = window_bytes
        # entities per WATCH/EXISTS/MULTI..EXEC group of the fresh-key path (:mod:`._multi`; 0: never
        # use it).  The path stays because where RESTORE cannot create a key, plain HSETs beat the script.
        self.fresh_group = fresh_group
        self.fresh_groups = 0  # groups written by the fresh-key path, for observability and tests
        # entities not stored yet are created whole by RESTORE (see _write_restore); None: not
        # decided yet (needs the server's listpack limits), False: this server does not take it
        self._restore: bool | None = None if restore else False
        self._limits: tuple[int, int] | None = None
        self.restored = 0  # entities created by RESTORE, for observability and tests
        self._client = None
        self._sha: bytes | None = None
        self.written = 0  # keys actually updated (stale rows excluded), for observability
        self.probe_keys = 32  # keys sampled per chunk by _mostly_stored (0: never probe)
        self.probed_stored = 0  # chunks the probe sent straight to the stored-key path, for observability and tests
        self._argv_head: bytes | None = None  # the script's ARGV head, once the server's limits are known
        # entities per WATCH/HGET/MULTI..EXEC group of the stored-key path (:mod:`._guard`; 0: the
        # script for every stored key).  ~8,000 values keep an EXEC as short as a few script calls.
        self.guard_group = max(1, min(128, 8_000 // (nf + 1))) if guard_group is None else guard_group
        self.guarded_groups = 0  # groups written by the stored-key path, for observability and tests
        self.guard_aborts = 0  # of its groups, those another client's write sent to the script
        self._static_argv()

    def _static_argv(self) -> None:
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        cfg = self.target.repo_config
        view = compute_versioned_name(self.target.feature_view, cfg.registry.enable_online_feature_view_versioning)
        self._ttl = cfg.online_store.key_ttl_seconds or 0
        self._fields = [_mmh3(f"{view}:{name}") for name in self.target.features]
        self._ts_field = f"_ts:{view}".encode()

    def _head(self, client) -> bytes:
        """The script's ARGV head (:func:`._lua.argv_head`), with this server's listpack limits."""
        if self._argv_head is None:
            if self._limits is None:
                self._limits = listpack_limits(client)
            self._argv_head = _lua.argv_head(self._ts_field, self._ttl, self._fields, self._limits)
        return self._argv_head

    def _redis(self):
        if self._client is None:
            from feast.infra.online_stores.redis import RedisOnlineStore

            # Feast's own connection-string parsing, so db/password/ssl mean the same.
            client = RedisOnlineStore()._get_client(self.target.repo_config.online_store)
            self._sha = first_contact(client, self.target.online_label, UPSERT_LUA, self.first_contact_s).encode()
            self._client = client
        return self._client

    def _write_chunk(self, chunk: Batch) -> None:
        project = self.target.repo_config.project.encode()
        keys = bulk_rows(col.join(chunk.entity_keys, col.const(project)))
        stamps = timestamp_proto(chunk.event_us)
        client = self._redis()
        fresh = self.fresh_group > 0
        if (self._restore is not False or fresh) and self._mostly_stored(client, keys):
            # a re-materialisation: neither RESTORE nor the fresh-key groups would take
            # these keys, so building their payloads would be wasted work
            fresh = False
            self.probed_stored += 1
        elif self._restore is not False:
            left = self._write_restore(client, keys, stamps, chunk)
            if left is not None:
                if len(left) == 0:
                    return
                if len(left) < len(chunk):
                    idx = pa.array(left)
                    chunk, keys, stamps = chunk.take(left), keys.take(idx), stamps.take(idx)
                if self._restore:  # RESTORE works here: what it left is stored already, for the stored-key path
                    fresh = False
        todo = self._write_fresh(client, keys, stamps, chunk) if fresh else [(0, len(chunk))]
        if todo and self.guard_group > 0:
            todo = self._write_guarded(client, keys, stamps, chunk, todo)
        if not todo:
            return
        payload = bulk_rows(stamps, *(f.proto_bytes for f in chunk.features))
        calls = _lua.calls(self._sha, self._head(client), len(self.target.features), keys, payload, todo,
                           self.keys_per_call)
        self.written += _lua.run(client, calls, self.window_bytes)

    def _mostly_stored(self, client, keys) -> bool:
        """Whether more than half of ``probe_keys`` keys spread over the chunk are stored: one
        ``EXISTS`` round trip.  Only picks the path; every path keeps newest-wins."""
        n = len(keys)
        if self.probe_keys <= 0 or n == 0:
            return False
        sample = np.unique(np.linspace(0, n - 1, min(self.probe_keys, n)).astype(np.int64))
        with borrowed(client) as conn:
            read = replies(conn)
            conn.send_packed_command([b"*%d\r\n$6\r\nEXISTS\r\n" % (1 + len(sample)),
                                      col.span(keys.take(pa.array(sample)), 0, len(sample))], check_health=False)
            stored = int(read())
        return 2 * stored > len(sample)

    # ------------------------------------------------------------ RESTORE of new hashes
    def _write_restore(self, client, keys, stamps, chunk: Batch) -> np.ndarray | None:
        """Create the chunk's entities that are not stored yet with ``RESTORE`` (no ``REPLACE``):
        atomic per key, it fails with BUSYKEY when the key exists, so an entity another writer
        created meanwhile is never overwritten.  Returns the rows left for the newest-wins
        stored-key path (stored already), or None when RESTORE was not used.

        Each new hash costs the server one command and no per-field insertion; the payloads
        (:func:`._dump.restore_rows`) are built for all rows at once.  Windows that find most
        keys stored stop the attempt (a re-materialisation).  Any error other than BUSYKEY (an
        ACL without RESTORE, a server refusing the payload) turns RESTORE off for this writer and
        the rows take the other paths.
        """
        from redis.exceptions import ResponseError

        if self._restore is None:
            self._limits = listpack_limits(client)
            self._restore = self._limits is not None
            if not self._restore:
                return None
        names = [*self._fields, self._ts_field]  # Feast's HSET order: the features, then the timestamp
        values = [*(f.proto_bytes for f in chunk.features), stamps]
        rows = restore_rows(keys, names, values, self._ttl * 1000, self._limits, _RDB_VERSION)
        if rows is None:
            return None
        n = len(chunk)
        done = np.zeros(n, dtype=bool)
        failure = None
        with borrowed(client) as conn:
            read = replies(conn)
            offs = col.offsets(rows)
            at = 0
            while at < n and failure is None:
                stop = int(np.searchsorted(offs, offs[at] + self.window_bytes, side="left"))
                stop = min(max(stop, at + 1), n)
                conn.send_packed_command([col.span(rows, at, stop)], check_health=False)
                busy = 0
                for i in range(at, stop):
                    try:
                        read()
                        done[i] = True
                    except ResponseError as exc:  # keep draining: replies must stay in step
                        if str(exc).startswith("BUSYKEY"):
                            busy += 1
                        else:
                            failure = failure or exc
                window, at = stop - at, stop
                if 2 * busy > window:  # most keys stored: a re-materialisation, for the stored-key path
                    break
        if failure is not None:
            self._restore = False
        self.restored += int(done.sum())
        self.written += int(done.sum())
        return np.flatnonzero(~done)

    def _guarded(self, start: int, stop: int) -> None:
        """Called between a stored-key group's HGETs and its MULTI (a seam for the race test)."""

    def _write_guarded(self, client, keys, stamps, chunk: Batch, todo: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Write rows ``todo`` by the stored-key path (:func:`._guard.write_guarded`); return the
        ``(start, stop)`` ranges of the groups that another client's write aborted, for the script."""
        self._head(client)  # the server's listpack limits, for the script's widening rule
        nf = len(self._fields)

        def rows(a: int, b: int) -> pa.Array:
            values = [f.proto_bytes.slice(a, b - a) for f in chunk.features]
            return hset_rows(keys.slice(a, b - a), self._ts_field, stamps.slice(a, b - a), self._fields, values,
                             self._ttl)

        sec, nanos = np.divmod(chunk.event_us, 1_000_000)  # as timestamp_proto encodes them
        block = max(self.guard_group, (32 << 20) // (32 * (nf + 1) + 64))  # ~32 MB of commands at a time
        written, done, aborted, left = write_guarded(
            client, keys, self._ts_field, todo, self.guard_group, new_sec=sec, new_nanos=nanos * 1_000,
            rows=rows, per_key=commands_per_key(nf, self._ttl, None), n_fields=nf, limits=self._limits,
            block=block, watched=self._guarded)
        self.written += written
        self.guarded_groups += done
        self.guard_aborts += aborted
        return left

    def _watched(self, start: int, stop: int) -> None:
        """Called between a fresh-key group's WATCH and its MULTI (a seam for the race test)."""

    def _write_fresh(self, client, keys, stamps, chunk: Batch) -> list[tuple[int, int]]:
        """Write the groups of entities none of which is stored yet with plain ``HSET``s
        (:func:`._multi.write_new`); return the ``(start, stop)`` ranges left for the stored-key path."""

        self._head(client)  # the server's listpack limits, for hashes too wide for a listpack

        def rows():
            values = [f.proto_bytes for f in chunk.features]
            return hset_rows(keys, self._ts_field, stamps, self._fields, values, self._ttl, self._limits)

        per_key = commands_per_key(len(self._fields), self._ttl, self._limits)
        done, left = write_new(client, keys, self.fresh_group, rows, per_key, self._watched)
        self.fresh_groups += len(done)
        self.written += sum(b - a for a, b in done)
        return left


# a pool's own bookkeeping, not connection settings: a probe pool must not share them with the client's
_POOL_ONLY = ("maint_notifications_pool_handler", "orig_socket_timeout", "orig_socket_connect_timeout")


def first_contact(client, label: str, script: str, limit: float = FIRST_CONTACT_S) -> str:
    """``SCRIPT LOAD`` of ``script`` through ``client``'s settings, within ``limit`` seconds in all.

    redis-py's defaults give a server that accepts and never answers a minute (ten retries of a
    5 s read); a writer's first command gets ``limit``, handshake included, on a connection of its
    own that a timer closes at the deadline. A refusal is tried again every half second while time
    is left. Later commands keep the client's own timeouts and retries. Raises
    :class:`StoreUnreachableError` or, for refused credentials, :class:`StoreRefusedError`, naming
    the store (``label``)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_ONLY}
    end = time.monotonic() + limit
    tries = 0
    while True:
        tries += 1
        left = max(0.05, end - time.monotonic())
        probe = redis.ConnectionPool(connection_class=pool.connection_class, **{
            **settings, "socket_connect_timeout": left, "socket_timeout": left, "retry": Retry(NoBackoff(), 0)})
        with cut_off_after(left, lambda: probe.disconnect(inuse_connections=True)) as was_cut:
            try:
                return redis.Redis(connection_pool=probe).script_load(script)
            except redis.AuthenticationError as exc:
                raise StoreRefusedError(f"the online store ({label}) refused the writer's credentials: {exc}") \
                    from exc
            except Exception as exc:
                if not (was_cut() or isinstance(exc, (redis.ConnectionError, redis.TimeoutError))):
                    raise
                if was_cut() or time.monotonic() >= end:
                    raise StoreUnreachableError(f"the online store ({label}) did not answer within {limit:g} s "
                                                f"({tries} {'try' if tries == 1 else 'tries'}): "
                                                f"{'no answer' if was_cut() else exc}") from exc
            finally:
                probe.disconnect()
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
