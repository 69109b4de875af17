"""Connect to a running Dask scheduler by address, optionally over mutual TLS."""

from __future__ import annotations

import logging

from skyfeast.adapters.base import ClusterConnector, translating
from skyfeast.adapters.clusters._client import open_client
from skyfeast.adapters.clusters._tls import translate_comm_error

log = logging.getLogger("skyfeast.clusters.address")


class AddressConnector(ClusterConnector):
    """``security`` is a ``distributed.security.Security`` (see :func:`skyfeast.adapters.clusters._tls.make_security`)
    or None for a plain connection. Raises :class:`~skyfeast.adapters.base.PermissionDenied` when TLS is
    refused or missing, :class:`~skyfeast.adapters.base.Transient` when the scheduler cannot be reached."""

    def __init__(self, *, address: str, connect_timeout: float = 10.0, name: str = "address", security=None):
        self._address = address
        self.connect_timeout = connect_timeout
        self.name = name
        self.security = security
        self._client = None

    @property
    def address(self) -> str | None:
        return self._address

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def connection_args(self) -> dict:
        """``connection_args`` for ``distributed.core.rpc``/``connect`` to this scheduler (TLS context if any).
        Not picklable: a probe in another process gets :attr:`security` and calls
        ``security.get_connection_args("client")`` there."""
        return self.security.get_connection_args("client") if self.security is not None else {}

    def connect(self):
        if self._client is not None and self._client.status == "running":
            return self._client
        self.close()
        with translating(translate_comm_error, f"Dask scheduler {self._address} for {self.name}"):
            self._client = open_client(self._address, timeout=self.connect_timeout, set_as_default=False,
                                  security=self.security)
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("error while closing client", exc_info=True)
