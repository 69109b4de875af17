"""New keys by plain ``HSET``s in ``MULTI``/``EXEC``, guarded by ``WATCH``.

Where ``RESTORE`` cannot create a new key (servers before Redis 7, CONFIG or
RESTORE refused by ACLs, a hash too big for a listpack), plain ``HSET``s of keys
known to be absent cost the server less than the newest-wins script, which
reads each key's stored timestamp first.  Absence is checked and kept under
``WATCH``: per group of keys, ``WATCH`` + ``EXISTS``; if none exists, ``MULTI``,
one ``HSET`` (and ``EXPIRE``) per key, ``EXEC``.  A key that another client
writes between the two makes ``EXEC`` abort without writing anything, so that
group goes back to the caller for the stored-key path and newest-wins holds.

Groups stay small: an ``EXEC`` blocks the server like a script does, and Redis
7.0's ``WATCH`` scans the client's watched keys for each key it adds.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._resp import borrowed, bulk, bulk_parts, replies


def hset_rows(keys, ts_field: bytes, stamps: pa.Array, fields: list[bytes], values: list[pa.Array],
              ttl: int, limits: tuple[int, int] | None = None) -> pa.Array:
    """Row ``i``: ``HSET`` of hash ``keys[i]`` (RESP bulk rows) with ``ts_field`` set to
    ``stamps[i]`` and each ``fields[j]`` to ``values[j][i]``, then ``EXPIRE key ttl`` when
    ``ttl`` > 0, as RESP.  With more fields than ``limits`` (``hash-max-listpack-entries`` and
    ``-value``) allow a listpack, the ``HSET`` also sets ``_skyfeast_widen`` to a value longer than
    the value limit, which makes Redis create a hashtable before inserting (inserting hundreds of
    fields into a listpack is quadratic), and an ``HDEL`` of it follows: :func:`commands_per_key`."""
    wide = widens(len(fields), limits)
    parts = [col.const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(fields) + 1 + wide))), keys]
    if wide:
        parts.append(col.const(bulk(WIDEN, b"w" * (limits[1] + 1))))
    parts += [col.const(bulk(ts_field)), *bulk_parts(stamps)]
    for field, value in zip(fields, values):
        parts += [col.const(bulk(field)), *bulk_parts(value)]
    if wide:
        parts += [col.const(b"*3\r\n$4\r\nHDEL\r\n"), keys, col.const(bulk(WIDEN))]
    if ttl > 0:
        parts += [col.const(b"*3\r\n$6\r\nEXPIRE\r\n"), keys, col.const(bulk(b"%d" % ttl))]
    return col.join(*parts)


WIDEN = b"_skyfeast_widen"  # the field set and deleted at once to make Redis convert a hash (also in _lua)


def widens(n_fields: int, limits: tuple[int, int] | None) -> bool:
    """Whether a new hash of ``n_fields`` features (and the timestamp) outgrows a listpack."""
    return limits is not None and limits[0] > 0 and n_fields + 1 > limits[0]


def commands_per_key(n_fields: int, ttl: int, limits: tuple[int, int] | None) -> int:
    """Commands :func:`hset_rows` sends per key."""
    return 1 + (ttl > 0) + widens(n_fields, limits)


def write_new(client, keys, group: int, rows: Callable[[], pa.Array], per_key: int,
              watched: Callable[[int, int], None]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Write the groups of ``group`` keys none of which is stored yet; return the ``(start, stop)``
    ranges written and those left for the newest-wins stored-key path.

    ``keys`` are RESP bulk rows; ``rows()`` builds the commands of every row (:func:`hset_rows`),
    ``per_key`` commands each, and is called only once a group turns out fresh.  ``watched(start,
    stop)`` runs between a group's ``WATCH`` and its ``MULTI``.  At the first group with a stored
    key the probing stops and the rest goes to the stored-key path: a re-materialisation (every key stored)
    costs one probe.  An error reply is raised once the group's replies are read.
    """
    from redis.exceptions import ResponseError

    n = len(keys)
    built = None
    done: list[tuple[int, int]] = []
    left: list[tuple[int, int]] = []
    groups = [(a, min(a + group, n)) for a in range(0, n, group)]

    def probe(i: int) -> list:
        """WATCH + EXISTS of group ``i``: sent behind the previous group's EXEC (which
        clears the old watches), so that each group costs one round trip."""
        if i >= len(groups):
            return []
        a, b = groups[i]
        span = col.span(keys, a, b)
        return [b"*%d\r\n$5\r\nWATCH\r\n" % (1 + b - a), span, b"*%d\r\n$6\r\nEXISTS\r\n" % (1 + b - a), span]

    with borrowed(client) as conn:
        conn.send_packed_command(probe(0))
        read = replies(conn)
        for i, (a, b) in enumerate(groups):
            read()
            if int(read()) != 0:
                conn.send_packed_command([b"*1\r\n$7\r\nUNWATCH\r\n"])
                read()
                left.append((a, n))
                break
            if built is None:
                built = rows()
            watched(a, b)
            conn.send_packed_command([b"*1\r\n$5\r\nMULTI\r\n", col.span(built, a, b),
                                      b"*1\r\n$4\r\nEXEC\r\n", *probe(i + 1)])
            failure = None
            for _ in range(1 + (b - a) * per_key):  # +OK, then QUEUED per command
                try:
                    read()
                except ResponseError as exc:  # keep draining: replies must stay in step
                    failure = failure or exc
            ok = read()  # None: a watched key changed, nothing was written
            if failure is not None:
                raise failure
            (left if ok is None else done).append((a, b))
    return done, left
