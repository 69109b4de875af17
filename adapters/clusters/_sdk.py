"""Base for connectors whose cluster object comes from an optional SDK (dask-gateway, dask-kubernetes, ...).

A subclass opens a ``distributed.deploy.Cluster``-like object in :meth:`_open`
(importing its SDK there, never at module import) and says whether the
daemon owns it. :meth:`close` closes the client, then the cluster object:
an owned cluster is shut down, a borrowed one is only disconnected.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import logging
from types import ModuleType

from skyfeast.adapters.base import AdapterError, ClusterConnector, translating
from skyfeast.adapters.clusters._client import open_client
from skyfeast.adapters.clusters._tls import translate_comm_error

log = logging.getLogger("skyfeast.clusters")


class MissingExtra(AdapterError, ImportError):
    """The SDK of a cluster type is not installed (config validation reports this first)."""

    infrastructure = False

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed: pip install 'skyfeast[{extra}]'")


def require(module: str, extra: str) -> ModuleType:
    """Import an optional SDK, or raise :class:`MissingExtra` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(module, extra) from exc


class SDKConnector(ClusterConnector):
    """Contract for subclasses: :meth:`_open` returns a cluster object (raising SDK errors freely:
    :meth:`_translate` maps them); :attr:`owned` says whether :meth:`close` shuts it down."""

    owned = False
    what = "cluster"

    def __init__(self, *, name: str):
        self.name = name
        self._cluster = None
        self._client = None

    @abc.abstractmethod
    def _open(self):
        """Open (or create, if owned) the cluster object."""

    def _translate(self, exc: BaseException, what: str) -> AdapterError | None:
        return translate_comm_error(exc, what)

    def _client_for(self, cluster):
        # Client(cluster) does not take the cluster's own Security (cloudprovider and coiled make one);
        # a connector with a connect_timeout (kubernetes) bounds the client's start-up by it, the others
        # by Dask's connect timeout (open_client's start_limit either way)
        return open_client(cluster, set_as_default=False, security=getattr(cluster, "security", None),
                           timeout=getattr(self, "connect_timeout", None))

    def _close_cluster(self, cluster) -> None:
        cluster.close()

    @property
    def address(self) -> str | None:
        return getattr(self._cluster, "scheduler_address", None) if self._client is not None else None

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def security(self):
        """The cluster's ``distributed.security.Security`` (picklable, unlike :attr:`connection_args`), or None."""
        return getattr(self._cluster, "security", None)

    @property
    def connection_args(self) -> dict:
        """``connection_args`` for ``distributed.core.rpc`` to :attr:`address` (TLS context if any)."""
        sec = self.security
        return sec.get_connection_args("client") if sec is not None else {}

    def connect(self):
        if self._client is not None and self._client.status == "running":
            return self._client
        self._drop_client()
        with translating(self._translate, f"{self.what} for {self.name}"):
            if self._cluster is None or not (self.owned and getattr(self._cluster, "status", None) is not None
                                             and self._cluster.status.name == "running"):
                # a borrowed cluster is re-looked-up (it may have moved); an owned one is reused while it runs
                self._drop_cluster()
                self._cluster = self._open()
            self._client = self._client_for(self._cluster)
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=2)

    def _drop_cluster(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            try:
                self._close_cluster(cluster)
            except Exception:
                log.warning("%s: error while closing %s", self.name, self.what, exc_info=True)

    def close(self) -> None:
        self._drop_client()
        self._drop_cluster()
