"""Redis online writer: Feast's hash layout, written by a Lua script over hand-built RESP.

Layout (``feast.infra.online_stores.redis``): one hash per entity and project,
key ``serialize_entity_key(...) + project``; field ``mmh3("{view}:{feature}")``
(4 bytes LE) holds ``ValueProto`` bytes; field ``_ts:{view}`` holds a serialised
``google.protobuf.Timestamp``; ``key_ttl_seconds`` re-arms ``EXPIRE`` on every
write.

Entities not stored yet (the common case of a first materialisation) skip the
script.  On Redis 7 and later they are created whole by ``RESTORE key ttl
payload`` (no ``REPLACE``), the payload a DUMP-format listpack built for all rows
at once: the same fields, values, encoding and TTL that Feast's ``HSET`` and
``EXPIRE`` leave, for about a sixth of the server time (Redis' command
statistics: 1.9 µs per entity against 12.5 µs for a 21-field ``HSET``).  A key
that exists answers BUSYKEY and goes through the script, so RESTORE never
overwrites anything.  Where RESTORE is not available (older servers, CONFIG or
RESTORE refused by ACLs), per group of keys: ``WATCH`` and ``EXISTS``; if none
exists, plain ``HSET``s (and ``EXPIRE``s) in ``MULTI``/``EXEC``, which aborts if
another client touched a watched key meanwhile; such a group, or one with a
stored key, goes through the script.  A chunk whose keys are mostly stored (a
re-materialisation, ``materialize-incremental``) skips both: one ``EXISTS`` of
32 keys spread over the chunk sends it straight to the script, before any
RESTORE payload is built (that building was ~40% of an update's time).

Newest wins inside Redis, in one round trip: :data:`UPSERT_LUA` reads the
stored ``_ts:{view}`` of each key, decodes it, and only ``HSET``s (and
``EXPIRE``s) when the new timestamp is not older.  Each ``EVALSHA`` carries up to
a hundred entities; commands are packed by :mod:`._columns` into RESP buffers
directly from Arrow, so Python does no per-value work, and are pipelined in
windows of a few megabytes.  Only standalone Redis (``redis_type: redis``) is
handled here; cluster and sentinel go to the fallback writer.
"""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pyarrow as pa

from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._encode import timestamp_proto
from skyfeast.featurestore.writers.base import Batch, EncodingWriter

# KEYS: hash keys.  ARGV: n_features, ts_field, ttl, field names..., then per key:
# serialised Timestamp, value_1..value_n.  Returns the number of keys written.
UPSERT_LUA = r"""
local nf, ts_field, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local function decode(b)  -- google.protobuf.Timestamp -> seconds, nanos
  local sec, nanos, i, n = 0, 0, 1, #b
  while i <= n do
    local tag = string.byte(b, i)
    i = i + 1
    local v, mul, nb, c = 0, 1, 0, 128
    while c >= 128 do
      c = string.byte(b, i) or 0
      i, nb = i + 1, nb + 1
      if nb <= 6 then v = v + (c % 128) * mul end  -- low 42 bits: exact in a double
      mul = mul * 128
    end
    if nb == 10 then v = v - 4398046511104 end  -- a 10-byte varint is a negative int64
    if tag == 8 then sec = v elseif tag == 16 then nanos = v end
  end
  return sec, nanos
end
local args = {ts_field, false}
for j = 1, nf do args[2 * j + 1] = ARGV[3 + j] end
local written, base = 0, 3 + nf
for k = 1, #KEYS do
  local o = base + (k - 1) * (nf + 1)
  local new = ARGV[o + 1]
  local old = redis.call('HGET', KEYS[k], ts_field)
  local go = true
  if old then
    local s0, n0 = decode(old)
    local s1, n1 = decode(new)
    go = s1 > s0 or (s1 == s0 and n1 >= n0)
  end
  if go then
    args[2] = new
    for j = 1, nf do args[2 * j + 2] = ARGV[o + 1 + j] end
    redis.call('HSET', KEYS[k], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    written = written + 1
  end
end
return written
"""

_MAX_FEATURES = 3_000  # Lua's unpack() limit is ~8000 values; HSET gets 2 per feature


