"""The ``gateway`` connector against a real ``dask-gateway-server``.

The server runs as a subprocess on free ports with ``UnsafeLocalBackend``
(scheduler and workers are local processes of this user) and
``SimpleAuthenticator`` (basic auth, one shared password). A cluster is
started through dask-gateway's own client, then reached by name through a
config file and :func:`adapters.make_cluster`, exactly as the daemon does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from skyfeast.adapters import NotFound, PermissionDenied, make_cluster
from tests.conftest import importorskip
from tests.integration.test_cluster_tls import probe_identity

pytestmark = pytest.mark.integration
PASSWORD = "gateway-test-password"
START_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_CONFIG = """\
import sys
import dask_gateway_server.backends.db_base as db_base

# the backend's processes listen on 0.0.0.0 by default; keep the test on loopback
db_base.DBBackendBase.default_host = "127.0.0.1"
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{proxy_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = "{password}"
c.ClusterConfig.scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_memory = 1
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.cluster_max_workers = 2
"""


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert proc.poll() is None, "dask-gateway-server exited:\n" + log.read_text(errors="replace")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, "dask-gateway-server not healthy:\n" + log.read_text(errors="replace")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory):
    """(HTTP address, name of a running one-worker cluster) of a real dask-gateway-server."""
    importorskip("dask_gateway")
    importorskip("dask_gateway_server")
    import dask_gateway

    from skyfeast.adapters.clusters.gateway import _close_gateway

    d = tmp_path_factory.mktemp("gateway")
    api_port, proxy_port = _free_port(), _free_port()
    (d / "config.py").write_text(SERVER_CONFIG.format(api_port=api_port, proxy_port=proxy_port, password=PASSWORD))
    log = d / "server.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "dask_gateway_server", "-f", str(d / "config.py")], cwd=d,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    address = f"http://127.0.0.1:{proxy_port}"
    gw = None
    try:
        _wait_healthy(f"{address}/api/health", proc, log)
        gw = dask_gateway.Gateway(address, auth=dask_gateway.BasicAuth("skyfeast", PASSWORD))
        cluster = gw.new_cluster(shutdown_on_close=False)
        cluster.scale(1)
        name = cluster.name
        cluster.close(shutdown=False)
        _close_gateway(cluster.gateway)
        yield address, name, gw
    finally:
        if gw is not None:
            try:
                for report in gw.list_clusters():
                    gw.stop_cluster(report.name)
            finally:
                _close_gateway(gw)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _gateway_cfg(tmp_path: Path, body: str):
    from skyfeast.scheduler.config import load_config

    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(f"""\
project: t
feast: {{repo: repo}}
providers:
  gw:
    cluster:
{body}
    storage: {{type: local, root: data}}
""")
    return load_config(cfg, check_imports=False, check_feast=False).providers["gw"].cluster


def test_gateway_connector_runs_a_task_and_leaves_the_cluster_running(gateway_server, tmp_path, monkeypatch):
    address, name, gw = gateway_server
    monkeypatch.setenv("SKYFEAST_TEST_GATEWAY_PASSWORD", PASSWORD)
    cfg = _gateway_cfg(tmp_path, f"""\
      type: gateway
      address: {address}
      cluster_name: {name}
      auth: basic
      username: skyfeast
      password: ${{SKYFEAST_TEST_GATEWAY_PASSWORD}}
""")
    conn = make_cluster(cfg, "gw")
    try:
        client = conn.connect()
        client.wait_for_workers(1, timeout=START_TIMEOUT)
        assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
        assert conn.address is not None and conn.address.startswith("gateway://")
        assert conn.connect() is client
        # a probe (distributed.core.rpc) reaches the scheduler through the gateway's proxy: here with
        # connection_args, and in another process with the picklable security (after importing dask_gateway)
        assert probe_identity(conn.address, None, conn.connection_args) == 1
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1) as pool:
            fut = pool.submit(probe_identity, conn.address, conn.security, None, ("dask_gateway",))
            assert fut.result(timeout=60) == 1
    finally:
        conn.close()
    # connect-only: closing the connector must not stop the gateway's cluster
    assert name in [c.name for c in gw.list_clusters()]


def test_unknown_gateway_cluster_is_not_found(gateway_server, tmp_path):
    address, _, _ = gateway_server
    cfg = _gateway_cfg(tmp_path, f"""\
      type: gateway
      address: {address}
      cluster_name: no-such-cluster
      auth: basic
      username: skyfeast
      password: {PASSWORD}
""")
    conn = make_cluster(cfg, "gw")
    with pytest.raises(NotFound, match="no-such-cluster"):
        conn.connect()
    assert not conn.connected


def test_wrong_gateway_password_is_permission_denied(gateway_server, tmp_path):
    address, name, _ = gateway_server
    cfg = _gateway_cfg(tmp_path, f"""\
      type: gateway
      address: {address}
      cluster_name: {name}
      auth: basic
      username: skyfeast
      password: wrong
""")
    conn = make_cluster(cfg, "gw")
    with pytest.raises(PermissionDenied, match="refused auth 'basic'"):
        conn.connect()
    assert not conn.connected
