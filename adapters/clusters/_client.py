"""``distributed.Client`` construction that cleans up after itself when it fails."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType

log = logging.getLogger("skyfeast.clusters")


def open_client(*args, **kwargs):
    """``distributed.Client(*args, **kwargs)``; if that raises, the half-built client is closed here.

    A Client whose ``__init__`` raised (scheduler unreachable, TLS refused) has
    already started its IO-loop thread, and is closed only by ``__del__`` when
    garbage collection gets to it, in whatever thread that happens. If that is
    the new IO-loop thread of the *next* client, the two wait on LoopRunner's
    class-wide lock and the next client fails after 10 s with a bare
    ``AssertionError`` (seen in tests/integration/test_cluster_tls.py). The
    exception is re-raised unchanged.
    """
    from distributed import Client

    try:
        return Client(*args, **kwargs)
    except BaseException as exc:
        for client in _clients_in(exc, Client):
            try:
                client.close(timeout=2)  # status becomes "closed": a later __del__ does nothing
            except Exception:
                log.debug("closing a client that failed to start", exc_info=True)
            # close() skips this when the failed start already marked the client closed
            with contextlib.suppress(Exception):
                client._loop_runner.stop()
        raise


def _clients_in(exc: BaseException, cls: type) -> Iterator:
    """Each ``cls`` instance that is ``self`` in a frame of ``exc``'s traceback chain (once)."""
    seen: set[int] = set()
    chain: BaseException | None = exc
    visited: set[int] = set()
    while chain is not None and id(chain) not in visited:
        visited.add(id(chain))
        tb: TracebackType | None = chain.__traceback__
        while tb is not None:
            obj = tb.tb_frame.f_locals.get("self")
            if isinstance(obj, cls) and id(obj) not in seen:
                seen.add(id(obj))
                yield obj
            tb = tb.tb_next
        chain = chain.__cause__ or chain.__context__
