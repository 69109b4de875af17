"""Which long-lived threads of this process are alive, and when each last made progress.

A daemon must never live on headless: a thread that dies (dispatch, heartbeat, health
monitor, reconciler) leaves a process that a supervisor sees as healthy while it
dispatches nothing, keeps no lease, or detects no failure.  So every such thread runs
through :meth:`Liveness.guard`: an exception that escapes it is logged with its
traceback and marks the process failed (:attr:`Liveness.failed`); the daemon's loop
sees that and exits non-zero, so its supervisor restarts it and an HA standby takes
over.  :meth:`Liveness.beat` records progress, for health endpoints.

A thread is *stalled* when it has not beaten for longer than its bound
(:func:`staleness_bounds`): three of its periods plus one ledger statement timeout,
since each period may include a ledger statement that waits that long:

* ``dispatch``: period ``daemon.poll``;
* ``heartbeat``: period ``daemon.run_lease / 3`` (tracked once the first run started);
* ``health``: period ``health.interval + health.timeout + max(health.timeout, 5 s)``
  (a round waits for the scheduler probe, then the storage check);
* ``reconciler``: a pass every ``offline.reconcile_every`` in a pool thread; it does
  not beat, only its death counts.

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
        self.failed_at: float | None = None  # time.monotonic() of the first death

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
            if self.failed_at is None:
                self.failed_at = time.monotonic()
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

    def stalled(self, bounds: dict[str, float]) -> dict[str, float]:
        """Threads that beat once but not within their bound (seconds), with their age."""
        dead = self.dead()
        return {name: round(age, 1) for name, age in self.ages().items()
                if name in bounds and age > bounds[name] and name not in dead}

    def failing(self, bounds: dict[str, float], *, stopping: bool = False) -> tuple[dict[str, str], dict[str, float]]:
        """(dead, stalled): what ``/healthz`` and ``skyfeast_thread_healthy`` report. While the
        daemon is ``stopping`` its dispatch loop drains running work instead of beating, so
        ``dispatch`` is not checked for a stall then."""
        check = {k: v for k, v in bounds.items() if not (stopping and k == "dispatch")}
        return self.dead(), self.stalled(check)


def staleness_bounds(cfg) -> dict[str, float]:
    """Seconds without a beat after which each tracked thread of a daemon counts as stalled
    (see the module docstring); ``cfg`` is the daemon's :class:`~skyfeast.scheduler.config.Config`."""
    d, h = cfg.daemon, cfg.health
    statement = d.ledger_statement_timeout.total_seconds()
    timeout = h.timeout.total_seconds()
    periods = {"dispatch": d.poll.total_seconds(), "heartbeat": d.run_lease.total_seconds() / 3,
               "health": h.interval.total_seconds() + timeout + max(timeout, 5.0)}
    return {name: round(3 * p + statement, 3) for name, p in periods.items()}


__all__ = ["INJECT", "InjectedFault", "Liveness", "staleness_bounds"]