def _bulk(*args: bytes) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _replies(conn):
    """A function returning the next reply on ``conn`` (error replies raised as redis-py's).

    The writer reads hundreds of thousands of small replies (``QUEUED``, integers);
    redis-py spends several microseconds of Python on each.  With hiredis installed
    (the ``redis`` extra), replies are read straight off the connection's socket
    into a private ``hiredis.Reader``: safe because the writer holds the connection
    from the pool for the whole exchange and reads exactly the replies it asked for,
    so redis-py's own buffer is empty before and after.
    """
    try:
        import hiredis
    except ImportError:
        hiredis = None
    if hiredis is None:
        return conn.read_response
    conn.connect()  # a no-op when connected
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return conn.read_response
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ExecAbortError, NoScriptError, ResponseError

    reader = hiredis.Reader()
    buf = bytearray(1 << 16)
    view = memoryview(buf)

    def read():
        reply = reader.gets()
        while reply is False:
            n = sock.recv_into(view)
            if not n:
                raise RedisConnectionError("Redis closed the connection")
            reader.feed(view, 0, n)
            reply = reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            text = str(reply)
            kind = NoScriptError if text.startswith("NOSCRIPT") else \
                ExecAbortError if text.startswith("EXECABORT") else ResponseError
            raise kind(text)
        return reply

    return read


