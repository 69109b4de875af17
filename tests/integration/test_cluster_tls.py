"""The ``address`` connector over mutual TLS, against a real ``dask scheduler`` and ``dask worker``.

A throw-away CA signs a scheduler/worker certificate and a client certificate
(``cryptography``). The scheduler listens on ``tls://127.0.0.1`` on a free
port (``--port 0``; the address is read from its scheduler file) and accepts
only certificates from that CA. The connector is built from a real config
file through :func:`adapters.make_cluster`, so the relative TLS paths of the
config are what is exercised.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyfeast.adapters import PermissionDenied, Transient, make_cluster
from skyfeast.adapters.clusters.address import AddressConnector
from skyfeast.adapters.clusters.local import _scheduler_address

pytestmark = pytest.mark.integration
START_TIMEOUT = 60


# --------------------------------------------------------------------------- certificates
def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn: str, key, issuer_cn: str, issuer_key, *, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = (b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False))
    return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_pki(d: Path, ca_name: str = "skyfeast-test-ca") -> dict[str, Path]:
    """CA + node certificate (scheduler and worker) + client certificate, as PEM files in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    files = {"ca": _cert(ca_name, ca_key, ca_name, ca_key, ca=True)}
    for who in ("node", "client"):
        k = _key()
        files[f"{who}-key"] = _pem_key(k)
        files[f"{who}-cert"] = _cert(f"{who}.skyfeast.test", k, ca_name, ca_key, ca=False)
    out = {}
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
        out[name] = d / f"{name}.pem"
    return out


# --------------------------------------------------------------------------- a real TLS cluster
def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """(scheduler address, pki paths, log dir) of a TLS-only scheduler with one worker."""
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d / "pki")
    tls_args = ["--tls-ca-file", str(pki["ca"]), "--tls-cert", str(pki["node-cert"]), "--tls-key", str(pki["node-key"])]
    sched_file = d / "scheduler.json"
    py = sys.executable
    procs = [_spawn([py, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                     "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file), *tls_args],
                    d / "scheduler.log")]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # the scheduler creates its file, then writes it: read it as the connector does, until it parses
        while (address := _scheduler_address(sched_file)) is None:
            assert procs[0].poll() is None, (d / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "scheduler did not start:\n" + (d / "scheduler.log").read_text()
            time.sleep(0.1)
        assert address.startswith("tls://127.0.0.1:"), address
        procs.append(_spawn([py, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1",
                             "--no-dashboard", "--memory-limit", "1GiB", "--name", "tls-w0", "--death-timeout", "60",
                             *tls_args], d / "worker.log"))
        yield address, pki, d
    finally:
        _stop(procs[::-1])


def probe_identity(address: str, security=None, connection_args: dict | None = None,
                   imports: tuple[str, ...] = ()) -> int:
    """Worker count from the scheduler's ``identity``, as a health probe would get it (picklable arguments)."""
    import asyncio
    import importlib

    from distributed.core import rpc

    for module in imports:  # e.g. dask_gateway registers the gateway:// comm on import
        importlib.import_module(module)
    if connection_args is None:
        connection_args = security.get_connection_args("client") if security is not None else {}

    async def identity():
        r = rpc(address, timeout=20, connection_args=connection_args)
        try:
            return await r.identity()
        finally:
            await r.close_rpc()

    return len(asyncio.run(identity())["workers"])


def _address_cfg(tmp_path: Path, text: str, pki: dict[str, Path]):
    """Write a config next to copies of the client certificates and load it (relative tls paths)."""
    from skyfeast.scheduler.config import load_config

    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca", "client-cert", "client-key"):
        (certs / f"{name}.pem").write_bytes(pki[name].read_bytes())
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "skyfeast.yaml"
    cfg_path.write_text(f"""\
project: t
feast: {{repo: repo}}
providers:
  p1:
    cluster:
{text}
    storage: {{type: local, root: data}}
""")
    return load_config(cfg_path, check_imports=False, check_feast=False)


def test_tls_connector_from_config_runs_a_task(tls_cluster, tmp_path):
    address, pki, _ = tls_cluster
    cfg = _address_cfg(tmp_path, f"""\
      type: address
      address: {address}
      connect_timeout: 20s
      tls: {{ca_file: certs/ca.pem, cert: certs/client-cert.pem, key: certs/client-key.pem}}
""", pki)
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)  # the paths must be anchored at the config file, not the working directory
    conn = make_cluster(cfg.providers["p1"].cluster, "p1", cfg.base_dir)
    try:
        client = conn.connect()
        client.wait_for_workers(1, timeout=START_TIMEOUT)
        assert client.submit(lambda x: x * 7, 6).result(timeout=30) == 42
        info = client.scheduler_info()
        assert [w["name"] for w in info["workers"].values()] == ["tls-w0"]
        assert all(addr.startswith("tls://") for addr in info["workers"])
        assert conn.connect() is client  # a live client is reused

        # a probe (distributed.core.rpc) speaks TLS too: in this process with connection_args, and in
        # another process (where the health monitor probes) with the picklable security object
        assert probe_identity(address, None, conn.connection_args) == 1
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1) as pool:
            assert pool.submit(probe_identity, address, conn.security).result(timeout=60) == 1
    finally:
        conn.close()
        os.chdir(tmp_path)


