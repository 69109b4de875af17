"""The scheduling loop.

Timing comes from APScheduler triggers (see :mod:`scheduler.windows`); runs
are deduplicated by the ledger's (job, window) key, so a restarted or second
daemon never materialises a succeeded window again. Jobs that read another
job's output are chained behind it when both fire on the same tick.

Shutdown (SIGINT/SIGTERM → ``stop``): no new dispatch; running work gets
``grace`` seconds, then is cancelled and recorded as cancelled.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from scheduler.config import Config
from scheduler.runner import Outcome, Runner, order_jobs
from scheduler.windows import make_trigger, next_fire, window_for_fire

log = logging.getLogger("skyfeast.daemon")
UTC = timezone.utc


def chains(due: list) -> list[list]:
    """Group due jobs so that each job runs after its upstream when both are due."""
    names = {j.name for j in due}

    def root(j):
        while j.source.type == "job" and j.source.job in names:
            j = next(x for x in due if x.name == j.source.job)
        return j.name

    groups: dict[str, list] = {}
    for j in order_jobs(due):
        groups.setdefault(root(j), []).append(j)
    return list(groups.values())


class Daemon:
    def __init__(self, cfg: Config, runner: Runner, *, max_parallel: int = 4, grace: float = 30.0):
        self.cfg = cfg
        self.runner = runner
        self.stop = threading.Event()  # stop dispatching; runner.stop cancels running work
        self.max_parallel = max_parallel
        self.grace = grace
        self.ticks = 0
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def _run_chain(self, chain: list, fire: datetime) -> None:
        for job in chain:
            if self.runner.stop.is_set():
                return
            window = window_for_fire(job.schedule, fire)
            out = self.runner.run_window(job, window, trigger="schedule")
            with self._lock:
                self.outcomes.append(out)
            if out.status == "failed":
                return  # downstream would fail on missing input

    def serve(self, *, max_ticks: int | None = None, now=lambda: datetime.now(UTC)) -> None:
        """Dispatch due windows until ``stop`` is set (or ``max_ticks`` ticks were dispatched)."""
        triggers = {j.name: make_trigger(j.schedule) for j in self.cfg.jobs}
        start = now()
        upcoming = {j.name: next_fire(triggers[j.name], start) for j in self.cfg.jobs}
        running: list[Future] = []
        pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="skyfeast-run")
        log.info("daemon started with %d job(s)", len(self.cfg.jobs))
        try:
            while not self.stop.is_set():
                pending = [t for t in upcoming.values() if t is not None]
                if not pending:
                    log.info("no job will fire again; stopping")
                    break
                fire = min(pending)
                delay = (fire - now()).total_seconds()
                if delay > 0 and self.stop.wait(min(delay, 60.0)):
                    break
                if (fire - now()).total_seconds() > 0:
                    continue
                due = [j for j in self.cfg.jobs if upcoming[j.name] == fire]
                for j in due:
                    upcoming[j.name] = next_fire(triggers[j.name], fire)
                for chain in chains(due):
                    running.append(pool.submit(self._run_chain, chain, fire))
                running = [f for f in running if not f.done()]
                self.ticks += 1
                log.info("tick %d at %s: dispatched %s", self.ticks, fire.isoformat(), [j.name for j in due])
                if max_ticks is not None and self.ticks >= max_ticks:
                    break
        finally:
            self._drain(running, pool)

    def _drain(self, running: list[Future], pool: ThreadPoolExecutor) -> None:
        if running:
            log.info("waiting up to %.0fs for %d running dispatch(es)", self.grace, len(running))
            _, not_done = wait(running, timeout=self.grace)
            if not_done:
                log.warning("grace period over; cancelling %d running dispatch(es)", len(not_done))
                self.runner.stop.set()  # executors poll this and cancel their Dask futures
                wait(not_done, timeout=30)
        pool.shutdown(wait=True, cancel_futures=True)
