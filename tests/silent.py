"""A TCP server that accepts every connection and never sends a byte: the unresponsive endpoint
(a hung ledger, a black-holed object store) that every network wait must give up on in seconds."""

from __future__ import annotations

import contextlib
import socket
import threading
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
