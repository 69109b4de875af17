"""Which long-lived threads of this process are alive, and when each last made progress.

A daemon must never live on headless: a thread that dies (dispatch, heartbeat, health
monitor, reconciler) leaves a process that a supervisor sees as healthy while it
dispatches nothing, keeps no lease, or detects no failure.  So every such thread runs
through :meth:`Liveness.guard`: an exception that escapes it is logged with its
traceback and marks the process failed (:attr:`Liveness.failed`); the daemon's loop
sees that and exits non-zero, so its supervisor restarts it and an HA standby takes
over.  :meth:`Liveness.beat` records progress, for health endpoints.

``SKYFEAST_INJECT_THREAD_DEATH=<name>`` makes the named thread raise after its first
beat: the fault a chaos test (and an ops drill of the supervisor) needs.

One :class:`Liveness` per runtime (:func:`skyfeast.scheduler.app.open_runtime`), handed
to the threads it watches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("skyfeast.liveness")
INJECT = "SKYFEAST_INJECT_THREAD_DEATH"


class InjectedFault(RuntimeError):
    """Raised in a thread named by ``SKYFEAST_INJECT_THREAD_DEATH``."""


class Liveness:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._dead: dict[str, str] = {}
        self.failed = threading.Event()

    def guard(self, name: str, loop: Callable[[], object]) -> Callable[[], None]:
        """``loop`` as a thread target: an exception escaping it is logged and fails the process."""

        def run() -> None:
            try:
                self.beat(name)
                loop()
            except BaseException as exc:  # noqa: BLE001 - anything that ends the thread early
                self.died(name, exc)

        return run

    def died(self, name: str, exc: BaseException) -> None:
        log.critical("thread %s died: %s: %s; this process stops so that it is restarted", name,
                     type(exc).__name__, exc, exc_info=exc)
        with self._lock:
            self._dead[name] = f"{type(exc).__name__}: {exc}"
        self.failed.set()

    def beat(self, name: str) -> None:
        with self._lock:
            self._beats[name] = time.monotonic()
            first = name not in self._dead and os.environ.get(INJECT) == name
        if first:
            raise InjectedFault(f"fault injected into thread {name} ({INJECT})")

    def dead(self) -> dict[str, str]:
        """Threads that died, with their error."""
        with self._lock:
            return dict(self._dead)

    def ages(self) -> dict[str, float]:
        """Seconds since each thread last made progress."""
        now = time.monotonic()
        with self._lock:
            return {name: now - t for name, t in self._beats.items()}


__all__ = ["INJECT", "InjectedFault", "Liveness"]
