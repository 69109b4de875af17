"""Fixtures of the unit tests that talk to the daemon's HTTP server."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest


@pytest.fixture
def http_app():
    """``start(api, host="127.0.0.1", metrics=None)`` serves the daemon's app (health, metrics, ``/api``
    and the status page) over ``api`` (a :class:`~skyfeast.scheduler.app.routes.Api` on a real ledger)
    from the real uvicorn thread, on a free port of ``host``. The stand-ins are the daemon (a
    leader that is not stopping) and its liveness tracker. Returns ``base`` (the server's URL),
    ``server``, ``metrics`` (attached to the daemon, the pool and the ledger) and ``daemon``; every
    server started is closed after the test."""
    from skyfeast.scheduler.app.http import HttpServer, bind, build_app
    from skyfeast.scheduler.app.metrics import Metrics
    from skyfeast.scheduler.control.liveness import Liveness

    started: list[HttpServer] = []

    def start(api, *, host: str = "127.0.0.1", metrics: Metrics | None = None) -> SimpleNamespace:
        daemon = SimpleNamespace(is_leader=True, identity="host:1:abc", stop=threading.Event(), lease_renewed_at=None)
        metrics = metrics or Metrics()
        metrics.attach(daemon=daemon, pool=api.pool, ledger=api.ledger)
        server = HttpServer(bind(f"{host}:0"))
        started.append(server)
        server.start(build_app(daemon=daemon, liveness=Liveness(), ledger=api.ledger, metrics=metrics,
                               bounds={"dispatch": 30.0}, api=api))
        return SimpleNamespace(base="http://%s:%d" % server.address, server=server, metrics=metrics, daemon=daemon)

    yield start
    for server in started:
        server.close()
