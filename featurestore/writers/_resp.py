"""Hand-built RESP over a connection borrowed from redis-py's pool.

The Redis writer packs its commands itself (vectorised over Arrow columns by
:mod:`._columns`) and writes them to a pooled connection in large windows, then
reads exactly one reply per command it sent.  Two rules keep that safe:

* replies are read in order and every one is drained, even after an error
  reply, so the connection never holds a reply meant for an earlier command;
* a connection on which anything went wrong mid-stream is disconnected before
  it goes back to the pool, so its unread replies cannot reach the pool's next
  user.

Connection settings (db, password, TLS) are redis-py's, as parsed by Feast.
"""

from __future__ import annotations

import contextlib

from skyfeast.featurestore.writers import _columns as col


def bulk(*args: bytes) -> bytes:
    """``args`` as consecutive RESP bulk strings."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def bulk_parts(arr) -> list:
    """:func:`col.join` parts that make each element of ``arr`` a RESP bulk string."""
    lens = col.lengths(arr)
    if len(lens) and lens.min() == lens.max():  # one length (fixed-width values): one constant header
        return [col.const(b"$%d\r\n" % int(lens[0])), arr, col.const(b"\r\n")]
    return [col.const(b"$"), col.decimal(lens), col.const(b"\r\n"), arr, col.const(b"\r\n")]


def bulk_rows(*arrays):
    """Row ``i``: each array's element ``i`` as a RESP bulk string, concatenated."""
    return col.join(*(p for arr in arrays for p in bulk_parts(arr)))


@contextlib.contextmanager
def borrowed(client):
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


def replies(conn):
    """A function returning the next reply on ``conn`` (error replies raised as redis-py's).

    The writer reads hundreds of thousands of small replies (``QUEUED``, integers),
    and redis-py spends several microseconds of Python on each.  With hiredis
    installed (the ``redis`` extra), replies are read straight off the connection's
    socket into a private ``hiredis.Reader``: safe because the caller holds the
    connection (:func:`borrowed`) for the whole exchange and reads exactly the
    replies it asked for, so redis-py's own buffer is empty before and after.
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


def windows(order: list[int], commands: list[list], limit: int):
    """``order`` cut into runs whose packed ``commands`` add up to about ``limit`` bytes each
    (a run ends at the command that reaches the limit)."""
    window, size = [], 0
    for i in order:
        window.append(i)
        size += sum(len(b) for b in commands[i])
        if size >= limit:
            yield window
            window, size = [], 0
    if window:
        yield window
