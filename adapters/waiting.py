"""Saying what a slow network wait is waiting for.

Every wait on a network peer (connecting to the ledger, starting or reaching a cluster) runs
inside :func:`waiting`. A wait that is over in less than :data:`NOTICE_AFTER` seconds shows
nothing; a longer one is announced once, when it passes that mark: by default as one INFO log
line (``skyfeast.wait``), on a terminal as a spinner the CLI installs with :func:`set_notifier`.
The deadline itself belongs to the wait (a timeout of the client library); this only names it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("skyfeast.wait")
NOTICE_AFTER = 2.0  # seconds

# text -> a function that takes the notice down again (or None when there is nothing to take down)
Notifier = Callable[[str], "Callable[[], None] | None"]


def log_notice(text: str) -> None:
    log.info("%s", text)


_notifier: Notifier = log_notice


def set_notifier(notifier: Notifier | None) -> None:
    """Show long waits with ``notifier`` from now on (None: back to the log line)."""
    global _notifier
    _notifier = notifier or log_notice


class _Watcher:
    """One daemon thread that runs every pending notice when it falls due, instead of a timer
    thread per wait: a wait that ends first (nearly all do) costs a heap push, not a thread start."""

    def __init__(self) -> None:
        self._pid = -1

    def _reset(self) -> None:  # first use, and in a forked child (the parent's thread and lock stay behind)
        self._pid = os.getpid()
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, due: float, notice: Callable[[], None]) -> None:
        """Run ``notice`` at ``due`` (``time.monotonic()``) on the watcher thread."""
        if self._pid != os.getpid():
            self._reset()
        with self._cv:
            heapq.heappush(self._heap, (due, next(self._seq), notice))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="skyfeast-wait-notices", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is notice:
                self._cv.notify()  # now the earliest: wake the watcher sooner

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                notice = heapq.heappop(self._heap)[2]
            notice()  # outside the lock; a notice whose wait has ended does nothing


_watcher = _Watcher()


@contextlib.contextmanager
def waiting(what: str, deadline: float | None = None, *, after: float | None = None) -> Iterator[None]:
    """Announce ``waiting for WHAT (N s so far, gives up after D s)`` once if the block is still
    running after ``after`` (default :data:`NOTICE_AFTER`) seconds; take the notice down when it
    ends. Never raises for the notice."""
    after = NOTICE_AFTER if after is None else after
    t0 = time.monotonic()
    lock = threading.Lock()
    done = False
    take_down: list[Callable[[], None]] = []

    def notice() -> None:
        text = f"waiting for {what} ({time.monotonic() - t0:.0f} s so far"
        text += f", gives up after {deadline:.0f} s)" if deadline else ")"
        with lock:
            if done:
                return
            try:
                stop = _notifier(text)
            except Exception:  # a broken display must not break the wait
                log_notice(text)
                stop = None
            if stop is not None:
                take_down.append(stop)

    _watcher.at(t0 + after, notice)
    try:
        yield
    finally:
        with lock:
            done = True
            for stop in take_down:
                with contextlib.suppress(Exception):
                    stop()
