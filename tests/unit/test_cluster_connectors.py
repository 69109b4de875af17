"""Cluster types in the config, and the connectors they build.

* Config errors go through ``skyfeast validate`` (exit 2, ``file:line: key: message``,
  no traceback), like tests/unit/test_config_errors.py.
* A missing optional SDK is simulated with ``sys.modules[name] = None`` (what
  Python does for a module that cannot be imported), so the result does not
  depend on which extras happen to be installed.
* Tests named ``test_fake_sdk_*`` inject a FAKE SDK module into ``sys.modules``,
  because dask-kubernetes, coiled and dask-cloudprovider need a real Kubernetes
  cluster, a Coiled account or billed cloud VMs. They only assert the calls our
  connectors make into those SDKs and how their errors are translated; they
  prove nothing about the real services. (dask-gateway and TLS are tested
  against real servers in tests/integration/.)
"""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from skyfeast.adapters import NotFound, make_cluster
from skyfeast.scheduler.cli import main
from skyfeast.scheduler.config import load_config
from tests.unit.test_config_errors import feast_repo  # noqa: F401  (session fixture: a minimal applied Feast repo)

HEAD = """\
project: t
feast:
  repo: "@REPO@"
providers:
  p1:
    cluster:
"""  # the cluster's first key is on line 7
TAIL = """\
    storage: {type: local, root: data}
jobs: []
"""
SDK_MODULES = ("dask_gateway", "dask_kubernetes", "coiled", "dask_cloudprovider", "aiobotocore", "googleapiclient")


def cluster_yaml(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "      ") + TAIL


