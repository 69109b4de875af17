"""The cloud boundary: object storage and Dask cluster connectors.

Only modules in this package import cloud SDKs (boto3, google.cloud). Their
errors are translated into the neutral errors of :mod:`skyfeast.adapters.base`.

Importing it turns gRPC's fork support off unless the environment sets it
(``GRPC_ENABLE_FORK_SUPPORT``).  From grpcio 1.80 (grpc/grpc#43055), while a gRPC
channel is open (the GCS client's), a process started with ``subprocess.Popen``
can abort between fork and exec: gRPC's fork handler restarts its poller in the
child, where ``epoll_wait`` fails with EBADF.  skyfeast forks only to exec (local
Dask clusters, the test emulators) and never uses gRPC in a forked child, which
is the only thing fork support is for.  :mod:`skyfeast.featurestore` imports this
package first, so every skyfeast process has it before any cloud SDK is loaded.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from skyfeast.adapters.base import (  # noqa: E402  (after the setting above)
    AdapterError,
    ClusterConnector,
    NotFound,
    ObjectStore,
    PermissionDenied,
    QuotaExceeded,
    Transient,
)
from skyfeast.adapters.registry import make_cluster, make_store  # noqa: E402

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