class RedisWriter(EncodingWriter):
    """Pipelined ``EVALSHA`` of :data:`UPSERT_LUA`, ``keys_per_call`` entities per call."""

    def __init__(
        self,
        target: WriteTarget,
        *,
        chunk_rows: int = 20_000,
        keys_per_call: int | None = None,
        window_bytes: int = 4 << 20,
        fresh_group: int = 64,
        restore: bool = True,
    ):
        super().__init__(target, chunk_rows=chunk_rows)
        nf = len(target.features)
        if nf > _MAX_FEATURES:
            raise ValueError(f"{target.name!r} has {nf} features; RedisWriter handles at most {_MAX_FEATURES}")
        # A script blocks the server while it runs: ~4,000 values per call keeps that near
        # a millisecond, so online reads stay fast during materialisation.  Larger calls
        # measured no faster.
        self.keys_per_call = keys_per_call or max(1, min(100, 4_000 // (nf + 1)))
        self.window_bytes = window_bytes
        # entities per WATCH/EXISTS/MULTI..EXEC group of the fresh-key path (0: never use it);
        # an EXEC blocks the server like a script does (64 hashes of 20 fields: ~1 ms), and
        # Redis 7.0's WATCH scans the client's watched keys for each key it adds (quadratic)
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
        self.probed_stored = 0  # chunks the probe sent straight to the script, for observability and tests
        self._argv_head = self._static_argv()

    def _static_argv(self) -> bytes:
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        cfg = self.target.repo_config
        view = compute_versioned_name(self.target.feature_view, cfg.registry.enable_online_feature_view_versioning)
        self._ttl = ttl = cfg.online_store.key_ttl_seconds or 0
        self._fields = fields = [_mmh3(f"{view}:{name}") for name in self.target.features]
        self._ts_field = f"_ts:{view}".encode()
        return _bulk(b"%d" % len(fields), self._ts_field, b"%d" % ttl, *fields)

    def _redis(self):
        if self._client is None:
            from feast.infra.online_stores.redis import RedisOnlineStore

            # Feast's own connection-string parsing, so db/password/ssl mean the same.
            self._client = RedisOnlineStore()._get_client(self.target.repo_config.online_store)
        if self._sha is None:
            self._sha = self._client.script_load(UPSERT_LUA).encode()
        return self._client

    def _write_chunk(self, chunk: Batch) -> None:
        project = self.target.repo_config.project.encode()
        keys = _resp_bulks(col.join(chunk.entity_keys, col.const(project)))
        stamps = timestamp_proto(chunk.event_us)
        client = self._redis()
        fresh = self.fresh_group > 0
        if (self._restore is not False or fresh) and self._mostly_stored(client, keys):
            # a re-materialisation: neither RESTORE nor the fresh-key groups would take
            # these keys, so building their payloads would be wasted (~40% of the time)
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
                if self._restore:  # RESTORE works here: what it left is stored already, for the script
                    fresh = False
        n = len(chunk)
        todo = [(0, n)]
        if fresh:
            todo = self._write_fresh(client, keys, stamps, chunk)
        if not todo:
            return
        payload = _resp_bulks(stamps, *(f.proto_bytes for f in chunk.features))
        step = self.keys_per_call
        commands = [(start, min(start + step, b)) for a, b in todo for start in range(a, b, step)]
        nf = len(self.target.features)

        def pack(start: int, stop: int) -> list:
            m = stop - start
            head = b"*%d\r\n" % (3 + m + 3 + nf + m * (nf + 1)) + _bulk(b"EVALSHA", self._sha, b"%d" % m)
            return [head, col.span(keys, start, stop), self._argv_head, col.span(payload, start, stop)]

        self.written += _pipeline(client, [pack(*c) for c in commands], self.window_bytes)

    def _mostly_stored(self, client, keys) -> bool:
        """Whether more than half of ``probe_keys`` keys spread over the chunk are stored: one
        ``EXISTS`` round trip.  Only picks the path; every path keeps newest-wins."""
        n = len(keys)
        if self.probe_keys <= 0 or n == 0:
            return False
        sample = np.unique(np.linspace(0, n - 1, min(self.probe_keys, n)).astype(np.int64))
        with _borrowed(client) as conn:
            read = _replies(conn)
            conn.send_packed_command([b"*%d\r\n$6\r\nEXISTS\r\n" % (1 + len(sample)),
                                      col.span(keys.take(pa.array(sample)), 0, len(sample))], check_health=False)
            stored = int(read())
        return 2 * stored > len(sample)

    # ------------------------------------------------------------ RESTORE of new hashes
    def _listpack_limits(self, client) -> tuple[int, int] | None:
        """The server's ``hash-max-listpack-entries`` and ``-value``, or None if it will not say
        (CONFIG disabled, as on some managed services) or is older than Redis 7 (no listpacks)."""
        try:
            if int(str(client.info("server").get("redis_version", "0")).split(".")[0]) < 7:
                return None
            got = client.config_get("hash-max-listpack-*")
            return int(got["hash-max-listpack-entries"]), int(got["hash-max-listpack-value"])
        except Exception:
            return None

    def _restore_rows(self, keys, stamps, chunk: Batch) -> pa.Array | None:
        """Row ``i``: ``RESTORE key ttl payload`` creating entity ``i``'s hash exactly as Feast's
        ``HSET`` would (same fields and values, the listpack encoding HSET picks for a hash this
        small, the TTL in milliseconds), or None when some hash would not be a listpack."""
        entries, value_limit = self._limits
        values = [*(f.proto_bytes for f in chunk.features), stamps]
        names = [*self._fields, self._ts_field]
        if len(names) > entries or max(len(f) for f in names) > value_limit:
            return None
        if any(len(v) and int(col.lengths(v).max()) > value_limit for v in values):
            return None
        n = len(chunk)
        total = np.full(n, 7, dtype=np.int64)  # listpack header (6) + end byte
        body = []
        for name, value in zip(names, values):  # Feast's HSET order: features, then the timestamp
            entry = _lp_entry(name)
            body.append(col.const(entry))
            total += len(entry)
            parts, size = _lp_entries(value)
            body += parts
            total += size
        head = np.empty((n, 6), dtype=np.uint8)
        head[:, :4] = col.le_bytes(total, "<u4")
        head[:, 4:] = np.frombuffer(struct.pack("<H", 2 * len(names)), dtype=np.uint8)
        dump = col.join(col.const(b"\x10"), _rdb_len(total), col.fixed(head), *body, col.const(b"\xff"),
                        col.const(struct.pack("<H", _RDB_VERSION)))
        payload = col.join(dump, col.fixed(col.le_bytes(col.crc64(dump), "<u8")))
        return col.join(col.const(b"*4\r\n$7\r\nRESTORE\r\n"), keys, col.const(_bulk(b"%d" % (self._ttl * 1000))),
                        *_bulk_parts(payload))

    def _write_restore(self, client, keys, stamps, chunk: Batch) -> np.ndarray | None:
        """Create the chunk's entities that are not stored yet with ``RESTORE`` (no ``REPLACE``):
        atomic per key, it fails with BUSYKEY when the key exists, so an entity another writer
        created meanwhile is never overwritten.  Returns the rows left for the newest-wins
        script (stored already), or None when RESTORE was not used.

        Each new hash costs the server one command instead of ``WATCH``/``EXISTS``/``HSET`` in
        ``MULTI``/``EXEC``, and no per-field insertion: about a fifth of the server time.  The
        payload is a DUMP-format listpack (RDB type 16, version 10: Redis 7.0 and later) built
        for all rows at once.  Windows that find most keys stored stop the attempt (a
        re-materialisation).  Any error other than BUSYKEY (an ACL without RESTORE, a server
        refusing the payload) turns RESTORE off for this writer and the rows take the other paths.
        """
        from redis.exceptions import ResponseError

        if self._restore is None:
            self._limits = self._listpack_limits(client)
            self._restore = self._limits is not None
            if not self._restore:
                return None
        rows = self._restore_rows(keys, stamps, chunk)
        if rows is None:
            return None
        n = len(chunk)
        done = np.zeros(n, dtype=bool)
        failure = None
        with _borrowed(client) as conn:
            read = _replies(conn)
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
                if 2 * busy > window:  # most keys stored: a re-materialisation, leave it to the script
                    break
        if failure is not None:
            self._restore = False
        self.restored += int(done.sum())
        self.written += int(done.sum())
        return np.flatnonzero(~done)

    def _hset_rows(self, keys, stamps, chunk: Batch):
        """Row ``i``: entity ``i``'s ``HSET`` of Feast's hash (and its ``EXPIRE`` under a TTL), as RESP."""
        parts = [col.const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(self._fields) + 1))), keys,
                 col.const(_bulk(self._ts_field)), *_bulk_parts(stamps)]
        for field, feature in zip(self._fields, chunk.features):
            parts += [col.const(_bulk(field)), *_bulk_parts(feature.proto_bytes)]
        if self._ttl > 0:
            parts += [col.const(b"*3\r\n$6\r\nEXPIRE\r\n"), keys, col.const(_bulk(b"%d" % self._ttl))]
        return col.join(*parts)

    def _watched(self, start: int, stop: int) -> None:
        """Called between a group's WATCH and its MULTI (a seam for the race test)."""

    def _write_fresh(self, client, keys, stamps, chunk: Batch) -> list[tuple[int, int]]:
        """Write the groups of entities none of which is stored yet with plain ``HSET``s; return
        the ``(start, stop)`` ranges left for the newest-wins script.

        Per group, on one connection: ``WATCH`` + ``EXISTS`` of its keys; if none exists,
        ``MULTI``, one ``HSET`` (and ``EXPIRE``) per key, ``EXEC``.  A key that another client
        writes between the two makes ``EXEC`` abort, so the group goes to the script and
        newest-wins holds.  At the first group with a stored key, the probing stops and the
        rest of the chunk goes to the script: a re-materialisation (every key stored) costs
        one probe per chunk, and the ``HSET``s are only built once a group is fresh.
        """
        from redis.exceptions import ResponseError

        n = len(chunk)
        per_key = 2 if self._ttl > 0 else 1
        rows = None
        left: list[tuple[int, int]] = []
        groups = [(a, min(a + self.fresh_group, n)) for a in range(0, n, self.fresh_group)]

        def probe(i: int) -> list:
            """WATCH + EXISTS of group ``i``: sent behind the previous group's EXEC (which
            clears the old watches), so that each group costs one round trip."""
            if i >= len(groups):
                return []
            a, b = groups[i]
            span = col.span(keys, a, b)
            return [b"*%d\r\n$5\r\nWATCH\r\n" % (1 + b - a), span, b"*%d\r\n$6\r\nEXISTS\r\n" % (1 + b - a), span]

        with _borrowed(client) as conn:
            conn.send_packed_command(probe(0))
            read = _replies(conn)
            for i, (a, b) in enumerate(groups):
                m = b - a
                read()
                if int(read()) != 0:
                    conn.send_packed_command([b"*1\r\n$7\r\nUNWATCH\r\n"])
                    read()
                    left.append((a, n))
                    break
                if rows is None:
                    rows = self._hset_rows(keys, stamps, chunk)
                self._watched(a, b)
                conn.send_packed_command([b"*1\r\n$5\r\nMULTI\r\n", col.span(rows, a, b),
                                          b"*1\r\n$4\r\nEXEC\r\n", *probe(i + 1)])
                failure = None
                for _ in range(1 + m * per_key):  # +OK, then QUEUED per command
                    try:
                        read()
                    except ResponseError as exc:  # keep draining: replies must stay in step
                        failure = failure or exc
                done = read()  # None: a watched key changed, nothing was written
                if failure is not None:
                    raise failure
                if done is None:
                    left.append((a, b))
                    continue
                self.written += m
                self.fresh_groups += 1
        return left


