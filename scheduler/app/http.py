"""The daemon's HTTP server: ``/healthz``, ``/readyz`` and ``/metrics`` (see docs/http.md).

A FastAPI app served by uvicorn on its own daemon thread and event loop. Handlers are plain
functions (run in uvicorn's thread pool) that read in-memory state, or make one trivial
ledger query with a deadline; nothing here waits on, or locks against, the dispatch thread.

* ``/healthz``: 200 while no thread :class:`~skyfeast.scheduler.control.liveness.Liveness`
  tracks has died or stalled (beyond :func:`~skyfeast.scheduler.control.liveness.staleness_bounds`);
  503 naming them otherwise. While a graceful shutdown drains, the dispatch thread is not
  expected to beat.
* ``/readyz``: 200 when the ledger answers ``SELECT`` of its schema version within
  :data:`READY_DEADLINE` seconds (at most one such query in flight), and the daemon is not
  stopping; 503 otherwise. Both say ``leader`` or ``standby`` and the daemon's identity.
* ``/metrics``: :meth:`~skyfeast.scheduler.app.metrics.Metrics.render`.
* ``/api/...``: the JSON API and its token-guarded actions (:mod:`skyfeast.scheduler.app.routes`),
  and ``/`` (``/status``) the HTML status page (:mod:`skyfeast.scheduler.app.page`), when the
  daemon passes an :class:`~skyfeast.scheduler.app.routes.Api`.

:func:`bind` takes the port before the daemon opens its runtime, so a port in use or a bad
address is a :class:`~skyfeast.scheduler.errors.UsageError` (exit 2) before any dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from skyfeast.scheduler.config.models import parse_http_address
from skyfeast.scheduler.errors import UsageError

log = logging.getLogger("skyfeast.http")
READY_DEADLINE = 1.5  # seconds the ledger gets to answer a readiness query
# seconds a client has to send a whole request (head and body) after it connects or after the
# response to its previous one; a connection that has not is answered 408 and closed
REQUEST_DEADLINE = 10.0
# open connections at most; one more is closed as soon as it is accepted (a client that opens many and
# sends nothing holds each for REQUEST_DEADLINE at most, but a file descriptor each until then)
MAX_CONNECTIONS = 256


def bind(address: str) -> socket.socket:
    """A listening TCP socket at ``HOST:PORT``; :class:`UsageError` (one line) if it cannot be had."""
    try:
        host, port = parse_http_address(address)
    except ValueError as exc:
        raise UsageError(f"--http: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--http {address}: cannot resolve {host!r}: {exc}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--http {address}: cannot listen there: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def build_app(*, daemon, liveness, ledger, metrics, bounds: dict[str, float], api=None):
    """The FastAPI app over one daemon's state; with ``api`` (a :class:`~skyfeast.scheduler.app.routes.Api`),
    also ``/api/...`` and the status page."""
    app = FastAPI(title="skyfeast daemon", docs_url=None, redoc_url=None, openapi_url=None)
    ready_pool = ThreadPoolExecutor(1, thread_name_prefix="skyfeast-ready")
    last: list[Future | None] = [None]
    lock = threading.Lock()

    def role() -> str:
        return "leader" if daemon.is_leader else "standby"

    # the probes are coroutines: they run on the event loop, not in the thread pool that API handlers can
    # fill (a flood of slow reads queued /healthz behind them for 4-18 s, enough for a liveness probe to kill)
    @app.get("/healthz")
    async def healthz():
        stopping = daemon.stop.is_set()
        dead, stalled = liveness.failing(bounds, stopping=stopping)
        ok = not dead and not stalled
        body = {"status": "ok" if ok else "failing", "dead": dead, "stalled": stalled,
                "threads": {k: round(v, 1) for k, v in liveness.ages().items()}, "bounds": bounds,
                "stopping": stopping, "identity": daemon.identity}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz")
    async def readyz():
        with lock:
            prev = last[0]
            if prev is not None and not prev.done():
                fut, waiting = prev, True  # a hung ledger holds one thread, not one per probe
            else:
                fut, waiting = ready_pool.submit(ledger.schema_version), False
                last[0] = fut
        error = None
        if waiting:
            error = "the previous readiness query is still waiting for the ledger"
        else:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), READY_DEADLINE)
            except (asyncio.TimeoutError, FutureTimeout):
                error = f"the ledger did not answer within {READY_DEADLINE} s"
            except Exception as exc:  # any ledger failure: not ready
                error = f"{type(exc).__name__}: {exc}"
        stopping = daemon.stop.is_set()
        if stopping and error is None:
            error = "stopping"
        body = {"ready": error is None, "role": role(), "identity": daemon.identity,
                "ledger": "ok" if error is None or error == "stopping" else "failing"}
        if error is not None:
            body["error"] = error
        return JSONResponse(body, status_code=200 if error is None else 503)

    @app.get("/metrics")
    def prometheus(request: Request):
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    if api is not None:
        from skyfeast.scheduler.app.page import install_page
        from skyfeast.scheduler.app.routes import install

        install(app, api)
        install_page(app, api)
    app.state.ready_pool = ready_pool
    return app


_TIMEOUT_BODY = b'{"error": "the request did not arrive within %g s"}'


def deadline_protocol(deadline: float, max_connections: int = MAX_CONNECTIONS):
    """uvicorn's HTTP protocol (httptools when installed, else h11: what its ``http="auto"`` picks), with
    a deadline for each request to arrive whole: uvicorn has none for a request's head or body, so a
    client that sent half a request and then nothing held its connection (and a file descriptor) for
    good. Once a second each connection checks whether it is still waiting on its client (no request
    yet, or a body not yet received) ``deadline`` seconds or more after it connected or after its
    previous response completed; if so, it answers 408 when no response has begun, and closes. A
    request being handled is never cut short. A client that stops reading its response for
    ``deadline`` seconds (the server's write buffer stays full) is cut off too: its handler would
    otherwise wait for it for good. A connection beyond ``max_connections`` open ones is closed at once,
    before it is read (the first such refusal in a minute is logged as a warning)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is not installed
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    refused = {"logged": float("-inf")}  # when a refusal was last logged

    class DeadlineProtocol(Base):
        _since = 0.0
        _timer = None
        _stalled_since: float | None = None  # when the client last stopped reading what is sent to it

        def pause_writing(self) -> None:
            self._stalled_since = self.loop.time()
            super().pause_writing()

        def resume_writing(self) -> None:
            self._stalled_since = None
            super().resume_writing()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)  # counted in server_state.connections from here
            if len(self.server_state.connections) > max_connections:
                now = self.loop.time()
                if now - refused["logged"] >= 60:
                    refused["logged"] = now
                    log.warning("closing new connections: %d are open, the limit (first: %s)",
                                max_connections, self._peer())
                transport.abort()
                return
            self._since = self.loop.time()
            self._timer = self.loop.call_later(1.0, self._check)

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            self._since = self.loop.time()  # the next request's time starts now
            super().on_response_complete()

        def _peer(self) -> str:
            return "%s:%d" % tuple(self.client[:2]) if self.client else "?"

        def _waiting_on_client(self) -> bool:
            cycle = self.cycle
            return cycle is None or cycle.response_complete or cycle.more_body

        def _check(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._stalled_since is not None and self.loop.time() - self._stalled_since >= deadline:
                log.info("closed a connection from %s: it stopped reading its response for %g s", self._peer(), deadline)
                self.transport.abort()  # what it has not read is dropped; the handler sees a disconnect
                return
            if self._waiting_on_client() and self.loop.time() - self._since >= deadline:
                cycle = self.cycle
                if cycle is None or cycle.response_complete or not cycle.response_started:
                    body = _TIMEOUT_BODY % deadline
                    self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                         b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                log.info("closed a connection from %s: no whole request within %g s", self._peer(), deadline)
                self.transport.close()
                return
            self._timer = self.loop.call_later(1.0, self._check)

    return DeadlineProtocol


class HttpServer:
    """uvicorn serving ``app`` on an already bound socket, in a daemon thread; each request must
    arrive whole within ``request_deadline`` seconds (:func:`deadline_protocol`)."""

    def __init__(self, sock: socket.socket, request_deadline: float | None = None, max_connections: int | None = None):
        self.sock = sock
        self.address = sock.getsockname()[:2]
        self.request_deadline = REQUEST_DEADLINE if request_deadline is None else request_deadline
        self.max_connections = MAX_CONNECTIONS if max_connections is None else max_connections
        self._server = None
        self._thread: threading.Thread | None = None
        self._app = None

    def start(self, app) -> None:
        import uvicorn

        self._app = app
        # proxy_headers off: the TCP peer decides who a caller is (docs/http.md), never an X-Forwarded-For
        # header, which uvicorn would otherwise believe from 127.0.0.1
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, proxy_headers=False,
                                http=deadline_protocol(self.request_deadline, self.max_connections), ws="none")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="skyfeast-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (at most a few seconds); the socket is closed."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._app is not None:
            self._app.state.ready_pool.shutdown(wait=False, cancel_futures=True)
        self.sock.close()


__all__ = ["MAX_CONNECTIONS", "READY_DEADLINE", "REQUEST_DEADLINE", "HttpServer", "bind", "build_app", "deadline_protocol"]
