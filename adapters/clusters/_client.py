"""``distributed.Client`` construction that is bounded in time and cleans up after itself when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator
from types import TracebackType

log = logging.getLogger("skyfeast.clusters")

# what starting a client may take beyond its ``timeout``: the ``identity`` call and the
# ``register-client`` reply that follow the connection, which a busy scheduler that is alive answers late
START_MARGIN = 1.0  # seconds, at least; as much as ``timeout`` itself when that is longer (start_limit)


def start_limit(timeout: float) -> float:
    """Seconds a client's whole start-up may take: ``timeout`` for the connection, and as long again (at least
    :data:`START_MARGIN`) for the replies after it."""
    return timeout + max(START_MARGIN, timeout)


class SchedulerTimeout(TimeoutError):
    """Starting a client took longer than :func:`start_limit` of its ``timeout``: typically a
    server that accepts the TCP connection and never answers. Neutral errors say so by ``address``."""

    def __init__(self, address: str | None, timeout: float, limit: float):
        self.address, self.timeout, self.limit = address, timeout, limit
        super().__init__(self.describe())

    def describe(self, *, with_address: bool = True) -> str:
        where = f"the scheduler at {self.address}" if with_address and self.address else "the scheduler"
        return (f"no answer from {where} within connect_timeout {self.timeout:g} s (gave up after "
                f"{self.limit:g} s): it accepted the connection but did not respond")


def open_client(*args, **kwargs):
    """``distributed.Client(*args, **kwargs)``, bounded in time; if that raises, the half-built client is closed here.

    distributed bounds the TCP connect by ``timeout`` but not the handshake read that follows it
    (``distributed.comm.core.connect``), and ``Client.start`` waits for its start-up without a
    deadline: a server that accepts the connection and never answers kept the caller waiting
    forever. Here the whole start-up is cut off after ``timeout`` (default: dask's
    ``distributed.comm.timeouts.connect``; None is the default too) and as long again (:func:`start_limit`), with :class:`SchedulerTimeout`,
    and the connection it hung on is closed.

    A Client whose ``__init__`` raised (scheduler unreachable, TLS refused) has
    already started its IO-loop thread, and is closed only by ``__del__`` when
    garbage collection gets to it, in whatever thread that happens. If that is
    the new IO-loop thread of the *next* client, the two wait on LoopRunner's
    class-wide lock and the next client fails after 10 s with a bare
    ``AssertionError`` (seen in tests/integration/test_cluster_tls.py). The
    exception is re-raised unchanged.
    """
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    timeout = kwargs.pop("timeout", None)  # None: dask's default, as if not given
    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
    else:
        kwargs["timeout"] = timeout
    timeout = parse_timedelta(timeout, "s")
    try:
        return _bounded(Client)(*args, _skyfeast_timeout=timeout, **kwargs)
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


@functools.cache
def _bounded(client_cls: type) -> type:
    """``client_cls`` whose (asynchronous) start-up gives up after :func:`start_limit` of ``_skyfeast_timeout``."""

    class BoundedClient(client_cls):
        def __init__(self, *args, _skyfeast_timeout: float, **kwargs):
            self._skyfeast_timeout = _skyfeast_timeout  # read by _start, which __init__ runs
            super().__init__(*args, **kwargs)

        async def _start(self, *args, **kwargs):
            limit = start_limit(self._skyfeast_timeout)
            task = asyncio.ensure_future(super()._start(*args, **kwargs))
            try:
                done, _ = await asyncio.wait({task}, timeout=limit)
            except asyncio.CancelledError:  # sync() cancels us on KeyboardInterrupt
                await _cancel(task)
                raise
            if task in done:
                return task.result()
            await _cancel(task)
            raise SchedulerTimeout(_address_of(self), self._skyfeast_timeout, limit)

    BoundedClient.__name__ = client_cls.__name__  # repr: <Client: scheduler=...>
    return BoundedClient


async def _cancel(task: asyncio.Future) -> None:
    """Cancel a start-up task and wait for it to end. A comm whose read or write is cancelled
    aborts its connection (``distributed.comm.tcp.TCP``), so the socket it hung on is closed now."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # whatever it ended with
        await task


def _address_of(client) -> str | None:
    for get in (lambda: client.scheduler.address, lambda: client.cluster.scheduler_address,
                lambda: client._start_arg):
        with contextlib.suppress(Exception):
            addr = get()
            if isinstance(addr, str):
                return addr
    return None


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