_RDB_VERSION = 10  # the DUMP format of Redis 7.0, which later versions read too


def _lp_entry(data: bytes) -> bytes:
    """One listpack string entry (encoding, bytes, back-length), as Redis writes it."""
    size = len(data)
    head = bytes([0x80 | size]) if size < 64 else bytes([0xE0 | (size >> 8), size & 0xFF])
    entry = len(head) + size
    back = bytes([entry]) if entry <= 127 else bytes([entry >> 7, (entry & 127) | 128])
    return head + data + back


def _lp_entries(values: pa.Array) -> tuple[list, np.ndarray]:
    """:func:`col.join` parts making each element a listpack string entry (< 4096 bytes), and
    each entry's size."""
    n = len(values)
    lens = col.lengths(values).astype(np.int64)
    small = lens < 64
    head = np.empty((n, 2), dtype=np.uint8)
    head[:, 0] = np.where(small, 0x80 | lens, 0xE0 | (lens >> 8))
    head[:, 1] = lens & 0xFF
    head_len = np.where(small, 1, 2)
    entry = head_len + lens
    back = np.empty((n, 2), dtype=np.uint8)
    short = entry <= 127
    back[:, 0] = np.where(short, entry, entry >> 7)
    back[:, 1] = (entry & 127) | 128
    back_len = np.where(short, 1, 2)
    return [col.ragged_rows(head, head_len), values, col.ragged_rows(back, back_len)], entry + back_len


