"""Stored keys by plain ``HSET``s in ``MULTI``/``EXEC``: newest-wins checked by the client under ``WATCH``.

The newest-wins script (:mod:`._lua`) costs the server two to three times the
``HSET`` it guards: every field name and value crosses into Lua and back
(1,004 ``ARGV`` per key for a view of 500 features).  This path lets the client
do the check instead, per group of keys:

1. ``WATCH`` the keys, then ``HGET key _ts:{view}`` of each (and ``HLEN key``
   when the widening rule below needs it); sent behind the previous group's
   ``EXEC``, so a group costs one round trip;
2. decode the stored ``google.protobuf.Timestamp`` values (:func:`decode_timestamps`,
   vectorised) and keep the keys whose stored timestamp is absent or not newer
   than the new row's: the script's rule, so an equal timestamp rewrites;
3. ``MULTI``; ``HSET`` (and ``EXPIRE`` under ``key_ttl_seconds``) of each kept
   key; ``EXEC``.  A kept key that lacks this view's timestamp and whose fields
   and the view's pass ``hash-max-listpack-entries`` (the script's rule, "wide
   views" in :mod:`._lua`) gets an ``HSET`` of ``_skyfeast_widen`` before its
   ``HSET`` and an ``HDEL`` of it after, in the same ``MULTI``: Redis converts the
   listpack first instead of inserting hundreds of fields into it.

``EXEC`` aborts, writing nothing, when another client touched a watched key
after the ``WATCH``; that group goes back to the caller for the script, so
newest-wins holds under any concurrency.  Groups stay small: ``EXEC`` blocks the
server like a script call does, and Redis 7.0's ``WATCH`` scans the client's
watched keys for each key it adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._multi import WIDEN
from skyfeast.featurestore.writers._resp import borrowed, bulk, replies

_MULTI, _EXEC, _UNWATCH = b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n", b"*1\r\n$7\r\nUNWATCH\r\n"


def decode_timestamps(stored: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(seconds, nanos, present)`` of serialised ``google.protobuf.Timestamp`` values (None: absent).

    Parsed like the script's ``decode``: a one-byte tag, then a varint, field after field; tag 8
    is the seconds, tag 16 the nanos, others are skipped.  The script keeps a varint's low 42 bits
    (exact in a Lua double), which covers every valid Timestamp (years 1 to 9999: |seconds| <
    2**38), so both read the same values there."""
    n = len(stored)
    lens = np.fromiter((-1 if s is None else len(s) for s in stored), np.int64, n)
    present = lens >= 0
    lens[~present] = 0
    sec = np.zeros(n, np.int64)
    nanos = np.zeros(n, np.int64)
    width = int(lens.max()) if n else 0
    if width == 0:
        return sec, nanos, present
    mat = np.zeros((n, width), np.uint8)
    mat[np.arange(width) < lens[:, None]] = np.frombuffer(b"".join(s for s in stored if s), np.uint8)
    mat_t = np.ascontiguousarray(mat.T)
    tag = np.zeros(n, np.uint8)
    acc = np.zeros(n, np.uint64)
    shift = np.zeros(n, np.uint64)
    want_tag = np.ones(n, bool)
    seven, low = np.uint64(7), np.uint64(0x7F)
    for j in range(width):
        b = mat_t[j]
        valid = j < lens
        at_tag = valid & want_tag
        at_val = valid & ~want_tag
        if at_tag.any():
            tag = np.where(at_tag, b, tag)
            acc[at_tag] = 0
            shift[at_tag] = 0
        part = (b.astype(np.uint64) & low) << np.minimum(shift, np.uint64(63))
        acc = np.where(at_val, acc | part, acc)
        shift = shift + at_val.astype(np.uint64) * seven
        end = at_val & (b < 128)
        if end.any():
            signed = acc.view(np.int64)
            sec = np.where(end & (tag == 8), signed, sec)
            nanos = np.where(end & (tag == 16), signed, nanos)
        want_tag = (want_tag & ~at_tag) | end
    return sec, nanos, present


def not_older(new_sec: np.ndarray, new_nanos: np.ndarray, old_sec: np.ndarray, old_nanos: np.ndarray,
              present: np.ndarray) -> np.ndarray:
    """The script's rule: write when nothing is stored, or the new timestamp is not older."""
    return ~present | (new_sec > old_sec) | ((new_sec == old_sec) & (new_nanos >= old_nanos))


def widen_rows(keys: pa.Array, value_limit: int) -> tuple[pa.Array, pa.Array]:
    """Rows ``HSET key _skyfeast_widen <value longer than the limit>`` and rows ``HDEL key
    _skyfeast_widen``: sent before and after the key's ``HSET`` of its fields.  (Unlike the script,
    which deletes the field before its ``HSET``, this also widens a key that does not exist yet:
    an ``HDEL`` of its only field would delete it, and the ``HSET`` then build a listpack.)"""
    return (col.join(col.const(b"*4\r\n$4\r\nHSET\r\n"), keys, col.const(bulk(WIDEN, b"w" * (value_limit + 1)))),
            col.join(col.const(b"*3\r\n$4\r\nHDEL\r\n"), keys, col.const(bulk(WIDEN))))


class _Rows:
    """Rows of a RESP column built block by block (bounded memory), picked by absolute index."""

    def __init__(self, build: Callable[[int, int], pa.Array], block: int):
        self.build, self.block = build, block
        self.start = self.stop = -1
        self.data: memoryview | None = None
        self.offs: np.ndarray | None = None

    def pick(self, a: int, b: int, mask: np.ndarray) -> list:
        """The rows ``a..b-1`` where ``mask`` holds, as buffers (one when all do)."""
        if not (self.start <= a and b <= self.stop):
            self.start, self.stop = a, max(b, a + self.block)
            arr = self.build(a, self.stop)
            self.stop = a + len(arr)
            self.data, self.offs = col.span(arr, 0, len(arr)), col.offsets(arr) - col.offsets(arr)[0]
        offs, data, base = self.offs, self.data, a - self.start
        if mask.all():
            return [data[int(offs[base]):int(offs[base + b - a])]]
        return [data[int(offs[i]):int(offs[i + 1])] for i in (np.flatnonzero(mask) + base).tolist()]


