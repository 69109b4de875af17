"""A ``distributed.LocalCluster`` with worker *processes*, owned by the daemon."""

from __future__ import annotations

import logging

from adapters.base import ClusterConnector, Transient


class LocalConnector(ClusterConnector):
    def __init__(self, *, workers: int, threads: int, memory_limit: str, name: str = "local"):
        self.workers = workers
        self.threads = threads
        self.memory_limit = memory_limit
        self.name = name
        self._cluster = None
        self._client = None

    @property
    def address(self) -> str | None:
        return self._cluster.scheduler_address if self._cluster is not None else None

    def connect(self):
        if self._client is not None and self._client.status == "running":
            return self._client
        self.close()
        from distributed import Client, LocalCluster

        try:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads,
                processes=True,
                memory_limit=self.memory_limit,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                name=f"skyfeast-{self.name}",
            )
            self._client = Client(self._cluster, set_as_default=False)
        except (OSError, TimeoutError, RuntimeError) as exc:
            self.close()
            raise Transient(f"cannot start local cluster for {self.name}: {exc}") from exc
        return self._client

    def close(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        for obj in (client, cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # closing a broken cluster must not mask the original error
                    logging.getLogger(__name__).debug("error while closing %r", obj, exc_info=True)
