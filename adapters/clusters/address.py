"""Connect to a running Dask scheduler by address."""

from __future__ import annotations

import logging

from adapters.base import ClusterConnector, Transient


class AddressConnector(ClusterConnector):
    def __init__(self, *, address: str, connect_timeout: float = 10.0, name: str = "address"):
        self._address = address
        self.connect_timeout = connect_timeout
        self.name = name
        self._client = None

    @property
    def address(self) -> str | None:
        return self._address

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self):
        if self._client is not None and self._client.status == "running":
            return self._client
        self.close()
        from distributed import Client

        try:
            self._client = Client(self._address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise Transient(f"cannot reach Dask scheduler {self._address} for {self.name}: {exc}") from exc
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                logging.getLogger(__name__).debug("error while closing client", exc_info=True)
