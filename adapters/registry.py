"""Build adapters from config models (looked up by the model's ``type``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.base import ClusterConnector, ObjectStore


def make_store(cfg: Any, base_dir: Path) -> ObjectStore:
    if cfg.type == "local":
        from adapters.storage.local import LocalStore

        root = Path(cfg.root).expanduser()
        return LocalStore(root if root.is_absolute() else (base_dir / root).resolve())
    if cfg.type == "s3":
        from adapters.storage.s3 import S3Store

        return S3Store(cfg.bucket, cfg.prefix, region=cfg.region, endpoint_url=cfg.endpoint_url,
                       access_key_id=cfg.access_key_id, secret_access_key=_secret(cfg.secret_access_key),
                       session_token=_secret(cfg.session_token))
    if cfg.type == "gcs":
        from adapters.storage.gcs import GCSStore

        return GCSStore(cfg.bucket, cfg.prefix, project=cfg.project, endpoint=cfg.endpoint)
    raise ValueError(f"unknown storage type {cfg.type!r}")


def _secret(value: Any) -> str | None:
    return None if value is None else value.get_secret_value()


def make_cluster(cfg: Any, name: str, base_dir: Path | None = None) -> ClusterConnector:
    """Connector for a cluster model. ``base_dir`` (the config file's directory) anchors relative
    TLS paths; without it they are relative to the working directory."""
    if cfg.type == "local":
        from adapters.clusters.local import LocalConnector

        return LocalConnector(workers=cfg.workers, threads=cfg.threads, memory_limit=cfg.memory_limit, name=name)
    if cfg.type == "address":
        from adapters.clusters.address import AddressConnector

        security = None
        if cfg.tls is not None:
            from adapters.clusters._tls import make_security

            def path(p: str) -> Path:
                q = Path(p).expanduser()
                return q if q.is_absolute() or base_dir is None else (base_dir / q).resolve()

            security = make_security(ca_file=path(cfg.tls.ca_file), cert=path(cfg.tls.cert),
                                     key=None if cfg.tls.key is None else path(cfg.tls.key),
                                     require_encryption=cfg.tls.require_encryption)
        return AddressConnector(address=cfg.address, connect_timeout=cfg.connect_timeout.total_seconds(), name=name,
                                security=security)
    if cfg.type == "gateway":
        from adapters.clusters.gateway import GatewayConnector

        return GatewayConnector(address=cfg.address, cluster_name=cfg.cluster_name, proxy_address=cfg.proxy_address,
                                public_address=cfg.public_address, auth=cfg.auth, username=cfg.username,
                                password=_secret(cfg.password), api_token=_secret(cfg.api_token),
                                connect_timeout=cfg.connect_timeout.total_seconds(), name=name)
    if cfg.type == "kubernetes":
        from adapters.clusters.kubernetes import KubernetesConnector

        return KubernetesConnector(cluster_name=cfg.name, namespace=cfg.namespace,
                                   port_forward_cluster_ip=cfg.port_forward_cluster_ip,
                                   connect_timeout=cfg.connect_timeout.total_seconds(), name=name)
    if cfg.type == "coiled":
        from adapters.clusters.coiled import CoiledConnector

        return CoiledConnector(cluster_name=cfg.name, workspace=cfg.workspace, create=cfg.create,
                               shutdown_on_close=cfg.shutdown_on_close, options=cfg.options, name=name)
    if cfg.type == "cloudprovider":
        from adapters.clusters.cloudprovider import CloudProviderConnector

        return CloudProviderConnector(backend=cfg.backend, n_workers=cfg.n_workers, options=cfg.options, name=name)
    raise ValueError(f"unknown cluster type {cfg.type!r}")