def _drain(read, k: int) -> tuple[list, Exception | None]:
    """The next ``k`` replies (None for an error reply) and the first error: every reply is read,
    so the connection stays in step."""
    from redis.exceptions import ResponseError

    got, failure = [], None
    for _ in range(k):
        try:
            got.append(read())
        except ResponseError as exc:
            got.append(None)
            failure = failure or exc
    return got, failure


def write_guarded(client, keys: pa.Array, ts_field: bytes, ranges: list[tuple[int, int]], group: int, *,
                  new_sec: np.ndarray, new_nanos: np.ndarray, rows: Callable[[int, int], pa.Array], per_key: int,
                  n_fields: int, limits: tuple[int, int] | None, block: int,
                  watched: Callable[[int, int], None], depth: int = 2) -> tuple[int, int, int, list[tuple[int, int]]]:
    """Write rows ``ranges`` (``(start, stop)`` pairs) of a chunk to stored (or absent) keys, newest
    wins, in groups of ``group`` keys; return ``(keys written, groups written, groups aborted, the
    (start, stop) ranges of the aborted groups)``, the last for the script.

    ``keys`` are RESP bulk rows; ``new_sec``/``new_nanos`` each row's timestamp; ``rows(start,
    stop)`` builds the ``HSET`` (+ ``EXPIRE``) commands of those rows (``per_key`` commands each,
    :func:`._multi.hset_rows` without widening), called for ``block`` rows at a time and only once
    some key there is to be written.  ``watched(start, stop)`` runs between a group's ``HGET`` commands
    and its ``MULTI`` (a seam for the race test).  ``depth`` connections carry a group each at
    once, so that round trips overlap.  An error reply (a key of another type) is raised once the
    group's replies are read; the connections are then dropped (:func:`borrowed`).
    """
    from redis.exceptions import ResponseError

    entries = limits[0] if limits is not None else 0
    always_wide = entries > 0 and n_fields + 1 > entries  # no stored ts: widen whatever HLEN says
    need_len = entries > 0 and not always_wide
    per_probe = 2 if need_len else 1
    lead = b"*3\r\n$4\r\nHGET\r\n"
    ts_arg = col.const(bulk(ts_field))
    probe_parts = [col.const(lead), keys, ts_arg]
    if need_len:
        probe_parts += [col.const(b"*2\r\n$4\r\nHLEN\r\n"), keys]
    probes = col.join(*probe_parts)
    hsets = _Rows(rows, block)
    widen_set = _Rows(lambda a, b: widen_rows(keys.slice(a, b - a), limits[1])[0], block)
    widen_del = _Rows(lambda a, b: widen_rows(keys.slice(a, b - a), limits[1])[1], block)
    groups = [(s, min(s + group, b)) for a, b in ranges for s in range(a, b, group)]

    def probe(i: int) -> list:
        if i >= len(groups):
            return []
        a, b = groups[i]
        return [b"*%d\r\n$5\r\nWATCH\r\n" % (1 + b - a), col.span(keys, a, b), col.span(probes, a, b)]

    written = done = aborted = 0
    left: list[tuple[int, int]] = []
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(borrowed(client)) for _ in range(min(depth, len(groups)))]
        reads = [replies(conn) for conn in conns]
        for j, conn in enumerate(conns):
            conn.send_packed_command(probe(j), check_health=False)
        for i, (a, b) in enumerate(groups):
            # group i on connection i % depth: while the client reads and decides one group, the
            # server runs the others' probes and EXECs (a group alone costs a round trip)
            conn, read = conns[i % len(conns)], reads[i % len(conns)]
            got, failure = _drain(read, 1 + per_probe * (b - a))  # +OK of WATCH, then per key
            if failure is not None:
                raise failure
            old_sec, old_nanos, present = decode_timestamps(got[1::per_probe])
            go = not_older(new_sec[a:b], new_nanos[a:b], old_sec, old_nanos, present)
            after = probe(i + len(conns))
            if not go.any():
                conn.send_packed_command([_UNWATCH, *after], check_health=False)
                read()
                continue
            if always_wide:
                wide = go & ~present
            elif need_len:
                wide = go & ~present & (np.array(got[2::2], np.int64) + n_fields + 1 > entries)
            else:
                wide = np.zeros(b - a, bool)
            watched(a, b)
            parts = [_MULTI]
            widened = wide.any()
            if widened:
                parts += widen_set.pick(a, b, wide)
            parts += hsets.pick(a, b, go)
            if widened:
                parts += widen_del.pick(a, b, wide)
            conn.send_packed_command([*parts, _EXEC, *after], check_health=False)
            kept = int(go.sum())
            _, failure = _drain(read, 1 + kept * per_key + 2 * int(wide.sum()))  # +OK, then QUEUED per command
            try:
                result = read()  # None: a watched key changed, nothing was written
            except ResponseError as exc:
                result, failure = [], failure or exc
            if failure is None and result is not None:
                failure = next((r for r in result if isinstance(r, Exception)), None)
            if failure is not None:
                raise failure if isinstance(failure, ResponseError) else ResponseError(str(failure))
            if result is None:
                aborted += 1
                left.append((a, b))
            else:
                done += 1
                written += kept
    return written, done, aborted, left
