"""The app's wiring: one :class:`Runtime` holds the ledger, the Feast repo, the provider pool, the
health monitor and the runner of one process, started and closed together.

Every entry point that runs jobs (``run``, ``daemon``, ``backfill``, ``drill``, ``bench/``) opens a
runtime with :func:`open_runtime`; :func:`build_daemon` adds the scheduling loop and the leader's
reconciler pass; :func:`engine_providers` is what the Feast engine plugin
(:mod:`skyfeast.featurestore.engine`) finds through the ``skyfeast.provider_sources`` entry point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfeast.scheduler.config import Config
from skyfeast.scheduler.control.liveness import Liveness

if TYPE_CHECKING:
    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.scheduler.app.daemon import Daemon
    from skyfeast.scheduler.app.metrics import Metrics
    from skyfeast.scheduler.control.health import HealthMonitor
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import Ledger
    from skyfeast.scheduler.run.runner import Runner

log = logging.getLogger("skyfeast.app")


@dataclass
class Runtime:
    cfg: Config
    ledger: Ledger
    repo: FeastRepo
    pool: ProviderPool
    monitor: HealthMonitor
    runner: Runner
    liveness: Liveness
    metrics: Metrics | None = None

    def leave_to_exit(self) -> bool:
        """For a command whose work is recorded and whose result is out, in a process about to end:
        stop the health monitor (waiting for its probe processes, so that ``os._exit`` leaves none
        behind), kill the local clusters' processes without a graceful shutdown
        (:meth:`ProviderPool.abandon_local`) and close the ledger.  True if done: the caller drops
        the runtime without closing it and ends the process at once (``exit_at_once`` in
        :func:`skyfeast.scheduler.cli.main.main`), so that teardown does not delay the exit.  False,
        touching no cluster, when it holds a cluster elsewhere, which only a graceful close releases."""
        self.monitor.close(timeout=2.0, wait_probes=True)  # no probe of the clusters killed below
        if not self.pool.abandon_local():
            return False
        self.ledger.close()
        return True


@contextlib.contextmanager
def open_runtime(cfg: Config, reporter=None, metrics: Metrics | None = None) -> Iterator[Runtime]:
    """Open the ledger, the repo and the providers, start the health monitor; close all on exit.

    The monitor runs for every runtime, not only the daemon's: a hung provider must fail over
    within the health deadline, not wait for the job's timeout. ``metrics`` (the daemon's) is
    told of attempts, runs, probes and ledger statements as they happen."""
    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.scheduler.control.health import HealthMonitor
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import open_ledger
    from skyfeast.scheduler.run.runner import Runner

    ledger = open_ledger(cfg)
    if metrics is not None:
        metrics.time_ledger(ledger)
    try:
        repo = FeastRepo(cfg.feast_repo)
        pool = ProviderPool(cfg)
        try:
            pool.set_cordons(ledger.cordons())
            liveness = Liveness()
            runner = Runner(cfg, ledger, repo, pool, reporter=reporter, liveness=liveness, observer=metrics)
            monitor = HealthMonitor(pool, ledger, cfg.health, liveness=liveness, observer=metrics)
            monitor.start()
            try:
                yield Runtime(cfg, ledger, repo, pool, monitor, runner, liveness, metrics)
            finally:
                monitor.close()
                runner.close()
        finally:
            pool.close()
    finally:
        ledger.close()


def build_daemon(rt: Runtime, *, max_parallel: int | None = None, grace: float | None = None,
                 **kw: Any) -> Daemon:
    """The scheduling loop over ``rt``, with the leader's reconciler pass as its maintenance; ``kw``
    go to :class:`~skyfeast.scheduler.app.daemon.Daemon` (e.g. ``keep_outcomes``)."""
    from skyfeast.scheduler.app.daemon import Daemon
    from skyfeast.scheduler.control.policy import ProviderState
    from skyfeast.scheduler.run.reconcile import reconcile

    last_stop: list[str | None] = [None]

    def reconcile_pass() -> None:
        pool = rt.pool
        rep = reconcile(rt.cfg, rt.ledger, pool.stores(),
                        available=lambda name: pool.breaker(name).state is not ProviderState.DOWN)
        if rep.runs or rep.stopped != last_stop[0]:  # a waiting reconciler logs once, not every pass
            log.info("reconcile: %s", {k: v for k, v in rep.as_dict().items() if k != "runs"})
        last_stop[0] = rep.stopped

    return Daemon(rt.cfg, rt.ledger, rt.runner.execute_claimed, cancel=rt.runner.stop,
                  max_parallel=max_parallel, grace=grace, maintenance=reconcile_pass, liveness=rt.liveness, **kw)


@contextlib.contextmanager
def engine_providers(config_path: str | Path):
    """``(name, connect)`` for the providers of a skyfeast.yaml, best first; closes them on exit.

    The Feast engine plugin's ``skyfeast_config`` (entry point ``skyfeast.provider_sources``).
    Raises :class:`~skyfeast.scheduler.errors.ConfigError` for an invalid file."""
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.control.policy import place
    from skyfeast.scheduler.control.providers import ProviderPool

    cfg = load_config(config_path, check_imports=False, check_feast=False)
    pool = ProviderPool(cfg)
    try:
        yield [(name, functools.partial(pool.client, name)) for name in place(list(cfg.providers), pool.views())]
    finally:
        pool.close()
