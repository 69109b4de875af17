"""A deadline on every use of a Feast SQL registry's connections.

The registry's connect has a timeout (``repo.REGISTRY_CONNECT_S``), but a server that accepts the
login and then stops answering would hold a registry read or write for good: libpq has no read
timeout. :class:`RegistryDeadline` is a SQLAlchemy engine plugin that ``repo.load_store`` adds to
the registry's engines (``sqlalchemy_config_kwargs``, in memory). Each new connection (its first
statements: on an engine's first connect, the dialect's own) and each checkout of a connection from
the engine's pool gets :data:`REGISTRY_USE_S` seconds; past them a timer shuts the connection's
socket down, so that the blocked read returns, and the statement's error becomes
:class:`RegistryDeadlineError` naming the registry. Feast takes a connection for one short
transaction at a time (``with engine.begin()``), so the bound is per registry operation. A cut that
comes as a COMMIT is answered may leave the write done: recording an interval again is harmless.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from typing import Any

#: Seconds one registry operation (a connection's checkout: a read, or the write that records an
#: interval) may take. Both take milliseconds to a second on a registry of thousands of objects.
REGISTRY_USE_S = 60.0

PLUGIN = "skyfeast_registry_deadline"


class RegistryDeadlineError(Exception):
    """The Feast registry's server stopped answering within REGISTRY_USE_S."""

    failure_class = "infrastructure"  # see skyfeast.adapters.failures


def _socket_of(dbapi_connection: Any) -> int | None:
    """The connection's socket descriptor: psycopg, psycopg2 and MySQLdb have ``fileno()``; pg8000
    keeps its socket as ``_usock`` (its ``_sock`` is a buffered file: no descriptor) and pymysql as
    ``_sock``."""
    sock = getattr(dbapi_connection, "_usock", None) or getattr(dbapi_connection, "_sock", None)
    if sock is not None and not callable(getattr(dbapi_connection, "fileno", None)):
        return sock.fileno()
    return dbapi_connection.fileno()


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
            timers: dict[int, threading.Timer] = {}
            lock = threading.Lock()
            last_cut = [float("-inf")]  # when a timer of this engine last shut a connection down

            def disarm(dbapi_connection, *_) -> None:
                with lock:
                    timer = timers.pop(id(dbapi_connection), None)
                if timer is not None:
                    timer.cancel()

            def arm(dbapi_connection, *_) -> None:
                """A new connection (its first statements: the dialect's own, on an engine's first
                connect) or a checkout: REGISTRY_USE_S from now."""
                key = id(dbapi_connection)

                def fire() -> None:
                    with lock:  # the shutdown under the lock: no checkin can slip between
                        if timers.get(key) is not timer:
                            return  # checked in, or armed again, meanwhile
                        del timers[key]
                        last_cut[0] = time.monotonic()
                        try:
                            _shut(dbapi_connection)
                        except Exception:  # a connection the driver has closed meanwhile
                            pass

                timer = threading.Timer(REGISTRY_USE_S, fire)
                timer.daemon = True
                with lock:
                    old = timers.pop(key, None)
                    timers[key] = timer
                if old is not None:
                    old.cancel()
                timer.start()

            def handle_error(context) -> None:
                # a disconnect came from a cut if a timer cut a connection of this engine just now (an
                # engine's first connect has no checkout, and its record may be closed); a pre-ping's
                # is left to SQLAlchemy, which connects again (and arms the new connection)
                if context.is_disconnect and not context.is_pre_ping and time.monotonic() - last_cut[0] < 5.0:
                    raise RegistryDeadlineError(
                        f"the Feast registry at {where} stopped answering: an operation took more than "
                        f"{REGISTRY_USE_S:g} s") from context.original_exception

            ping = engine.dialect.do_ping

            def do_ping(dbapi_connection):
                """``pool_pre_ping`` (a user's kwarg) pings before the checkout event: armed too."""
                arm(dbapi_connection)
                try:
                    return ping(dbapi_connection)
                finally:
                    disarm(dbapi_connection)

            engine.dialect.do_ping = do_ping
            for name in ("first_connect", "connect"):
                event.listen(engine.pool, name, arm, insert=True)
            event.listen(engine.pool, "checkout", arm)
            for name in ("checkin", "close", "detach", "close_detached"):
                event.listen(engine.pool, name, disarm)
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
