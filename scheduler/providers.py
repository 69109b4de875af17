"""Live provider resources for one daemon: cluster connectors and object stores.

Clusters are connected lazily (a local cluster costs seconds and memory, and
is only started when a job is placed on it) and closed together.
"""

from __future__ import annotations

import threading

from adapters import ClusterConnector, ObjectStore, make_cluster, make_store
from scheduler.config import Config
from scheduler.policy import ProviderState, ProviderView


class ProviderPool:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._locks = {name: threading.Lock() for name in cfg.providers}
        self._clusters: dict[str, ClusterConnector] = {}
        self._stores: dict[str, ObjectStore] = {
            name: make_store(p.storage, cfg.base_dir) for name, p in cfg.providers.items()
        }
        self._state: dict[str, ProviderState] = {name: ProviderState.UNKNOWN for name in cfg.providers}

    def store(self, name: str) -> ObjectStore:
        return self._stores[name]

    def client(self, name: str):
        """Connected ``distributed.Client`` for ``name``; raises adapters.Transient."""
        with self._locks[name]:
            conn = self._clusters.get(name)
            if conn is None:
                conn = self._clusters[name] = make_cluster(self.cfg.providers[name].cluster, name)
            try:
                client = conn.connect()
            except Exception:
                self.mark(name, ProviderState.DEGRADED)
                raise
            self.mark(name, ProviderState.HEALTHY)
            return client

    def address(self, name: str) -> str | None:
        conn = self._clusters.get(name)
        return conn.address if conn else None

    def mark(self, name: str, state: ProviderState) -> None:
        with self._lock:
            self._state[name] = state

    def views(self) -> dict[str, ProviderView]:
        with self._lock:
            return {
                name: ProviderView(priority=p.priority, state=self._state[name])
                for name, p in self.cfg.providers.items()
            }

    def states(self) -> dict[str, str]:
        with self._lock:
            return {k: v.value for k, v in self._state.items()}

    def close(self) -> None:
        for name, conn in list(self._clusters.items()):
            with self._locks[name]:
                conn.close()
        self._clusters.clear()
