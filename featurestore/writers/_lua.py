"""Newest wins inside Redis: :data:`UPSERT_LUA` and its pipelined ``EVALSHA`` calls.

For each key the script reads the stored ``_ts:{view}`` field, decodes that
``google.protobuf.Timestamp``, and ``HSET``s the new fields (then ``EXPIRE``s
under a TTL) only when the new timestamp is not older, so a late or replayed
row never overwrites newer data and an equal timestamp rewrites the same bytes.
A script runs atomically, so no other client can write a key between the check
and the ``HSET``.  One call carries many keys, one round trip for all of them.

Commands are packed from RESP rows built by the caller (keys and
``timestamp, value_1..value_n`` per key) without per-value Python work, and
sent in windows of a few megabytes by :func:`run`.

The writer sends stored keys here only when its cheaper guarded ``HSET`` path
(:mod:`._guard`, same rule, checked by the client under ``WATCH``) lost a race
with another client, or when that path is turned off (``guard_group=0``).

**Wide views.**  A stored hash small enough to be a listpack (``hash-max-listpack-entries``)
that receives more new fields than it has room for would pay for each field a scan of the
listpack and a move of its tail (quadratic: ~3.5 ms of server time per key for 500 fields,
measured), and Redis 7.0 turns it into a hashtable only after the insert that passes the
limit.  So when a key lacks this view's timestamp (the view's fields are new to it) and its
fields plus the view's exceed the limit, the script first makes Redis convert it: it sets
and at once deletes a field ``_skyfeast_widen`` holding a value longer than
``hash-max-listpack-value``.  The stored fields and values end exactly as Feast's ``HSET``
leaves them (the script is atomic: no client sees the extra field), in the encoding Redis
would have reached anyway.
"""

from __future__ import annotations

from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._resp import borrowed, bulk, replies, windows

# KEYS: hash keys.  ARGV: n_features, ts_field, ttl, listpack entries limit (0: never widen),
# a value longer than the listpack value limit, field names..., then per key: serialised
# Timestamp, value_1..value_n.  Returns the number of keys written.
UPSERT_LUA = r"""
local nf, ts_field, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local limit, long = tonumber(ARGV[4]), ARGV[5]
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
for j = 1, nf do args[2 * j + 1] = ARGV[5 + j] end
local written, base = 0, 5 + nf
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
    if not old and limit > 0 and redis.call('HLEN', KEYS[k]) + nf + 1 > limit then
      redis.call('HSET', KEYS[k], '_skyfeast_widen', long)  -- see "Wide views" above
      redis.call('HDEL', KEYS[k], '_skyfeast_widen')
    end
    args[2] = new
    for j = 1, nf do args[2 * j + 2] = ARGV[o + 1 + j] end
    redis.call('HSET', KEYS[k], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
    written = written + 1
  end
end
return written
"""

MAX_FEATURES = 3_000  # Lua's unpack() limit is ~8000 values; HSET gets 2 per feature


def argv_head(ts_field: bytes, ttl: int, fields: list[bytes], limits: tuple[int, int] | None = None) -> bytes:
    """The ARGV every call starts with: feature count, timestamp field, TTL, the server's listpack
    limits (``hash-max-listpack-entries`` and ``-value``; None: unknown, never widen) as the
    entries limit and a value one byte longer than the value limit, then the field names."""
    entries, value = limits if limits is not None else (0, 0)
    return bulk(b"%d" % len(fields), ts_field, b"%d" % ttl, b"%d" % entries, b"w" * (value + 1), *fields)


def calls(sha: bytes, head: bytes, nf: int, keys, payload, ranges: list[tuple[int, int]],
          per_call: int) -> list[list]:
    """Packed ``EVALSHA`` commands writing rows ``ranges`` (``(start, stop)`` pairs), ``per_call``
    keys each.  ``keys`` and ``payload`` are RESP rows (:func:`._resp.bulk_rows`): the hash key, and
    the timestamp followed by the ``nf`` feature values; ``head`` is :func:`argv_head`'s."""

    def pack(start: int, stop: int) -> list:
        m = stop - start
        cmd = b"*%d\r\n" % (3 + m + 5 + nf + m * (nf + 1)) + bulk(b"EVALSHA", sha, b"%d" % m)
        return [cmd, col.span(keys, start, stop), head, col.span(payload, start, stop)]

    return [pack(s, min(s + per_call, b)) for a, b in ranges for s in range(a, b, per_call)]


def run(client, commands: list[list], window_bytes: int) -> int:
    """Send packed ``EVALSHA`` commands in windows of ``window_bytes``, read every reply and
    return the number of keys written (stale rows excluded).

    A server that lost the script (restart, SCRIPT FLUSH) answers NOSCRIPT: the
    script is loaded again and those commands resent, which is safe because a
    rewrite with the same timestamp stores the same bytes.  Any other error reply
    is raised once all replies are read, so the connection stays usable.
    """
    from redis.exceptions import NoScriptError, ResponseError

    written = 0
    with borrowed(client) as conn:
        read = replies(conn)
        pending = list(range(len(commands)))
        for _ in range(2):
            retry, failure = [], None
            for window in windows(pending, commands, window_bytes):
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
