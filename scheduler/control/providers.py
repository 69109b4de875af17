"""Live provider resources for one daemon: cluster connectors and object stores.

Clusters are connected lazily (a local cluster costs seconds and memory, and
is only started when a job is placed on it) and closed together.
"""

from __future__ import annotations

import threading
import time

from skyfeast.adapters import ClusterConnector, ObjectStore, make_cluster, make_store
from skyfeast.adapters.clusters._client import start_limit
from skyfeast.adapters.clusters.local import LocalConnector, Preload
from skyfeast.adapters.waiting import waiting
from skyfeast.scheduler.config import Config
from skyfeast.scheduler.control.policy import Breaker, HealthRules, ProviderState, ProviderView, placement_state

# What the processes of a local cluster the daemon starts import at start (see Preload).
# Scheduler: what unpickling a job's graph imports, paid at startup rather than on the event
# loop mid-run: the executor (whose functions the tasks are) and Feast, which comes with the
# task specs (a WriteTarget holds a Feast RepoConfig) and which the writers module imports.
# Workers: only the light filter that makes their own Feast import three times cheaper; it
# must run before anything imports Feast (a task spec unpickled first would).
LOCAL_PRELOAD = Preload(scheduler=("skyfeast.scheduler.run.executor", "skyfeast.featurestore.writers"),
                        workers=("skyfeast.featurestore._typechecks",))


class ProviderPool:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._locks = {name: threading.Lock() for name in cfg.providers}
        self._clusters: dict[str, ClusterConnector] = {}
        self._stores: dict[str, ObjectStore] = {
            name: make_store(p.storage, cfg.base_dir) for name, p in cfg.providers.items()
        }
        self._breakers: dict[str, Breaker] = {name: Breaker() for name in cfg.providers}
        self._was_down: dict[str, bool] = {name: False for name in cfg.providers}
        self._cordons: dict[str, dict] = {}
        h = cfg.health
        self.rules = HealthRules(miss_budget=h.miss_budget, blocklist_ttl=h.blocklist_ttl.total_seconds(),
                                 failback_after=h.failback_after.total_seconds(), min_workers=h.min_workers)

    def store(self, name: str) -> ObjectStore:
        return self._stores[name]

    def stores(self) -> dict[str, ObjectStore]:
        return dict(self._stores)

    def client(self, name: str):
        """Connected ``distributed.Client`` for ``name``; raises adapters.Transient."""
        with self._locks[name]:
            conn = self._clusters.get(name)
            if conn is None:
                conn = self._clusters[name] = make_cluster(self.cfg.providers[name].cluster, name, self.cfg.base_dir,
                                                             preload=LOCAL_PRELOAD)
            deadline = getattr(conn, "start_timeout", None)
            if deadline is None and getattr(conn, "connect_timeout", None) is not None:
                deadline = start_limit(conn.connect_timeout)  # what a client's start-up may take in all
            try:
                with waiting(f"provider {name}'s cluster to start", deadline):
                    client = conn.connect()
            except Exception:
                self.mark(name, ProviderState.DEGRADED)
                raise
            self.mark(name, ProviderState.HEALTHY)
            return client

    def managed_and_dead(self, name: str) -> bool:
        """True if ``name`` is a cluster this process started and its scheduler process has exited."""
        conn = self._clusters.get(name)
        proc = getattr(conn, "_scheduler", None)
        return proc is not None and proc.poll() is not None

    def address(self, name: str) -> str | None:
        """Scheduler address of a connected provider (None while unstarted or starting)."""
        conn = self._clusters.get(name)
        return conn.address if conn is not None and getattr(conn, "connected", True) else None

    def security(self, name: str):
        """The ``distributed.security.Security`` of a provider's cluster (TLS), or None."""
        return getattr(self._clusters.get(name), "security", None)

    def mark(self, name: str, state: ProviderState) -> None:
        """A run saw this provider fail or work (between health probes)."""
        with self._lock:
            b = self._breakers[name]
            if state is not b.state and b.state is not ProviderState.DOWN:
                self._breakers[name] = Breaker(state, b.misses, time.monotonic())

    def breaker(self, name: str) -> Breaker:
        with self._lock:
            return self._breakers[name]

    def set_breaker(self, name: str, b: Breaker) -> None:
        with self._lock:
            if b.state is ProviderState.DOWN:
                self._was_down[name] = True
            elif b.state is ProviderState.HEALTHY and self._was_down[name] and \
                    time.monotonic() - b.since >= self.rules.failback_after:
                self._was_down[name] = False
            self._breakers[name] = b

    def set_cordons(self, cordons: dict[str, dict]) -> None:
        with self._lock:
            self._cordons = dict(cordons)

    def views(self) -> dict[str, ProviderView]:
        now = time.monotonic()
        with self._lock:
            return {
                name: ProviderView(priority=p.priority, cordoned=name in self._cordons,
                                   state=placement_state(self._breakers[name], now=now, rules=self.rules,
                                                         was_down=self._was_down[name]))
                for name, p in self.cfg.providers.items()
            }

    def states(self) -> dict[str, str]:
        return {k: v.state.value for k, v in self.views().items()}

    def close(self) -> None:
        for name, conn in list(self._clusters.items()):
            with self._locks[name]:
                conn.close()
        self._clusters.clear()

    def abandon_local(self) -> bool:
        """For a process about to end whose runs are recorded: kill the processes of the local
        clusters it started, without a graceful shutdown (:meth:`LocalConnector.abandon`), so that
        teardown does not delay its exit.  True if those were all its clusters, so that nothing is
        left to close; False, touching nothing, if it holds any other (a cluster elsewhere is only
        released by a graceful close)."""
        with self._lock:
            conns = list(self._clusters.values())
        if not all(isinstance(c, LocalConnector) for c in conns):
            return False
        for c in conns:
            c.abandon()
        self._clusters.clear()
        return True

    def connector(self, name: str) -> ClusterConnector | None:
        """The cluster connector of ``name`` once a client was asked for (drills inject faults through it)."""
        return self._clusters.get(name)
