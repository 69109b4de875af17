"""A running dask-kubernetes operator cluster, by name (extra ``kubernetes``); connect-only, never deleted.

Not run against a real Kubernetes cluster in this repository's tests: the
call made here follows dask-kubernetes' ``KubeCluster.from_name`` (which sets
``create_mode=CONNECT_ONLY`` and ``shutdown_on_close=False``).
"""

from __future__ import annotations

from skyfeast.adapters.base import AdapterError, NotFound
from skyfeast.adapters.clusters._sdk import SDKConnector, require
from skyfeast.adapters.clusters._tls import translate_comm_error


class KubernetesConnector(SDKConnector):
    owned = False
    what = "Kubernetes Dask cluster"

    def __init__(self, *, cluster_name: str, namespace: str | None = None,
                 port_forward_cluster_ip: bool | None = None, connect_timeout: float = 60.0, name: str = "kubernetes"):
        super().__init__(name=name)
        self.cluster_name = cluster_name
        self.namespace = namespace
        self.port_forward_cluster_ip = port_forward_cluster_ip
        self.connect_timeout = connect_timeout

    def from_name_kwargs(self) -> dict:
        """Keyword arguments of ``KubeCluster.from_name`` (None values are left to dask-kubernetes' config)."""
        kw = {"namespace": self.namespace, "port_forward_cluster_ip": self.port_forward_cluster_ip,
              "resource_timeout": int(self.connect_timeout), "shutdown_on_close": False, "quiet": True}
        return {k: v for k, v in kw.items() if v is not None}

    def _open(self):
        operator = require("dask_kubernetes.operator", "kubernetes")
        return operator.KubeCluster.from_name(self.cluster_name, **self.from_name_kwargs())

    def _close_cluster(self, cluster) -> None:
        cluster.close()  # shutdown_on_close=False: disconnects, leaves the DaskCluster resource alone

    def _translate(self, exc: BaseException, what: str) -> AdapterError | None:
        if isinstance(exc, ValueError) and "doesn't already exist" in str(exc):
            ns = f" in namespace {self.namespace}" if self.namespace else ""
            return NotFound(f"{what}: no DaskCluster {self.cluster_name!r}{ns}: {exc}")
        return translate_comm_error(exc, what)
