"""Keeps the leases of a process's running runs alive, and relays cancel requests.

One background thread per :class:`Runner`. Every ``lease / 3`` it extends the
lease of every registered run; the ledger answers which of them an operator
asked to cancel (``skyfeast cancel``) or this process no longer owns, and the
run's cancel event is set so its executor cancels the Dask work.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from skyfeast.scheduler.control.liveness import Liveness

log = logging.getLogger("skyfeast.heartbeat")


class Heartbeat:
    def __init__(self, ledger, lease: timedelta, liveness: Liveness | None = None):
        self.liveness = liveness or Liveness()
        self.ledger = ledger
        self.lease = lease
        self._runs: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, run_id: int) -> threading.Event:
        ev = threading.Event()
        with self._lock:
            self._runs[run_id] = ev
            if self._thread is None:
                self._thread = threading.Thread(target=self.liveness.guard("heartbeat", self._loop),
                                                name="skyfeast-heartbeat", daemon=True)
                self._thread.start()
        return ev

    def unregister(self, run_id: int) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def beat(self) -> None:
        with self._lock:
            runs = dict(self._runs)
        if not runs:
            return
        try:
            lost = self.ledger.heartbeat(list(runs), self.lease)
        except Exception as exc:  # a failed heartbeat must not kill the thread; the lease just ages
            log.warning("heartbeat failed: %s", exc)
            return
        for rid in lost:
            with self._lock:
                still_running_here = rid in self._runs  # it may have finished since we looked
            if still_running_here:
                log.warning("run %s: cancel requested or lease lost; cancelling", rid)
                runs[rid].set()

    def _loop(self) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.2)
        while not self._stop.wait(interval):
            self.beat()
            self.liveness.beat("heartbeat")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