def _rdb_len(lengths: np.ndarray) -> pa.Array:
    """RDB length prefixes (6-bit, 14-bit or 32-bit forms) of ``lengths``."""
    n = len(lengths)
    mat = np.zeros((n, 5), dtype=np.uint8)
    one, two = lengths < 64, (lengths >= 64) & (lengths < 16384)
    mat[:, 0] = np.where(one, lengths, np.where(two, 0x40 | (lengths >> 8), 0x80))
    mat[:, 1] = np.where(two, lengths & 0xFF, 0)
    big = col.le_bytes(lengths, ">u4")
    four = ~(one | two)
    mat[four, 1:] = big[four]
    return col.ragged_rows(mat, np.where(one, 1, np.where(two, 2, 5)))


def _bulk_parts(arr) -> list:
    """:func:`col.join` parts that make each element of ``arr`` a RESP bulk string."""
    return [col.const(b"$"), col.decimal(col.lengths(arr)), col.const(b"\r\n"), arr, col.const(b"\r\n")]


def _resp_bulks(*arrays):
    """Row ``i``: each array's element ``i`` as a RESP bulk string, concatenated."""
    return col.join(*(p for arr in arrays for p in _bulk_parts(arr)))


def _pipeline(client, commands: list[list], window_bytes: int) -> int:
    """Send packed EVALSHA commands in windows of ``window_bytes`` and read every reply.

    A server that lost the script (restart, SCRIPT FLUSH) answers NOSCRIPT: the
    script is loaded again and those commands resent, which is safe because a
    rewrite with the same timestamp stores the same bytes.  Any other error reply
    is raised once all replies are read, so the connection stays usable.
    """
    from redis.exceptions import NoScriptError, ResponseError

    written = 0
    with _borrowed(client) as conn:
        read = _replies(conn)
        pending = list(range(len(commands)))
        for _ in range(2):
            retry, failure = [], None
            for window in _windows(pending, commands, window_bytes):
                conn.send_packed_command([b"".join(b for i in window for b in commands[i])])
                for i in window:
                    try:
                        written += int(read())
                    except NoScriptError:
                        retry.append(i)
                    except ResponseError as exc:  # keep draining: replies must stay in step
                        failure = failure or exc
            if failure is not None:
                raise failure
            if not retry:
                return written
            client.script_load(UPSERT_LUA)  # same text, same sha: the packed commands stay valid
            pending = retry
        raise RuntimeError("Redis kept answering NOSCRIPT after SCRIPT LOAD")


@contextlib.contextmanager
def _borrowed(client):
    """A pooled connection for raw pipelining.  Disconnected (not reused) if anything goes
    wrong mid-stream: its unread replies would otherwise reach the pool's next user."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _windows(order: list[int], commands: list[list], limit: int):
    window, size = [], 0
    for i in order:
        window.append(i)
        size += sum(len(b) for b in commands[i])
        if size >= limit:
            yield window
            window, size = [], 0
    if window:
        yield window

