"""Provider health: probes with short deadlines, folded into a circuit breaker.

A :class:`HealthMonitor` thread probes every provider each ``health.interval``, all
providers in parallel; a provider whose probe just missed is probed again at once, so a
hang is detected in about ``timeout x miss_budget``:

* the Dask scheduler answers an ``identity`` RPC within ``health.timeout``
  (a SIGSTOPped or partitioned scheduler does not; a killed one refuses), and
  reports at least ``min_workers`` workers;
* the provider's storage answers a cheap ``check()``.

Scheduler probes run in a small pool of *separate processes*: measured on a
loaded 2-core host, an identity RPC made from inside a busy daemon process
(GIL held by graph building, pandas, the client) took over 6 s, while the same
RPC from another process answered in 20 ms; in-process probes therefore marked
healthy providers down. Storage checks are plain socket I/O in threads, at most
one in flight per provider.

Results go through :func:`skyfeast.scheduler.control.policy.observe` (miss budget, blocklist
TTL, half-open probes); cordons come from the ledger. A local cluster that has
not been started yet is not started by probing: its state stays ``unknown``.

Each result is recorded in the ledger (:meth:`~skyfeast.scheduler.ledger.Ledger.record_probe`)
for ``skyfeast status``: at most once per provider per ``health.interval`` (the
immediate re-probes of a suspect provider do not add writes), and at once when
the provider's state changes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from skyfeast.scheduler.control.liveness import Liveness
from skyfeast.scheduler.control.policy import Breaker, HealthRules, ProviderState, observe

log = logging.getLogger("skyfeast.health")


async def _identity(address: str, timeout: float, security=None) -> dict:
    from distributed.core import rpc

    if address.startswith("gateway://"):
        import dask_gateway  # noqa: F401  (registers the gateway:// comm)
    args = security.get_connection_args("client") if security is not None else {}
    r = rpc(address, timeout=timeout, connection_args=args)
    try:
        return await asyncio.wait_for(r.identity(), timeout)
    finally:
        await r.close_rpc()


def _refused(address: str, timeout: float) -> bool:
    """True if nothing listens at a tcp:// address (the process is gone): a certain failure."""
    import socket
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return False
    u = urlsplit(address)
    try:
        with socket.create_connection((u.hostname, u.port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False  # timeouts and unreachable networks are not proof of death


def probe_scheduler(address: str, timeout: float, security=None) -> tuple[bool, int | None, str | None]:
    """(answered, worker count, error) for a scheduler, within ``timeout`` seconds.

    ``security`` (a ``distributed.security.Security``) carries TLS settings. The error is
    ``"refused"`` when nothing listens at the address any more."""
    if _refused(address, timeout):
        return False, None, "refused"
    try:
        ident = asyncio.run(asyncio.wait_for(_identity(address, timeout, security), timeout + 0.5))
    except (OSError, asyncio.TimeoutError, TimeoutError) as exc:
        return False, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:  # any other comm failure is a failed probe, never a crash of the monitor
        return False, None, f"{type(exc).__name__}: {exc}"
    return True, len(ident.get("workers", {})), None


def _probe_child_init() -> None:
    """In a probe process: die with the daemon (Linux), ignore the terminal's Ctrl-C."""
    import contextlib
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _warm() -> bool:
    import distributed.core  # noqa: F401  (the first probe should not pay for the import)

    return True


class ProbePool:
    """Scheduler probes in separate processes, one per provider at most at a time."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                import multiprocessing

                self._pool = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_probe_child_init)
                for _ in range(self.size):
                    self._pool.submit(_warm)
            return self._pool

    def probe(self, address: str, timeout: float, security=None) -> tuple[bool, int | None, str | None]:
        pool = self._get()
        try:
            fut = pool.submit(probe_scheduler, address, timeout, security)
            # the child enforces ``timeout`` itself; the margin covers a cold start of the pool
            return fut.result(timeout=timeout + 15)
        except FutureTimeout:
            return False, None, "TimeoutError: the probe process did not answer"
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            return False, None, "the probe process died; restarting it"

    def close(self, wait: float = 0.0) -> None:
        """Stop the probe processes; ``wait`` > 0: wait up to that many seconds for them to end, so
        that a process about to ``os._exit`` leaves no semaphores of the pool's queues behind."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if wait <= 0:
            pool.shutdown(wait=False, cancel_futures=True)
            return
        ender = threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                 name="skyfeast-probe-close", daemon=True)
        ender.start()
        ender.join(wait)


class HealthMonitor:
    def __init__(self, pool, ledger, settings, liveness: Liveness | None = None, observer=None):
        self.liveness = liveness or Liveness()
        # told ``probed(provider, seconds)`` after each probe (the daemon's metrics); cheap, never raises
        self.observer = observer
        self.pool = pool
        self.ledger = ledger
        self.settings = settings
        self.rules = HealthRules(miss_budget=settings.miss_budget, blocklist_ttl=settings.blocklist_ttl.total_seconds(),
                                 failback_after=settings.failback_after.total_seconds(),
                                 min_workers=settings.min_workers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io = ThreadPoolExecutor(max_workers=max(4, 2 * len(pool.cfg.providers)),
                                      thread_name_prefix="skyfeast-probe")
        # at most one storage check per provider in flight: a hung endpoint (SIGSTOPped server,
        # black-holed route) holds its check's thread until the SDK times out, and must not
        # starve the checks of healthy providers
        self._storage_checks: dict[str, Future] = {}
        self._probes = ProbePool(len(pool.cfg.providers))
        # one thread per provider: every provider is probed in parallel each round
        self._rounds = ThreadPoolExecutor(max_workers=max(1, len(pool.cfg.providers)),
                                          thread_name_prefix="skyfeast-health-round")
        self._recorded: dict[str, tuple[float, ProviderState]] = {}  # provider -> (monotonic, state) last written
        self._record_failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self.liveness.guard("health", self._loop), name="skyfeast-health",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0, *, wait_probes: bool = False) -> None:
        """Stop probing: wait up to ``timeout`` for a round in progress to end. ``wait_probes``: spend
        what is left of ``timeout`` waiting for the probe processes to end (before ``os._exit``)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._io.shutdown(wait=False, cancel_futures=True)
        self._rounds.shutdown(wait=False, cancel_futures=True)
        self._probes.close(wait=max(0.0, deadline - time.monotonic()) if wait_probes else 0.0)

    def probe_once(self) -> dict[str, Breaker]:
        """Probe every provider once, all at the same time, and update the pool; returns the
        new breakers. A hung provider costs its own probe's deadline, not the others'."""
        try:
            self.pool.set_cordons(self.ledger.cordons())
        except Exception as exc:
            log.warning("cannot read cordons: %s", exc)
        futs = {name: self._rounds.submit(self._probe_provider, name) for name in self.pool.cfg.providers}
        out = {}
        for name, fut in futs.items():
            try:
                after = fut.result()
            except Exception:  # one provider's probe must not hide the others'
                log.exception("provider %s: probe failed", name)
                continue
            if after is not None:
                out[name] = after
        return out

    def _probe_provider(self, name: str) -> Breaker | None:
        timeout = self.settings.timeout.total_seconds()
        address = self.pool.address(name)
        before = self.pool.breaker(name)
        if (before.state is ProviderState.DOWN and time.monotonic() - before.since >= self.rules.blocklist_ttl
                and self.pool.managed_and_dead(name)):
            # a cluster we own died: restart it for the half-open probe instead of waiting forever
            log.warning("provider %s: restarting its local cluster for a half-open probe", name)
            try:
                self._io.submit(self.pool.client, name).result(timeout=120)
            except Exception as exc:
                log.warning("provider %s: restart failed: %s", name, exc)
            address = self.pool.address(name)
        if address is None:
            return None  # never started or not connected: nothing to probe, state stays as it is
        t0 = time.perf_counter()
        ok, workers, err = self._probes.probe(address, timeout, self.pool.security(name))
        if ok:
            ok, err = self._check_storage(name, max(timeout, 5.0))
        if self.observer is not None:
            self.observer.probed(name, time.perf_counter() - t0)
        before = self.pool.breaker(name)  # the restart above may have changed it
        after = observe(before, ok=ok, workers=workers, now=time.monotonic(), rules=self.rules,
                        certain=err == "refused")
        if after.state is not before.state:
            log.warning("provider %s: %s -> %s%s", name, before.state.value, after.state.value,
                        f" ({err})" if err else "")
        self.pool.set_breaker(name, after)
        self._record(name, after.state, workers, err)
        return after

    def _record(self, name: str, state: ProviderState, workers: int | None, err: str | None) -> None:
        """Write the probe to the ledger unless this state was written less than an interval ago."""
        now = time.monotonic()
        last = self._recorded.get(name)
        if last is not None and last[1] is state and now - last[0] < self.settings.interval.total_seconds():
            return
        try:
            self.ledger.record_probe(name, state.value, workers=workers, error=err)
        except Exception as exc:  # the ledger being down must not stop probing; say so once per outage
            if not self._record_failing:
                log.warning("cannot record probes in the ledger: %s", exc)
            self._record_failing = True
            return
        self._record_failing = False
        self._recorded[name] = (now, state)

    def _check_storage(self, name: str, timeout: float) -> tuple[bool, str | None]:
        prev = self._storage_checks.get(name)
        if prev is not None and not prev.done():
            return False, "storage: the previous check is still waiting for the endpoint"
        fut = self._storage_checks[name] = self._io.submit(self.pool.store(name).check)
        try:
            fut.result(timeout=timeout)
        except FutureTimeout:
            return False, f"storage: no answer within {timeout:.0f}s"
        except Exception as exc:  # storage down is a failed probe too
            return False, f"storage: {type(exc).__name__}: {exc}"
        return True, None

    def _loop(self) -> None:
        interval = self.settings.interval.total_seconds()
        wait = interval
        while not self._stop.wait(wait):
            self.liveness.beat("health")
            try:
                got = self.probe_once()
            except Exception:  # the monitor must survive anything a probe throws
                log.exception("health probe round failed")
                got = {}
            # a provider that just missed is re-probed at once: its miss budget is spent in
            # ``timeout x miss_budget``, not ``(timeout + interval) x miss_budget``
            suspect = any(b.misses and b.state is not ProviderState.DOWN for b in got.values())
            wait = 0.0 if suspect else interval


__all__ = ["HealthMonitor", "probe_scheduler", "ProviderState"]
