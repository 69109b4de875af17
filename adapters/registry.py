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


def make_cluster(cfg: Any, name: str) -> ClusterConnector:
    if cfg.type == "local":
        from adapters.clusters.local import LocalConnector

        return LocalConnector(workers=cfg.workers, threads=cfg.threads, memory_limit=cfg.memory_limit, name=name)
    if cfg.type == "address":
        from adapters.clusters.address import AddressConnector

        return AddressConnector(address=cfg.address, connect_timeout=cfg.connect_timeout.total_seconds(), name=name)
    raise ValueError(f"unknown cluster type {cfg.type!r}")
