"""The cloud boundary: object storage and Dask cluster connectors.

Only modules in this package import cloud SDKs (boto3, google.cloud). Their
errors are translated into the neutral errors of :mod:`skyfeast.adapters.base`.
"""

from skyfeast.adapters.base import (
    AdapterError,
    ClusterConnector,
    NotFound,
    ObjectStore,
    PermissionDenied,
    QuotaExceeded,
    Transient,
)
from skyfeast.adapters.registry import make_cluster, make_store

__all__ = [
    "AdapterError",
    "ClusterConnector",
    "NotFound",
    "ObjectStore",
    "PermissionDenied",
    "QuotaExceeded",
    "Transient",
    "make_cluster",
    "make_store",
]
