"""A deadline on every use of a Feast SQL registry's connections.

The registry's connect has a timeout (``repo.REGISTRY_CONNECT_S``), but a server that accepts the
login and then stops answering would hold a registry read or write for good: libpq has no read
timeout. :class:`RegistryDeadline` is a SQLAlchemy engine plugin that ``repo.load_store`` adds to
the registry's engines (``sqlalchemy_config_kwargs``, in memory). Each checkout of a connection from
the engine's pool gets :data:`REGISTRY_USE_S` seconds; past them a timer shuts the connection's
socket down, so that the blocked read returns, and the statement's error becomes
:class:`RegistryDeadlineError` naming the registry. Feast takes a connection for one short
transaction at a time (``with engine.begin()``), so the bound is per registry operation.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from typing import Any

#: Seconds one registry operation (a connection's checkout: a read, or the write that records an
#: interval) may take. Both take milliseconds to a second on a registry of thousands of objects.
REGISTRY_USE_S = 60.0

PLUGIN = "skyfeast_registry_deadline"


class RegistryDeadlineError(Exception):
    """The Feast registry's server stopped answering within REGISTRY_USE_S."""

    failure_class = "infrastructure"  # see skyfeast.adapters.failures


def _socket_of(dbapi_connection: Any) -> int | None:
    """The connection's socket descriptor: psycopg, psycopg2 and MySQLdb have ``fileno()``;
    pymysql and pg8000 keep the socket (pg8000 also has a socket timeout of its own)."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if callable(fileno):
        return fileno()
    sock = getattr(dbapi_connection, "_sock", None) or getattr(dbapi_connection, "_usock", None)
    return sock.fileno() if sock is not None else None


def _shut(dbapi_connection: Any) -> None:
    fd = _socket_of(dbapi_connection)
    if fd is not None and fd >= 0:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)  # the driver's own socket: its blocked read returns at once


@functools.cache
def _plugin():
    """The plugin class, built on first use so that importing this module does not import SQLAlchemy."""
    from sqlalchemy import event
    from sqlalchemy.engine import CreateEnginePlugin

    class RegistryDeadline(CreateEnginePlugin):
        """``create_engine(url, plugins=[PLUGIN], skyfeast_registry=where)``: see the module's doc."""

        def __init__(self, url, kwargs):
            super().__init__(url, kwargs)
            self.where = kwargs.pop("skyfeast_registry", str(url))

        def update_url(self, url):
            return url  # its arguments come as create_engine's keywords, none in the URL

        def engine_created(self, engine) -> None:
            where = self.where
            timers: dict[int, tuple[threading.Timer, dict]] = {}
            lock = threading.Lock()

            def disarm(dbapi_connection) -> None:
                with lock:
                    held = timers.pop(id(dbapi_connection), None)
                if held is not None:
                    held[0].cancel()

            def arm(dbapi_connection, record, proxy) -> None:
                disarm(dbapi_connection)
                state = {"cut": False}

                def fire() -> None:
                    with lock:
                        if timers.get(id(dbapi_connection), (None, None))[1] is not state:
                            return  # checked in meanwhile
                        state["cut"] = True
                    try:
                        _shut(dbapi_connection)
                    except OSError:
                        pass

                timer = threading.Timer(REGISTRY_USE_S, fire)
                timer.daemon = True
                with lock:
                    timers[id(dbapi_connection)] = (timer, state)
                record.info["skyfeast_cut"] = state
                timer.start()

            def checkin(dbapi_connection, record) -> None:
                if dbapi_connection is not None:
                    disarm(dbapi_connection)

            def handle_error(context) -> None:
                record = getattr(context.connection, "connection", None) if context.connection is not None else None
                state = getattr(record, "info", {}).get("skyfeast_cut") if record is not None else None
                if state is not None and state["cut"]:
                    raise RegistryDeadlineError(
                        f"the Feast registry at {where} stopped answering: an operation took more than "
                        f"{REGISTRY_USE_S:g} s") from context.original_exception

            event.listen(engine.pool, "checkout", arm)
            event.listen(engine.pool, "checkin", checkin)
            event.listen(engine.pool, "close", lambda dbapi_connection, record: disarm(dbapi_connection))
            event.listen(engine, "handle_error", handle_error)

    return RegistryDeadline


def __getattr__(name: str):  # SQLAlchemy's plugin loader asks this module for the class by name
    if name == "RegistryDeadline":
        return _plugin()
    raise AttributeError(name)


def register() -> None:
    """Make :data:`PLUGIN` known to SQLAlchemy (idempotent)."""
    from sqlalchemy.dialects import plugins

    plugins.register(PLUGIN, __name__, "RegistryDeadline")