def test_health_monitor_probes_a_tls_provider(tls_cluster, tmp_path):
    """The daemon's own path: ProviderPool connects with the config's relative TLS paths, and the
    health monitor's probe processes speak TLS to the scheduler; without TLS the probe fails."""
    from skyfeast.scheduler.control.health import HealthMonitor, ProbePool
    from skyfeast.scheduler.control.policy import ProviderState
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import Ledger

    address, pki, _ = tls_cluster
    cfg = _address_cfg(tmp_path, f"""\
      type: address
      address: {address}
      connect_timeout: 20s
      tls: {{ca_file: certs/ca.pem, cert: certs/client-cert.pem, key: certs/client-key.pem}}
""", pki)
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.chdir(other)
    pool = ProviderPool(cfg)
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    monitor = HealthMonitor(pool, ledger, cfg.health)
    try:
        pool.client("p1").wait_for_workers(1, timeout=START_TIMEOUT)
        assert pool.security("p1") is not None
        breakers = monitor.probe_once()
        assert breakers["p1"].state is ProviderState.HEALTHY
        probes = ProbePool(1)
        try:
            assert probes.probe(address, 10, pool.security("p1")) == (True, 1, None)
            ok, _, err = probes.probe(address, 3, None)
            assert not ok and err, "a probe without TLS settings must not reach a TLS-only scheduler"
        finally:
            probes.close()
    finally:
        monitor.close()
        pool.close()
        ledger.close()
        os.chdir(tmp_path)


def test_tls_scheduler_without_tls_settings_is_permission_denied(tls_cluster):
    address, _, _ = tls_cluster
    conn = AddressConnector(address=address, connect_timeout=5, name="p1")
    with pytest.raises(PermissionDenied, match=r"requires TLS, but no TLS settings were given") as ei:
        conn.connect()
    assert address in str(ei.value) and "p1" in str(ei.value)
    assert not conn.connected


def test_plain_tcp_to_a_tls_scheduler_fails_neutrally(tls_cluster):
    """Speaking plain TCP to the TLS port: the scheduler drops the connection; no SDK error leaks."""
    address, _, _ = tls_cluster
    plain = address.replace("tls://", "tcp://")
    conn = AddressConnector(address=plain, connect_timeout=3, name="p1")
    with pytest.raises((Transient, PermissionDenied)) as ei:
        conn.connect()
    assert plain in str(ei.value)
    assert not conn.connected


def test_certificate_from_another_ca_is_refused(tls_cluster, tmp_path):
    """A client certificate the scheduler does not trust (and a CA that does not sign the scheduler)."""
    from skyfeast.adapters.clusters._tls import make_security

    address, _, _ = tls_cluster
    rogue = make_pki(tmp_path / "rogue", ca_name="rogue-ca")
    sec = make_security(ca_file=rogue["ca"], cert=rogue["client-cert"], key=rogue["client-key"])
    conn = AddressConnector(address=address, connect_timeout=3, name="p1", security=sec)
    with pytest.raises(PermissionDenied, match="TLS handshake") as ei:
        conn.connect()
    assert address in str(ei.value)


def test_unreadable_tls_files_are_permission_denied(tmp_path):
    from skyfeast.adapters.clusters._tls import make_security

    with pytest.raises(PermissionDenied, match="ca_file .*missing.pem is not a readable file"):
        make_security(ca_file=tmp_path / "missing.pem", cert=tmp_path / "c.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(PermissionDenied, match="TLS files cannot be loaded"):
        make_security(ca_file=garbage, cert=garbage, key=garbage)


def test_a_client_that_failed_to_connect_is_closed_at_once(tls_cluster):
    """Regression: a Client whose construction failed kept its IO-loop thread until garbage collection
    closed it, from whichever thread collected it; in the next client's new IO-loop thread that
    deadlocked on LoopRunner's lock for 10 s, then failed with a bare AssertionError."""
    from distributed import Client

    from skyfeast.adapters.clusters._client import _clients_in

    address, _, _ = tls_cluster
    for addr in (address, address.replace("tls://", "tcp://")):  # TLS missing; plain TCP to the TLS port
        conn = AddressConnector(address=addr, connect_timeout=3, name="p1")
        with pytest.raises((PermissionDenied, Transient)) as ei:
            conn.connect()
        failed = list(_clients_in(ei.value, Client))
        assert len(failed) == 1, ei.value
        assert failed[0].status == "closed"
        assert not failed[0]._loop_runner.is_started()


def test_feast_engine_plugin_reaches_a_tls_scheduler(tls_cluster, tmp_path):
    """``batch_engine: {address: tls://..., tls: {...}}``: paths relative to the Feast repo."""
    from types import SimpleNamespace

    from skyfeast.featurestore.engine import DaskComputeEngine, DaskComputeEngineConfig

    address, pki, _ = tls_cluster
    repo = tmp_path / "repo"
    (repo / "certs").mkdir(parents=True)
    for name in ("ca", "client-cert", "client-key"):
        (repo / "certs" / f"{name}.pem").write_bytes(pki[name].read_bytes())
    tls = {"ca_file": "certs/ca.pem", "cert": "certs/client-cert.pem", "key": "certs/client-key.pem"}
    engine = DaskComputeEngine(repo_config=SimpleNamespace(repo_path=repo), offline_store=None, online_store=None,
                               type="skyfeast.featurestore.engine.DaskComputeEngine", address=address, tls=tls)
    with engine._clusters() as providers:
        ((name, connect),) = providers
        client = connect()
        assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
    # without tls the same scheduler refuses the engine, with a neutral permission error
    bare = DaskComputeEngine(repo_config=SimpleNamespace(repo_path=repo), offline_store=None, online_store=None,
                             type="skyfeast.featurestore.engine.DaskComputeEngine", address=address)
    with bare._clusters() as providers, pytest.raises(PermissionDenied):
        providers[0][1]()
    with pytest.raises(ValueError, match="tls applies to address only"):
        DaskComputeEngineConfig(tls=tls)
    with pytest.raises(ValueError, match="cafile"):
        DaskComputeEngineConfig(address=address, tls={**tls, "cafile": "x"})
