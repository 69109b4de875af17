"""Build adapters from config models (looked up by the model's ``type``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfeast.adapters.base import ClusterConnector, ObjectStore

if TYPE_CHECKING:
    from skyfeast.adapters.clusters.local import Preload


def make_store(cfg: Any, base_dir: Path) -> ObjectStore:
    if cfg.type == "local":
        from skyfeast.adapters.storage.local import LocalStore

        root = Path(cfg.root).expanduser()
        return LocalStore(root if root.is_absolute() else (base_dir / root).resolve())
    if cfg.type == "s3":
        from skyfeast.adapters.storage.s3 import S3Store

        return S3Store(cfg.bucket, cfg.prefix, region=cfg.region, endpoint_url=cfg.endpoint_url,
                       access_key_id=cfg.access_key_id, secret_access_key=_secret(cfg.secret_access_key),
                       session_token=_secret(cfg.session_token), **_timeouts(cfg))
    if cfg.type == "gcs":
        from skyfeast.adapters.storage.gcs import GCSStore

        return GCSStore(cfg.bucket, cfg.prefix, project=cfg.project, endpoint=cfg.endpoint, **_timeouts(cfg))
    raise ValueError(f"unknown storage type {cfg.type!r}")


def _timeouts(cfg: Any) -> dict[str, float]:
    return {"connect_timeout": cfg.connect_timeout.total_seconds(), "read_timeout": cfg.read_timeout.total_seconds()}


def _secret(value: Any) -> str | None:
    return None if value is None else value.get_secret_value()


def address_connector(address: str, *, tls: Any = None, name: str = "address", base_dir: Path | None = None,
                      connect_timeout: float = 10.0) -> ClusterConnector:
    """Connector for a running scheduler at ``address``; ``tls`` is a :class:`ClusterTLS` (or its dict)
    whose relative paths are anchored at ``base_dir``."""
    from skyfeast.adapters.clusters.address import AddressConnector

    security = None
    if tls is not None:
        from skyfeast.adapters.clusters._tls import ClusterTLS, make_security

        tls = ClusterTLS.model_validate(tls)

        def path(p: str) -> Path:
            q = Path(p).expanduser()
            return q if q.is_absolute() or base_dir is None else (base_dir / q).resolve()

        security = make_security(ca_file=path(tls.ca_file), cert=path(tls.cert),
                                 key=None if tls.key is None else path(tls.key),
                                 require_encryption=tls.require_encryption)
    return AddressConnector(address=address, connect_timeout=connect_timeout, name=name, security=security)


def make_cluster(cfg: Any, name: str, base_dir: Path | None = None, *,
                 preload: Preload | None = None) -> ClusterConnector:
    """Connector for a cluster model. ``base_dir`` (the config file's directory) anchors relative
    TLS paths; without it they are relative to the working directory. ``preload`` names what the
    processes of a cluster this process starts (``local``) import at start; other types ignore it."""
    if cfg.type == "local":
        from skyfeast.adapters.clusters import local

        return local.LocalConnector(workers=cfg.workers, threads=cfg.threads, memory_limit=cfg.memory_limit,
                                    name=name, preload=preload or local.Preload(),
                                    start_timeout=cfg.start_timeout.total_seconds())
    if cfg.type == "address":
        return address_connector(cfg.address, tls=cfg.tls, name=name, base_dir=base_dir,
                                 connect_timeout=cfg.connect_timeout.total_seconds())
    if cfg.type == "gateway":
        from skyfeast.adapters.clusters.gateway import GatewayConnector

        return GatewayConnector(address=cfg.address, cluster_name=cfg.cluster_name, proxy_address=cfg.proxy_address,
                                public_address=cfg.public_address, auth=cfg.auth, username=cfg.username,
                                password=_secret(cfg.password), api_token=_secret(cfg.api_token),
                                connect_timeout=cfg.connect_timeout.total_seconds(), name=name)
    if cfg.type == "kubernetes":
        from skyfeast.adapters.clusters.kubernetes import KubernetesConnector

        return KubernetesConnector(cluster_name=cfg.name, namespace=cfg.namespace,
                                   port_forward_cluster_ip=cfg.port_forward_cluster_ip,
                                   connect_timeout=cfg.connect_timeout.total_seconds(), name=name)
    if cfg.type == "coiled":
        from skyfeast.adapters.clusters.coiled import CoiledConnector

        return CoiledConnector(cluster_name=cfg.name, workspace=cfg.workspace, create=cfg.create,
                               shutdown_on_close=cfg.shutdown_on_close, options=cfg.options, name=name)
    if cfg.type == "cloudprovider":
        from skyfeast.adapters.clusters.cloudprovider import CloudProviderConnector

        return CloudProviderConnector(backend=cfg.backend, n_workers=cfg.n_workers, options=cfg.options, name=name)
    raise ValueError(f"unknown cluster type {cfg.type!r}")
