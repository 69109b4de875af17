"""``RESTORE`` commands creating Feast's hashes whole: DUMP payloads built from Arrow columns.

A ``RESTORE key ttl payload`` recreates a key from the bytes ``DUMP`` returns.
:func:`restore_rows` builds that payload for every row at once: RDB object type
16 (a hash stored as a listpack), the listpack itself (header with total bytes
and entry count, one string entry per field and per value, end byte), the RDB
version and the CRC64 of everything before it, in the byte order Redis uses.
The hash it creates has the fields, values and TTL that Feast's ``HSET`` and
``EXPIRE`` would leave, in the encoding ``HSET`` picks for a hash that small:
when some hash would exceed the server's ``hash-max-listpack-*`` limits,
``HSET`` would build a hashtable instead, so no payload is built and the caller
writes those rows another way.

Listpacks and RDB version 10 appeared in Redis 7.0, which later versions read
too; :func:`listpack_limits` answers None for older servers.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa

from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._resp import bulk, bulk_parts

RDB_VERSION = 10  # the DUMP format of Redis 7.0


def listpack_limits(client) -> tuple[int, int] | None:
    """The server's ``hash-max-listpack-entries`` and ``-value``, or None if it will not say
    (CONFIG disabled, as on some managed services) or is older than Redis 7 (no listpacks)."""
    try:
        if int(str(client.info("server").get("redis_version", "0")).split(".")[0]) < 7:
            return None
        got = client.config_get("hash-max-listpack-*")
        return int(got["hash-max-listpack-entries"]), int(got["hash-max-listpack-value"])
    except Exception:
        return None


def restore_rows(keys, names: list[bytes], values: list[pa.Array], ttl_ms: int, limits: tuple[int, int],
                 version: int = RDB_VERSION) -> pa.Array | None:
    """Row ``i``: ``RESTORE key ttl payload`` (RESP, no ``REPLACE``) creating hash ``keys[i]`` with
    field ``names[j]`` set to ``values[j][i]``, in that order; or None when some hash would not be a
    listpack under ``limits`` (:func:`listpack_limits`).  ``keys`` are RESP bulk rows; ``ttl_ms`` 0
    means no expiry; ``version`` is the RDB version the payload claims."""
    entries, value_limit = limits
    value_limit = min(value_limit, 4095)  # :func:`_lp_entries` writes the 6- and 12-bit string forms only
    if len(names) > entries or max(len(f) for f in names) > value_limit:
        return None
    if any(len(v) and int(col.lengths(v).max()) > value_limit for v in values):
        return None
    n = len(keys)
    total = np.full(n, 7, dtype=np.int64)  # listpack header (6) + end byte
    body = []
    for name, value in zip(names, values):
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
                    col.const(struct.pack("<H", version)))
    payload = col.join(dump, col.fixed(col.le_bytes(col.crc64(dump), "<u8")))
    return col.join(col.const(b"*4\r\n$7\r\nRESTORE\r\n"), keys, col.const(bulk(b"%d" % ttl_ms)),
                    *bulk_parts(payload))


def _lp_entry(data: bytes) -> bytes:
    """One listpack string entry (encoding, bytes, back-length), as Redis writes it."""
    size = len(data)
    head = bytes([0x80 | size]) if size < 64 else bytes([0xE0 | (size >> 8), size & 0xFF])
    entry = len(head) + size
    back = bytes([entry]) if entry <= 127 else bytes([entry >> 7, (entry & 127) | 128])
    return head + data + back


def _lp_entries(values: pa.Array) -> tuple[list, np.ndarray]:
    """:func:`col.join` parts making each element (< 4096 bytes) a listpack string entry, and
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
