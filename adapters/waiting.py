"""Saying what a slow network wait is waiting for.

Every wait on a network peer (connecting to the ledger, starting or reaching a cluster) runs
inside :func:`waiting`. A wait that is over in less than :data:`NOTICE_AFTER` seconds shows
nothing; a longer one is announced once, when it passes that mark: by default as one INFO log
line (``skyfeast.wait``), on a terminal as a spinner the CLI installs with :func:`set_notifier`.
The deadline itself belongs to the wait (a timeout of the client library); this only names it.
"""

from __future__ import annotations

import contextlib
import logging
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

    timer = threading.Timer(after, notice)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            done = True
            for stop in take_down:
                with contextlib.suppress(Exception):
                    stop()
