"""A dask-cloudprovider ``EC2Cluster``/``GCPCluster`` the daemon creates, and shuts down in :meth:`close`
(extra ``cloudprovider``).

Not run against AWS or GCP in this repository's tests (it starts billed
VMs). The classes are dask-cloudprovider's ``dask_cloudprovider.aws.EC2Cluster``
and ``dask_cloudprovider.gcp.GCPCluster``, built with ``n_workers`` and the
configured ``options``; ``close()`` terminates their VMs.
"""

from __future__ import annotations

from typing import Any

from skyfeast.adapters.clusters._sdk import SDKConnector, require

BACKENDS = {"ec2": ("dask_cloudprovider.aws", "EC2Cluster"), "gcp": ("dask_cloudprovider.gcp", "GCPCluster")}


class CloudProviderConnector(SDKConnector):
    owned = True

    def __init__(self, *, backend: str, n_workers: int = 1, options: dict[str, Any] | None = None,
                 name: str = "cloudprovider"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown cloudprovider backend {backend!r}; known: {sorted(BACKENDS)}")
        super().__init__(name=name)
        self.backend = backend
        self.n_workers = n_workers
        self.options = dict(options or {})
        self.what = f"dask-cloudprovider {BACKENDS[backend][1]}"

    def cluster_kwargs(self) -> dict:
        return {**self.options, "n_workers": self.n_workers}

    def _open(self):
        module, cls = BACKENDS[self.backend]
        return getattr(require(module, "cloudprovider"), cls)(**self.cluster_kwargs())
