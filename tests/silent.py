"""A TCP server that accepts every connection and never sends a byte: the unresponsive endpoint
(a hung ledger, a black-holed object store) that every network wait must give up on in seconds."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def silent_server(greet: Callable[[socket.socket, threading.Event], None] | None = None) -> Iterator[int]:
    """Yields the port of a server on 127.0.0.1 that accepts and never answers; closes it on exit.

    ``greet(conn, stop)``, if given, runs on its own thread for each connection first (a protocol's
    handshake, say) and then should read and never answer until ``stop`` is set."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn = srv.accept()[0]
            except OSError:
                continue
            held.append(conn)
            if greet is not None:
                threading.Thread(target=greet, args=(conn, stop), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in held:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        srv.close()


def refusing_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def forwarding_proxy(upstream: tuple[str, int], *, refuse_for: float = 0.0) -> Iterator[tuple[int, threading.Event]]:
    """Yields ``(port, frozen)``: a port that refuses connections for ``refuse_for`` seconds (a server
    restarting), then forwards each one to ``upstream``. While ``frozen`` is set, the bytes it reads
    either way are held back, not forwarded: a server that has stopped answering mid-conversation."""
    port = refusing_port()
    stop, frozen = threading.Event(), threading.Event()
    bound = None if refuse_for else socket.create_server(("127.0.0.1", port))  # listening before it is yielded

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                while frozen.is_set() and not stop.is_set():
                    time.sleep(0.05)
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        if refuse_for and stop.wait(refuse_for):
            return
        srv = bound if bound is not None else socket.create_server(("127.0.0.1", port))
        srv.settimeout(0.2)
        with srv:
            while not stop.is_set():
                try:
                    conn = srv.accept()[0]
                except OSError:
                    continue
                up = socket.create_connection(upstream)
                for a, b in ((conn, up), (up, conn)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port, frozen
    finally:
        stop.set()
        t.join(5)


def _pg_message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def login_then_silent_server():
    """The port of a PostgreSQL server on 127.0.0.1 that completes every login (no TLS, no password:
    AuthenticationOk, the parameters libpq expects, BackendKeyData, ReadyForQuery) and then reads every
    query and never answers one (:func:`tests.silent.silent_server` with that greeting)."""
    return silent_server(_pg_login_then_silence)


def _pg_login_then_silence(conn: socket.socket, stop: threading.Event) -> None:
    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise OSError("closed")
            buf += chunk
        return buf

    try:
        while True:  # SSLRequest and GSSENCRequest ("N": not here), then the StartupMessage
            length, code = struct.unpack("!ii", read(8))
            read(length - 8)
            if code not in (80877103, 80877104):
                break
            conn.sendall(b"N")
        params = {"server_version": "16.4", "server_encoding": "UTF8", "client_encoding": "UTF8",
                  "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC",
                  "integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "off",
                  "session_authorization": "skyfeast", "application_name": ""}
        conn.sendall(_pg_message(b"R", struct.pack("!i", 0))
                     + b"".join(_pg_message(b"S", f"{k}\0{v}\0".encode()) for k, v in params.items())
                     + _pg_message(b"K", struct.pack("!ii", 4242, 1234)) + _pg_message(b"Z", b"I"))
        while not stop.is_set() and conn.recv(65536):
            pass  # a query read, never answered
    except OSError:
        pass
