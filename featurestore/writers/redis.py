"""Redis online writer: Feast's hash layout, written by a Lua script over hand-built RESP.

Layout (``feast.infra.online_stores.redis``): one hash per entity and project,
key ``serialize_entity_key(...) + project``; field ``mmh3("{view}:{feature}")``
(4 bytes LE) holds ``ValueProto`` bytes; field ``_ts:{view}`` holds a serialised
``google.protobuf.Timestamp``; ``key_ttl_seconds`` re-arms ``EXPIRE`` on every
write.

Newest wins inside Redis, in one round trip: :data:`UPSERT_LUA` reads the
stored ``_ts:{view}`` of each key, decodes it, and only ``HSET``s (and
``EXPIRE``s) when the new timestamp is not older.  Each ``EVALSHA`` carries up to
a hundred entities; commands are packed by :mod:`._columns` into RESP buffers
directly from Arrow, so Python does no per-value work, and are pipelined in
windows of a few megabytes.  Only standalone Redis (``redis_type: redis``) is
handled here; cluster and sentinel go to the fallback writer.
"""

from __future__ import annotations

from featurestore.repo import WriteTarget
from featurestore.writers import _columns as col
from featurestore.writers._encode import timestamp_proto
from featurestore.writers.base import Batch, EncodingWriter

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


class RedisWriter(EncodingWriter):
    """Pipelined ``EVALSHA`` of :data:`UPSERT_LUA`, ``keys_per_call`` entities per call."""

    def __init__(
        self,
        target: WriteTarget,
        *,
        chunk_rows: int = 20_000,
        keys_per_call: int | None = None,
        window_bytes: int = 4 << 20,
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
        self._client = None
        self._sha: bytes | None = None
        self.written = 0  # keys actually updated (stale rows excluded), for observability
        self._argv_head = self._static_argv()

    def _static_argv(self) -> bytes:
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        cfg = self.target.repo_config
        view = compute_versioned_name(self.target.feature_view, cfg.registry.enable_online_feature_view_versioning)
        ttl = cfg.online_store.key_ttl_seconds or 0
        fields = [_mmh3(f"{view}:{name}") for name in self.target.features]
        return _bulk(b"%d" % len(fields), f"_ts:{view}".encode(), b"%d" % ttl, *fields)

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
        payload = _resp_bulks(timestamp_proto(chunk.event_us), *(f.proto_bytes for f in chunk.features))
        client = self._redis()
        n, step = len(chunk), self.keys_per_call
        commands = [(start, min(start + step, n)) for start in range(0, n, step)]
        nf = len(self.target.features)

        def pack(start: int, stop: int) -> list:
            m = stop - start
            head = b"*%d\r\n" % (3 + m + 3 + nf + m * (nf + 1)) + _bulk(b"EVALSHA", self._sha, b"%d" % m)
            return [head, col.span(keys, start, stop), self._argv_head, col.span(payload, start, stop)]

        self.written += _pipeline(client, [pack(*c) for c in commands], self.window_bytes)


def _resp_bulks(*arrays):
    """Row ``i``: each array's element ``i`` as a RESP bulk string, concatenated."""
    parts = []
    for arr in arrays:
        parts += [col.const(b"$"), col.decimal(col.lengths(arr)), col.const(b"\r\n"), arr, col.const(b"\r\n")]
    return col.join(*parts)


def _pipeline(client, commands: list[list], window_bytes: int) -> int:
    """Send packed EVALSHA commands in windows of ``window_bytes`` and read every reply.

    A server that lost the script (restart, SCRIPT FLUSH) answers NOSCRIPT: the
    script is loaded again and those commands resent, which is safe because a
    rewrite with the same timestamp stores the same bytes.  Any other error reply
    is raised once all replies are read, so the connection stays usable.
    """
    from redis.exceptions import NoScriptError, ResponseError

    pool = client.connection_pool
    conn = pool.get_connection()
    written = 0
    try:
        pending = list(range(len(commands)))
        for _ in range(2):
            retry, failure = [], None
            for window in _windows(pending, commands, window_bytes):
                conn.send_packed_command([b"".join(b for i in window for b in commands[i])])
                for i in window:
                    try:
                        written += int(conn.read_response())
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