def write(tmp_path: Path, repo: Path, body: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(cluster_yaml(body).replace("@REPO@", str(repo)))
    return cfg


def validate_err(cfg: Path, capsys) -> list[str]:
    """Run ``skyfeast validate``; assert exit 2 without traceback; the problem lines."""
    rc = main(["validate", "-c", str(cfg)])
    out = capsys.readouterr()
    assert rc == 2, out.err
    assert "Traceback" not in out.err + out.out
    assert out.err.startswith("skyfeast: error: invalid config"), out.err
    return [ln.strip() for ln in out.err.splitlines()[1:]]


def fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    """Put a FAKE module into sys.modules (importable, and found by importlib.util.find_spec)."""
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    if "." in name:
        parent, child = name.rsplit(".", 1)
        if parent not in sys.modules or sys.modules[parent] is None:
            fake_module(monkeypatch, parent)
        monkeypatch.setattr(sys.modules[parent], child, mod, raising=False)
    return mod


def sdks_present(monkeypatch) -> None:
    """Make every cluster SDK *look* installed to the config check (fake, empty modules where absent)."""
    import importlib.util

    for name in SDK_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            fake_module(monkeypatch, name)


def sdks_absent(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


# --------------------------------------------------------------------------- TLS settings of `address`
def test_tls_address_without_tls_settings_is_a_config_error(tmp_path, feast_repo, capsys):  # noqa: F811
    cfg = write(tmp_path, feast_repo, """
        type: address
        address: tls://127.0.0.1:8786
    """)
    lines = validate_err(cfg, capsys)
    assert lines == [f"{cfg}:8: providers.p1.cluster.address: tls:// address needs `tls: {{ca_file, cert, key}}` "
                     "(the client certificate the scheduler trusts)"]


def test_missing_tls_files_name_the_key_and_line(tmp_path, feast_repo, capsys):  # noqa: F811
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x")
    (tmp_path / "certs" / "client.pem").write_text("x")
    cfg = write(tmp_path, feast_repo, """
        type: address
        address: tls://10.0.0.5:8786
        tls:
          ca_file: certs/ca.pem
          cert: certs/client.pem
          key: certs/client-key.pem
    """)
    lines = validate_err(cfg, capsys)
    assert lines == [f"{cfg}:12: providers.p1.cluster.tls.key: file not found: {tmp_path / 'certs' / 'client-key.pem'}"]


def test_tls_settings_on_a_plain_address_is_a_config_error(tmp_path, feast_repo, capsys):  # noqa: F811
    (tmp_path / "ca.pem").write_text("x")
    cfg = write(tmp_path, feast_repo, """
        type: address
        address: tcp://10.0.0.5:8786
        tls: {ca_file: ca.pem, cert: ca.pem}
    """)
    lines = validate_err(cfg, capsys)
    assert lines == [f"{cfg}:9: providers.p1.cluster.tls: tls is set but address 'tcp://10.0.0.5:8786' is not "
                     "tls:// or wss://"]


def test_tls_settings_reach_the_security_object(tmp_path, monkeypatch):
    """Relative paths are anchored at the config file; require_encryption is passed on."""
    from tests.integration.test_cluster_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    (tmp_path / "data").mkdir()
    cfg_path = tmp_path / "skyfeast.yaml"
    cfg_path.write_text(cluster_yaml("""
        type: address
        address: tls://10.0.0.5:8786
        connect_timeout: 4s
        tls: {ca_file: pki/ca.pem, cert: pki/client-cert.pem, key: pki/client-key.pem, require_encryption: false}
    """).replace("@REPO@", "repo"))
    cfg = load_config(cfg_path, check_imports=False, check_feast=False)
    monkeypatch.chdir("/")
    conn = make_cluster(cfg.providers["p1"].cluster, "p1", cfg.base_dir)
    assert conn.connect_timeout == 4
    sec = conn.security
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key) == tuple(
        str(pki[k]) for k in ("ca", "client-cert", "client-key"))
    assert sec.require_encryption is False
    assert conn.connection_args["ssl_context"] is not None


# --------------------------------------------------------------------------- optional extras
EXTRA_CASES = [
    ("gateway", """
        type: gateway
        address: https://gateway.example.com
        cluster_name: prod
    """, ["dask_gateway"], "cluster type 'gateway' needs dask_gateway: pip install 'skyfeast[gateway]'"),
    ("kubernetes", """
        type: kubernetes
        name: features
        namespace: dask
    """, ["dask_kubernetes"], "cluster type 'kubernetes' needs dask_kubernetes: pip install 'skyfeast[kubernetes]'"),
    ("coiled", """
        type: coiled
        name: features
    """, ["coiled"], "cluster type 'coiled' needs coiled: pip install 'skyfeast[coiled]'"),
    ("cloudprovider-ec2", """
        type: cloudprovider
        backend: ec2
    """, ["dask_cloudprovider", "aiobotocore"],
     "cluster type 'cloudprovider' (backend ec2) needs dask_cloudprovider, aiobotocore: "
     "pip install 'skyfeast[cloudprovider]'"),
    ("cloudprovider-gcp-sdk-only", """
        type: cloudprovider
        backend: gcp
    """, ["googleapiclient"],
     "cluster type 'cloudprovider' (backend gcp) needs googleapiclient: pip install 'skyfeast[cloudprovider]'"),
]


@pytest.mark.parametrize("body, absent, message", [c[1:] for c in EXTRA_CASES], ids=[c[0] for c in EXTRA_CASES])
def test_missing_extra_names_the_extra(tmp_path, feast_repo, capsys, monkeypatch, body, absent, message):  # noqa: F811
    sdks_present(monkeypatch)
    sdks_absent(monkeypatch, *absent)
    cfg = write(tmp_path, feast_repo, body)
    assert validate_err(cfg, capsys) == [f"{cfg}:7: providers.p1.cluster.type: {message}"]


@pytest.mark.parametrize("body, _absent, _message", [c[1:] for c in EXTRA_CASES], ids=[c[0] for c in EXTRA_CASES])
def test_cluster_types_validate_when_their_sdk_is_present(tmp_path, feast_repo, capsys, monkeypatch,  # noqa: F811
                                                          body, _absent, _message):
    sdks_present(monkeypatch)
    cfg = write(tmp_path, feast_repo, body)
    assert main(["validate", "-c", str(cfg)]) == 0, capsys.readouterr().err


BAD_MODELS = [
    ("gateway-password-without-basic", """
        type: gateway
        address: https://gw.example.com
        cluster_name: prod
        password: hunter2
    """, "providers.p1.cluster.password", 10, "password cannot be used with auth: none"),
    ("gateway-jupyterhub-without-token", """
        type: gateway
        address: https://gw.example.com
        cluster_name: prod
        auth: jupyterhub
    """, "providers.p1.cluster.api_token", 6, "auth: jupyterhub needs api_token"),
    ("gateway-unknown-auth", """
        type: gateway
        address: https://gw.example.com
        cluster_name: prod
        auth: ldap
    """, "providers.p1.cluster.auth", 10, "Input should be 'none', 'basic', 'kerberos' or 'jupyterhub'"),
    ("gateway-address-not-http", """
        type: gateway
        address: gw.example.com:8000
        cluster_name: prod
    """, "providers.p1.cluster.address", 8, "String should match pattern"),
    ("kubernetes-without-name", """
        type: kubernetes
        namespace: dask
    """, "providers.p1.cluster.name", 6, "required key 'name' is missing"),
    ("coiled-options-name", """
        type: coiled
        name: features
        options: {name: other, n_workers: 4}
    """, "providers.p1.cluster.options", 9, "name cannot be set in options"),
    ("cloudprovider-unknown-backend", """
        type: cloudprovider
        backend: azure
    """, "providers.p1.cluster.backend", 8, "Input should be 'ec2' or 'gcp'"),
    ("cloudprovider-n-workers-in-options", """
        type: cloudprovider
        backend: ec2
        options:
          region: eu-west-1
          n_workers: 3
    """, "providers.p1.cluster.options", 9, "n_workers cannot be set in options"),
    ("unknown-cluster-type", """
        type: yarn
    """, "providers.p1.cluster.type", 7,
     "must be one of 'local', 'address', 'gateway', 'kubernetes', 'coiled', 'cloudprovider', got 'yarn'"),
]


@pytest.mark.parametrize("body, key, line, message", [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS])
def test_bad_cluster_settings_are_located(tmp_path, feast_repo, capsys, monkeypatch,  # noqa: F811
                                          body, key, line, message):
    sdks_present(monkeypatch)
    cfg = write(tmp_path, feast_repo, body)
    lines = validate_err(cfg, capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{cfg}:{line}: {key}: "), lines
    assert message in lines[0], lines


# --------------------------------------------------------------------------- registry: config -> connector
def load(tmp_path: Path, body: str):
    (tmp_path / "data").mkdir(exist_ok=True)
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(cluster_yaml(body).replace("@REPO@", "repo"))
    return load_config(cfg, check_imports=False, check_feast=False).providers["p1"].cluster


def test_gateway_config_builds_its_connector_with_env_secrets(tmp_path, monkeypatch):
    sdks_present(monkeypatch)
    monkeypatch.setenv("SKYFEAST_T_GW_PW", "pw-from-env")
    conn = make_cluster(load(tmp_path, """
        type: gateway
        address: https://gw.example.com
        cluster_name: prod
        proxy_address: gw.example.com:8786
        auth: basic
        username: etl
        password: ${SKYFEAST_T_GW_PW}
        connect_timeout: 45s
    """), "p1")
    from skyfeast.adapters.clusters.gateway import GatewayConnector

    assert isinstance(conn, GatewayConnector)
    assert (conn.gateway_address, conn.cluster_name, conn.proxy_address, conn.auth, conn.connect_timeout) == (
        "https://gw.example.com", "prod", "gw.example.com:8786", "basic", 45.0)
    assert conn._credentials == {"username": "etl", "password": "pw-from-env", "api_token": None}
    assert not conn.connected and conn.address is None


def test_gateway_auth_objects_are_dask_gatewayʼs():
    auth = pytest.importorskip("dask_gateway.auth", reason="dask-gateway (skyfeast[gateway]) is not installed")
    from skyfeast.adapters.clusters.gateway import make_auth

    basic = make_auth("basic", username="u", password="p")
    assert isinstance(basic, auth.BasicAuth) and (basic.username, basic.password) == ("u", "p")
    hub = make_auth("jupyterhub", api_token="tok")
    assert isinstance(hub, auth.JupyterHubAuth) and hub.api_token == "tok"
    assert isinstance(make_auth("kerberos"), auth.KerberosAuth)
    none = make_auth("none")
    assert isinstance(none, auth.GatewayAuth) and none.pre_request(None) == ({}, None)


def test_missing_sdk_at_connect_time_names_the_extra(monkeypatch):
    from skyfeast.adapters.clusters._sdk import MissingExtra
    from skyfeast.adapters.clusters.kubernetes import KubernetesConnector

    sdks_absent(monkeypatch, "dask_kubernetes", "dask_kubernetes.operator")
    conn = KubernetesConnector(cluster_name="c", name="p1")
    with pytest.raises(MissingExtra, match=r"pip install 'skyfeast\[kubernetes\]'"):
        conn.connect()
    assert not conn.connected


def test_connector_modules_import_no_sdk():
    """The SDKs are imported inside the connectors only, never by importing our modules."""
    code = ("import sys, skyfeast.adapters, skyfeast.adapters.registry, skyfeast.adapters.clusters.gateway, "
            "skyfeast.adapters.clusters.kubernetes, "
            "skyfeast.adapters.clusters.coiled, skyfeast.adapters.clusters.cloudprovider, skyfeast.scheduler.config; "
            f"print(sorted(m for m in {SDK_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- FAKE SDKs: call arguments only
class Recorder:
    """Stands in for an SDK class: records calls, returns ``result`` or raises ``error``."""

    def __init__(self, result=None, error: BaseException | None = None):
        self.calls: list[tuple[tuple, dict]] = []
        self.result, self.error = result, error

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result


def test_fake_sdk_kubernetes_connector_calls_from_name(tmp_path, monkeypatch):
    """FAKE dask_kubernetes: asserts only the KubeCluster.from_name arguments; never ran against Kubernetes."""
    sdks_present(monkeypatch)
    from_name = Recorder(result=object())
    fake_module(monkeypatch, "dask_kubernetes.operator", KubeCluster=types.SimpleNamespace(from_name=from_name))
    conn = make_cluster(load(tmp_path, """
        type: kubernetes
        name: features
        namespace: dask
        port_forward_cluster_ip: true
    """), "p1")
    cluster = conn._open()
    assert cluster is from_name.result
    assert from_name.calls == [(("features",), {"namespace": "dask", "port_forward_cluster_ip": True,
                                                "resource_timeout": 60, "shutdown_on_close": False, "quiet": True})]


def test_fake_sdk_kubernetes_cluster_whose_scheduler_never_answers_is_given_up_within_its_connect_timeout(
        monkeypatch):
    """FAKE dask_kubernetes: KubeCluster.from_name returns a cluster whose scheduler accepts connections and
    never answers. The client's start-up is bounded by the provider's ``connect_timeout`` (1.5 s here, so
    at most 3 s with open_client's start limit), not by Dask's 30 s default: a Transient naming it."""
    import time

    from skyfeast.adapters.base import Transient
    from skyfeast.adapters.clusters.kubernetes import KubernetesConnector
    from tests.silent import silent_server

    with silent_server() as port:
        from distributed.core import Status

        cluster = types.SimpleNamespace(scheduler_address=f"tcp://127.0.0.1:{port}", security=None,
                                        status=Status.running, dashboard_link="", close=lambda: None)
        fake_module(monkeypatch, "dask_kubernetes.operator",
                    KubeCluster=types.SimpleNamespace(from_name=Recorder(result=cluster)))
        conn = KubernetesConnector(cluster_name="features", namespace="dask", connect_timeout=1.5, name="p1")
        t0 = time.monotonic()
        with pytest.raises(Transient, match="connect_timeout 1.5 s"):
            conn.connect()
        assert time.monotonic() - t0 < 6, time.monotonic() - t0
        assert not conn.connected


def test_fake_sdk_kubernetes_missing_cluster_is_not_found(monkeypatch):
    """FAKE dask_kubernetes raising the ValueError KubeCluster raises for CONNECT_ONLY on an absent cluster."""
    from skyfeast.adapters.clusters.kubernetes import KubernetesConnector

    err = ValueError("Cluster features doesn't already exist and create mode is 'CreateMode.CONNECT_ONLY'")
    fake_module(monkeypatch, "dask_kubernetes.operator",
                KubeCluster=types.SimpleNamespace(from_name=Recorder(error=err)))
    conn = KubernetesConnector(cluster_name="features", namespace="dask", name="p1")
    with pytest.raises(NotFound, match="no DaskCluster 'features' in namespace dask"):
        conn.connect()
    assert not conn.connected


def _fake_coiled(monkeypatch, *, exists: bool):
    class DoesNotExist(Exception):
        pass

    lookups = Recorder(error=None if exists else DoesNotExist())

    class Cloud:
        def __init__(self, **kw):
            self.kw = kw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_cluster_by_name(self, **kw):
            return lookups(**kw)

    cluster = Recorder(result=object())
    fake_module(monkeypatch, "coiled", Cloud=Cloud, Cluster=cluster)
    fake_module(monkeypatch, "coiled.errors", DoesNotExist=DoesNotExist)
    return lookups, cluster


def test_fake_sdk_coiled_reuse_only_never_creates(tmp_path, monkeypatch):
    """FAKE coiled: an absent cluster is NotFound and coiled.Cluster (which would create it) is not called."""
    sdks_present(monkeypatch)
    lookups, cluster = _fake_coiled(monkeypatch, exists=False)
    conn = make_cluster(load(tmp_path, """
        type: coiled
        name: features
        workspace: team
    """), "p1")
    with pytest.raises(NotFound, match="no Coiled cluster 'features' in workspace team .*create: true"):
        conn.connect()
    assert lookups.calls == [((), {"name": "features", "workspace": "team"})]
    assert cluster.calls == []


def test_fake_sdk_coiled_existing_cluster_is_attached_by_name(tmp_path, monkeypatch):
    """FAKE coiled: asserts only the coiled.Cluster arguments for an existing cluster."""
    sdks_present(monkeypatch)
    lookups, cluster = _fake_coiled(monkeypatch, exists=True)
    conn = make_cluster(load(tmp_path, """
        type: coiled
        name: features
        options: {n_workers: 4}
    """), "p1")
    assert conn._open() is cluster.result
    assert lookups.calls == [((), {"name": "features", "workspace": None})]
    assert cluster.calls == [((), {"n_workers": 4, "name": "features", "workspace": None, "shutdown_on_close": False})]
    assert conn.owned is False


def test_fake_sdk_coiled_create_true_skips_the_lookup(tmp_path, monkeypatch):
    """FAKE coiled: with create: true the connector lets coiled.Cluster create (or reuse) the cluster."""
    sdks_present(monkeypatch)
    lookups, cluster = _fake_coiled(monkeypatch, exists=False)
    conn = make_cluster(load(tmp_path, """
        type: coiled
        name: features
        create: true
        shutdown_on_close: true
        options: {n_workers: 2, region: eu-west-1}
    """), "p1")
    conn._open()
    assert lookups.calls == []
    assert cluster.calls == [((), {"n_workers": 2, "region": "eu-west-1", "name": "features", "workspace": None,
                                   "shutdown_on_close": True})]
    assert conn.owned is True


@pytest.mark.parametrize("backend, module, cls", [("ec2", "dask_cloudprovider.aws", "EC2Cluster"),
                                                  ("gcp", "dask_cloudprovider.gcp", "GCPCluster")])
def test_fake_sdk_cloudprovider_arguments_and_owned_lifecycle(tmp_path, monkeypatch, backend, module, cls):
    """FAKE dask_cloudprovider: asserts the EC2Cluster/GCPCluster arguments. The object the fake returns is a
    real in-process ``distributed.LocalCluster``, so connect/close run for real: the daemon owns this cluster,
    a task runs on it, and ``close()`` shuts it down. No AWS or GCP VM was ever started."""
    from distributed import LocalCluster

    sdks_present(monkeypatch)
    made: list = []

    def factory(**kwargs):
        made.append(kwargs)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                            dashboard_address="127.0.0.1:0")

    fake_module(monkeypatch, module, **{cls: factory})
    conn = make_cluster(load(tmp_path, f"""
        type: cloudprovider
        backend: {backend}
        n_workers: 3
        options: {{region: eu-west-1, instance_type: t3.large}}
    """), "p1")
    try:
        client = conn.connect()
        assert made == [{"region": "eu-west-1", "instance_type": "t3.large", "n_workers": 3}]
        assert client.submit(lambda x: x * 2, 21).result(timeout=30) == 42
        assert conn.connect() is client and len(made) == 1
        cluster = conn._cluster
        assert conn.address == cluster.scheduler_address
    finally:
        conn.close()
    assert cluster.status.name == "closed"
    assert not conn.connected and conn.address is None
    conn.close()  # idempotent


def test_cluster_examples_in_the_config_reference_are_valid():
    """Every YAML example of docs/config.md's cluster section validates as a cluster (one per type)."""
    import re

    import yaml
    from pydantic import TypeAdapter

    from skyfeast.scheduler.config import Cluster

    doc = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    section = doc[doc.index("### `cluster`, by `type`"):doc.index("### `storage`, by `type`")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    types_seen = []
    for block in blocks:
        cluster = TypeAdapter(Cluster).validate_python(yaml.safe_load(textwrap.dedent(block))["cluster"])
        types_seen.append(cluster.type)
    assert sorted(types_seen) == ["address", "cloudprovider", "coiled", "gateway", "kubernetes"]


def test_silent_gateway_is_transient_within_connect_timeout():
    """A real dask-gateway client against a socket that accepts and never answers: Transient, in time."""
    pytest.importorskip("dask_gateway", reason="dask-gateway (skyfeast[gateway]) is not installed")
    import socket
    import time

    from skyfeast.adapters import Transient
    from skyfeast.adapters.clusters.gateway import GatewayConnector

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        conn = GatewayConnector(address=f"http://127.0.0.1:{srv.getsockname()[1]}", cluster_name="c",
                                connect_timeout=1.5, name="p1")
        t0 = time.monotonic()
        with pytest.raises(Transient, match=r"p1: timed out talking to gateway http://127.0.0.1:\d+ "
                                            r"\(connect_timeout 1.5s\)"):
            conn.connect()
        assert time.monotonic() - t0 < 15
    assert not conn.connected
