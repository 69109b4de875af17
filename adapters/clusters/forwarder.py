"""A TCP relay that lets a drill cut one network path: :class:`Forwarder`.

Contract:

* ``Forwarder(target)`` listens on ``host`` (``127.0.0.1``) at a free port at
  once (``port``, ``address`` = ``tcp://host:port``) and relays every accepted
  connection, byte for byte and in both directions, to its own new connection to
  ``target``. It never reads the protocol it carries: any TCP protocol (Dask
  comms, HTTP to an object store) passes unchanged. A connection the target
  refuses is closed, as the target itself would.
* :meth:`~Forwarder.partition` makes it a blackhole: sockets stay open and new
  connections are still accepted, but every byte from either side is dropped
  (peers see silence, never a reset: a partition, not a dead process).
  :meth:`~Forwarder.restore` forwards again and resets each connection that lost
  bytes, whose stream no protocol can resynchronise; its peers reconnect.
* With ``alive``, once ``alive()`` is False (the target process is gone) it stops
  listening, so clients get "connection refused" as from the dead process itself.
* :meth:`~Forwarder.close` stops listening and resets every relayed connection;
  the forwarder cannot be reopened.
* Threads only (one accept thread, two pump threads per connection, all daemon
  threads); no event loop, no dependency beyond the standard library.

Used by :class:`~skyfeast.adapters.clusters.local.LocalConnector` (the daemon's
path to a local scheduler) and by storage-outage drills (the path to an object
store emulator).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("skyfeast.clusters.forwarder")


class Forwarder:
    """A TCP relay on ``host:<port>`` to ``target`` (the contract is in the module docstring).

    Each accepted connection gets its own upstream connection and two pump threads
    (blocking ``recv``/``sendall``: no per-message work beyond one copy).
    """

    BUFSIZE = 1 << 18

    def __init__(self, target: tuple[str, int], *, alive: Callable[[], bool] | None = None,
                 host: str = "127.0.0.1", name: str = "forwarder"):
        self.target = target
        self.name = name
        self._alive = alive
        self._host = host
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._blackhole = False
        self._closed = False
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)  # the accept loop polls ``alive`` and ``close``
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"skyfeast-fwd-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"tcp://{self._host}:{self.port}"

    @property
    def partitioned(self) -> bool:
        return self._blackhole

    def partition(self) -> None:
        """Drop every byte in both directions from now on (keeps sockets open)."""
        with self._lock:
            self._blackhole = True

    def restore(self) -> None:
        """Forward again; reset the connections whose streams lost bytes."""
        with self._lock:
            self._blackhole = False
            broken = [link for link in self._links if link.dropped]
        for link in broken:
            self._drop(link)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in links:
            self._drop(link)
        self._thread.join(timeout=2)

    # -- internals
    def _drop(self, link: "_Link") -> None:
        link.close()
        with self._lock:
            self._links.discard(link)

    def _target_gone(self) -> bool:
        return self._alive is not None and not self._alive()

    def _accept_loop(self) -> None:
        while not self._closed:
            if self._target_gone():
                log.info("%s: target %s:%s is gone; refusing connections", self.name, *self.target)
                with contextlib.suppress(OSError):
                    self._listener.close()
                return
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = None
            if not self._blackhole:  # across a partition no new connection reaches the target
                try:
                    up = socket.create_connection(self.target, timeout=5)
                    up.settimeout(None)
                    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    down.close()  # as the target itself would: nobody answers
                    continue
            link = _Link(down, up)
            link.dropped = up is None
            with self._lock:
                self._links.add(link)
            for src, dst in ((down, up), (up, down)) if up is not None else ((down, None),):
                threading.Thread(target=self._pump, args=(link, src, dst), daemon=True,
                                 name=f"skyfeast-fwd-{self.name}-pump").start()

    def _pump(self, link: "_Link", src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while True:
                data = src.recv(self.BUFSIZE)
                if not data:
                    break
                if self._blackhole or dst is None:
                    link.dropped = True
                    continue
                dst.sendall(data)
        except OSError:
            pass
        self._drop(link)
        if src is link.up and self._target_gone():
            with contextlib.suppress(OSError):  # don't wait for the accept loop's next poll
                self._listener.close()


class _Link:
    """One relayed connection: the accepted socket and its upstream (None across a partition)."""

    def __init__(self, down: socket.socket, up: socket.socket | None):
        self.down, self.up = down, up
        self.dropped = False
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in (self.down, self.up):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv
            with contextlib.suppress(OSError):
                s.close()
