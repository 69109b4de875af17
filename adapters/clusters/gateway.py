"""A named cluster behind a dask-gateway server (extra ``gateway``); connect-only, never shut down."""

from __future__ import annotations

from skyfeast.adapters.base import AdapterError, NotFound, PermissionDenied, Transient
from skyfeast.adapters.clusters._client import SchedulerTimeout, open_client
from skyfeast.adapters.clusters._sdk import SDKConnector, require
from skyfeast.adapters.clusters._tls import translate_comm_error


def make_auth(kind: str, *, username: str | None = None, password: str | None = None,
              api_token: str | None = None):
    """A ``dask_gateway.auth.GatewayAuth`` for ``none``/``basic``/``kerberos``/``jupyterhub``."""
    auth = require("dask_gateway.auth", "gateway")
    if kind == "basic":
        return auth.BasicAuth(username=username, password=password)
    if kind == "kerberos":
        return auth.KerberosAuth()
    if kind == "jupyterhub":
        return auth.JupyterHubAuth(api_token=api_token)
    if kind == "none":
        # GatewayAuth's own pre_request returns None, which dask-gateway cannot unpack after a 401;
        # answering with no headers lets the 401 surface as PermissionDenied
        no_auth = type("NoAuth", (auth.GatewayAuth,), {"pre_request": lambda self, resp: ({}, None)})
        return no_auth()
    raise ValueError(f"unknown gateway auth {kind!r}")


class GatewayConnector(SDKConnector):
    owned = False
    what = "dask-gateway cluster"

    def __init__(self, *, address: str, cluster_name: str, proxy_address: str | None = None,
                 public_address: str | None = None, auth: str = "none", username: str | None = None,
                 password: str | None = None, api_token: str | None = None, connect_timeout: float = 30.0,
                 name: str = "gateway"):
        super().__init__(name=name)
        self.gateway_address = address
        self.cluster_name = cluster_name
        self.proxy_address = proxy_address
        self.public_address = public_address
        self.auth = auth
        self._credentials = {"username": username, "password": password, "api_token": api_token}
        self.connect_timeout = connect_timeout

    def _open(self):
        dg = require("dask_gateway", "gateway")
        kw = {"address": self.gateway_address, "proxy_address": self.proxy_address,
              "public_address": self.public_address, "auth": make_auth(self.auth, **self._credentials)}
        # look the cluster up first: a GatewayCluster whose construction fails (unknown name,
        # refused auth) leaves a half-built object whose __del__ raises (see _close_gateway)
        gateway = dg.Gateway(**kw)
        if isinstance(getattr(gateway, "_request_kwargs", None), dict):
            import aiohttp

            # dask-gateway's HTTP calls have no deadline of their own (aiohttp's default is 5 min)
            gateway._request_kwargs["timeout"] = aiohttp.ClientTimeout(total=self.connect_timeout)
        try:
            gateway.get_cluster(self.cluster_name)
        finally:
            _close_gateway(gateway)
        return dg.GatewayCluster.from_name(self.cluster_name, shutdown_on_close=False, **kw)

    def _client_for(self, cluster):
        return open_client(cluster, security=cluster.security, set_as_default=False, timeout=self.connect_timeout)

    def _close_cluster(self, cluster) -> None:
        cluster.close(shutdown=False)  # disconnect only: the cluster belongs to the gateway
        gw = getattr(cluster, "gateway", None)
        if gw is not None:
            _close_gateway(gw)

    def _translate(self, exc: BaseException, what: str) -> AdapterError | None:
        import aiohttp

        if isinstance(exc, ValueError) and ("not found" in str(exc).lower() or "unknown" in str(exc).lower()):
            return NotFound(f"{what}: gateway {self.gateway_address} has no cluster {self.cluster_name!r}: {exc}")
        if isinstance(exc, aiohttp.ClientResponseError):
            if exc.status in (401, 403):
                return PermissionDenied(f"{what}: gateway {self.gateway_address} refused auth {self.auth!r}: {exc}")
            return Transient(f"{what}: gateway {self.gateway_address} answered {exc.status}: {exc.message}")
        if isinstance(exc, SchedulerTimeout):  # the cluster's scheduler (through the proxy), not the gateway's API
            return translate_comm_error(exc, what)
        if isinstance(exc, TimeoutError):
            return Transient(f"{what}: timed out talking to gateway {self.gateway_address} "
                             f"(connect_timeout {self.connect_timeout:g}s)")
        if isinstance(exc, aiohttp.ClientError):
            return Transient(f"cannot reach gateway {self.gateway_address} for {what}: {exc}")
        dg = require("dask_gateway", "gateway")
        if isinstance(exc, (dg.GatewayClusterError, dg.GatewayServerError)):
            return Transient(f"{what}: {exc}")
        return translate_comm_error(exc, what)


def _close_gateway(gateway) -> None:
    """Close a ``dask_gateway.Gateway`` for good.

    dask-gateway's ``Gateway.close()`` is not idempotent: the second call, made by
    ``__del__``, raises "Accessing the loop property while the loop is not running"
    (printed as an ignored exception). Once closed its loop runner is stopped;
    without one, ``__del__`` does nothing.
    """
    runner = getattr(gateway, "_loop_runner", None)
    if runner is not None and runner.is_started():
        gateway.close()
    runner = getattr(gateway, "_loop_runner", None)
    if runner is not None and not runner.is_started():
        del gateway._loop_runner
