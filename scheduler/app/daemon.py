"""The scheduling loop.

* **Timing** comes from APScheduler 3 triggers (:mod:`skyfeast.scheduler.timing.windows`);
  APScheduler's job stores are not used.
* **Exactly once** comes from the ledger: each due (job, window) is claimed
  in one batch insert keyed by the window; a succeeded window is never claimed
  again, and a running one only after its lease expired.
* **Leadership**: only the daemon holding the leader lease dispatches. Its
  ledger writes carry the lease's fencing token, so a deposed leader's late
  writes are rejected. A standby polls and takes over when the lease expires.
* **Recovery**: on becoming leader, each job's missed fires are dispatched per
  its ``catchup`` policy; every ``poll``, queued runs (``skyfeast trigger``) and
  orphaned runs (lease expired: their daemon died) are claimed and resumed.
* **Shutdown** (``stop``): no new dispatch; running work gets ``grace``
  seconds, then is cancelled and recorded as cancelled; the lease is released.
* **No headless daemon**: when a thread it depends on dies (this loop, the run
  heartbeat, the health monitor, the reconciler), :meth:`Daemon.serve` raises
  :class:`ThreadDied` after the same shutdown, and the process exits non-zero.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from skyfeast.adapters.waiting import waiting
from skyfeast.scheduler.app.dag import WindowDags
from skyfeast.scheduler.config import Config
from skyfeast.scheduler.control.liveness import Liveness
from skyfeast.scheduler.ledger import Fenced, Ledger
from skyfeast.scheduler.run.runner import Outcome
from skyfeast.scheduler.timing.catchup import due_fires
from skyfeast.scheduler.timing.windows import Window, make_trigger, next_fire, window_for_fire

log = logging.getLogger("skyfeast.daemon")
UTC = timezone.utc
Execute = Callable[[object, Window, int], Outcome]


class ThreadDied(RuntimeError):
    """A thread this daemon depends on died; the process must exit so its supervisor restarts it."""

    def __init__(self, dead: dict[str, str]):
        self.dead = dead
        super().__init__("; ".join(f"thread {name} died: {why}" for name, why in dead.items()) or "a thread died")


def _log_failure(fut: Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("a run chain crashed", exc_info=fut.exception())


KEEP_OUTCOMES = 1000  # outcomes a daemon keeps in memory (Daemon.outcomes); Daemon.ended counts them all


class Daemon:
    def __init__(self, cfg: Config, ledger: Ledger, execute: Execute, *, cancel: threading.Event,
                 max_parallel: int | None = None, grace: float | None = None, identity: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 maintenance: Callable[[], object] | None = None, liveness: Liveness | None = None,
                 keep_outcomes: int | None = KEEP_OUTCOMES):
        self.cfg = cfg
        self.liveness = liveness or Liveness()  # the runtime's: its other threads report there too
        # periodic leader-only housekeeping (the offline reconciler), one at a time, off the tick loop
        self.maintenance = maintenance
        self._maint: Future | None = None
        self._maint_pool: ThreadPoolExecutor | None = None
        self.ledger = ledger
        self.execute = execute
        self.cancel = cancel  # set after the grace period: executors cancel their Dask work
        self.stop = threading.Event()  # set by SIGTERM: stop dispatching
        self.max_parallel = max_parallel or cfg.daemon.max_parallel
        self.grace = cfg.daemon.grace.total_seconds() if grace is None else grace
        self.identity = identity or ledger.owner
        self.clock = clock
        self.jobs = {j.name: j for j in cfg.jobs}
        # job -> its upstream jobs: such a run is not claimed while an upstream run is pending
        self._upstreams = {name: j.upstreams for name, j in self.jobs.items() if j.upstreams}
        self.triggers = {j.name: make_trigger(j.schedule) for j in cfg.jobs}
        self.is_leader = False
        self.lease_renewed_at: float | None = None  # time.monotonic() of the last acquire or renewal
        self.deposed = False
        self.ticks = 0
        # the latest runs' outcomes (a daemon runs for weeks: all of them would grow without bound;
        # None keeps every one, for benches), and how many ended in each state since the start
        self.outcomes: deque[Outcome] = deque(maxlen=keep_outcomes)
        self.ended: Counter[str] = Counter()
        self._heap: list[tuple[datetime, str]] = []
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._futures: list[Future] = []
        self._ready: deque[Callable[[], None]] = deque()  # runs ready to start, not yet given to the pool
        self._fed = 0  # runs given to the pool and not ended (_feed)
        self._pool: ThreadPoolExecutor | None = None
        self._renew_at = 0.0

    # ------------------------------------------------------------------ leadership
    def _lead(self) -> bool:
        """Acquire or renew the leader lease; returns whether this daemon may dispatch."""
        if self.is_leader and time.monotonic() < self._renew_at:
            return True
        ttl = self.cfg.daemon.leader_lease
        token = self.ledger.acquire_leader(self.identity, ttl)
        if token is None:
            if self.is_leader:
                log.error("lost the leader lease; stopping dispatch")
                self.is_leader, self.deposed = False, True
                self.stop.set()
            return False
        self.lease_renewed_at = time.monotonic()
        self._renew_at = self.lease_renewed_at + ttl.total_seconds() / 3
        if not self.is_leader:
            self.is_leader = True
            log.info("became leader (fencing token %d)", token)
            self._plan_after_election()
        return True

    def _plan_after_election(self) -> None:
        now = self.clock()
        last = self.ledger.last_fires()
        owed: list[tuple] = []
        self._heap = []
        for name, job in self.jobs.items():
            trig = self.triggers[name]
            for fire in due_fires(trig, last_fire=last.get(name), now=now, policy=job.catchup,
                                  max_catchup=job.max_catchup):
                owed.append((job, window_for_fire(job.schedule, fire), fire))
            nxt = next_fire(trig, now)
            if nxt is not None:
                self._heap.append((nxt, name))
        heapq.heapify(self._heap)
        if owed:
            log.info("catching up %d missed window(s)", len(owed))
            self._dispatch(owed, trigger="catchup")

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, items: list[tuple], *, trigger: str) -> int:
        """Claim (job, window, fire) items in one batch and submit the claimed ones."""
        claimed = self.ledger.claim_many([(j.name, w.start, w.end) for j, w, _ in items], trigger=trigger,
                                         lease=self.cfg.daemon.run_lease)
        fires: dict[str, datetime] = {}
        for j, _, f in items:
            fires[j.name] = max(f, fires.get(j.name, f))
        self.ledger.set_last_fires(fires)
        ids = {(job, start, end): rid for rid, job, start, end in claimed}
        runnable = [(j, w, ids[(j.name, w.start, w.end)]) for j, w, _ in items if (j.name, w.start, w.end) in ids]
        self._submit(runnable)
        return len(runnable)

    def _submit(self, runnable: list[tuple]) -> None:
        """Run each window's jobs in dependency order, independent branches at once (:class:`WindowDags`)."""
        with self._lock:
            self._inflight.update(rid for _, _, rid in runnable)

        def submit(task) -> None:
            with self._lock:
                self._ready.append(task)
            self._feed()

        WindowDags(runnable, submit=submit, run_one=self._run_one, release=self._release).start()

    def _feed(self) -> None:
        """Hand ready runs to the pool, at most twice ``max_parallel`` at a time: a tick of 10,000 due
        jobs waits here as 10,000 closures, not as 10,000 pool futures (their conditions and locks:
        tens of MB at that size). A run that ends feeds the next one."""
        while True:
            with self._lock:
                if not self._ready or self._fed >= 2 * self.max_parallel or self._pool is None:
                    return
                task = self._ready.popleft()
                try:
                    fut = self._pool.submit(self._fed_run, task)
                except RuntimeError:  # the pool is shut down (drained): its run stays held, and is released
                    return
                self._fed += 1
                self._futures.append(fut)
            fut.add_done_callback(_log_failure)

    def _fed_run(self, task) -> None:
        try:
            task()
        finally:
            with self._lock:
                self._fed -= 1
            self._feed()

    def _run_one(self, item: tuple) -> bool:
        """Run one claimed item; False when the runs below it must not start (shutting down, handed back)."""
        job, window, rid = item
        # checked outside the try: its ``finally`` marks a run as no longer held, and a run that never
        # started must stay held so that it is released (re-queued)
        if self.cancel.is_set() or self.stop.is_set():
            self._release([item])
            return False
        try:
            out = self.execute(job, window, rid)
            with self._lock:
                self.outcomes.append(out)
                self.ended[out.status] += 1
            # after a failure the runs below go on: the runner records a downstream of the failed run as
            # upstream_failed without spending an attempt, and other branches still run
            return not (out.status == "cancelled" or (out.status == "skipped" and out.run_id is not None))
        except Fenced:
            log.error("run %s: ledger write fenced off; this daemon is no longer leader", rid)
            self.stop.set()
            return False
        finally:
            with self._lock:
                self._inflight.discard(rid)

    def _release(self, items: list[tuple]) -> None:
        """Runs claimed here that will not start keep their claim until the lease expires; release them
        now so the next leader or poll picks them up at once."""
        with self._lock:
            left = [rid for _, _, rid in items if rid in self._inflight]
            self._inflight.difference_update(left)
        if left and not self.deposed:
            try:
                self.ledger.release_runs(left)
            except Fenced:
                log.error("could not release %s: fenced off", left)

    def _hold_claims(self) -> None:
        """Keep the leases of runs claimed here but still waiting (in the pool queue or behind
        their upstream in a chain); running ones are also kept alive by the runner's heartbeat."""
        with self._lock:
            held = list(self._inflight)
        if held:
            self.ledger.heartbeat(held, self.cfg.daemon.run_lease)

    def _pickup(self) -> None:
        lease = self.cfg.daemon.run_lease
        after = self._upstreams
        rows = self.ledger.claim_queued(lease, after=after) + self.ledger.reclaim_expired(lease, after=after)
        items = []
        for r in rows:
            with self._lock:
                mine = r.id in self._inflight
            if mine:
                continue  # already queued in this process (its lease lapsed while it waited)
            job = self.jobs.get(r.job)
            if job is None:
                log.warning("run %s belongs to unknown job %r; releasing it", r.id, r.job)
                self.ledger.release_runs([r.id])
                continue
            items.append((job, Window(r.window_start, r.window_end), r.id))
        if items:
            log.info("picked up %d queued or orphaned run(s)", len(items))
            self._submit(items)

    # ------------------------------------------------------------------ loop
    def serve(self, *, max_ticks: int | None = None) -> None:
        """Dispatch until ``stop`` is set, leadership is lost, or ``max_ticks`` ticks were dispatched."""
        poll = self.cfg.daemon.poll.total_seconds()
        self._pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="skyfeast-run")
        next_pickup = 0.0
        next_maint = 0.0
        log.info("daemon %s started with %d job(s)", self.identity, len(self.jobs))
        try:
            while not self.stop.is_set():
                self.liveness.beat("dispatch")
                if self.liveness.failed.is_set():
                    raise ThreadDied(self.liveness.dead())
                if self._maint is not None and self._maint.done() and self._maint.exception() is not None:
                    self.liveness.died("reconciler", self._maint.exception())
                    continue
                if not self._lead():
                    self.stop.wait(poll)
                    continue
                now = self.clock()
                due: list[tuple] = []
                while self._heap and self._heap[0][0] <= now:
                    fire, name = heapq.heappop(self._heap)
                    job = self.jobs[name]
                    due.append((job, window_for_fire(job.schedule, fire), fire))
                    nxt = next_fire(self.triggers[name], fire)
                    if nxt is not None:
                        heapq.heappush(self._heap, (nxt, name))
                if due:
                    n = self._dispatch(due, trigger="schedule")
                    self.ticks += 1
                    log.info("tick %d: %d due, %d claimed", self.ticks, len(due), n)
                    if max_ticks is not None and self.ticks >= max_ticks:
                        break
                if time.monotonic() >= next_pickup:
                    self._hold_claims()
                    self._pickup()
                    next_pickup = time.monotonic() + poll
                if self.maintenance is not None and time.monotonic() >= next_maint and \
                        (self._maint is None or self._maint.done()):
                    self._maint_pool = self._maint_pool or ThreadPoolExecutor(1, thread_name_prefix="skyfeast-maint")
                    self._maint = self._maint_pool.submit(self.maintenance)
                    next_maint = time.monotonic() + self.cfg.offline.reconcile_every.total_seconds()
                with self._lock:  # run threads append the futures of the runs below theirs
                    self._futures = [f for f in self._futures if not f.done()]
                sleep = poll
                if self._heap:
                    sleep = min(sleep, max(0.0, (self._heap[0][0] - self.clock()).total_seconds()))
                self.stop.wait(sleep)
        except Fenced:
            log.error("fenced off by a newer leader; stopping")
            self.deposed = True
        finally:
            self._drain()

    def _running(self) -> list[Future]:
        """The pool's runs not ended; ready runs not yet fed wait behind them, and start as they end."""
        with self._lock:
            return [f for f in self._futures if not f.done()]

    def _drain(self) -> None:
        # a run that ends submits the runs below it (WindowDags): wait until none is left, not only
        # for the ones running now
        deadline = time.monotonic() + self.grace
        running = self._running()
        # a shutdown that lasts says so where the operator sees it (a wait over at once shows nothing)
        with waiting(f"{len(running)} run(s) under way here and the runs after them to finish before stopping "
                     "(SIGTERM again cancels them)", self.grace):
            while running and time.monotonic() < deadline:
                wait(running, timeout=deadline - time.monotonic())
                running = self._running()
        if running:
            log.warning("grace period over; cancelling %d running run(s)", len(running))
            self.cancel.set()  # the runs below them are released, not started
            stop_at = time.monotonic() + 60
            while running and time.monotonic() < stop_at:
                wait(running, timeout=stop_at - time.monotonic())
                running = self._running()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._maint_pool is not None:  # the reconciler is idempotent: an interrupted copy is redone later
            self._maint_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            never_started = list(self._inflight)
            self._inflight.clear()
        if never_started and not self.deposed:
            self.ledger.release_runs(never_started)  # claimable at once by the next leader
        if self.is_leader and not self.deposed:
            try:
                self.ledger.release_leader(self.identity)
            except Exception as exc:  # the lease expires by itself anyway
                log.warning("could not release the leader lease: %s", exc)
        self.is_leader = False
