"""Feast's registry file on S3, under deadlines of ours.

Feast's ``S3RegistryStore`` builds its boto3 resource with boto3's defaults: a 60 s connect
and a 60 s read, retried, which took minutes on an endpoint that accepts and never answers.
:class:`BoundedS3RegistryStore` is the same store (Feast's code reads and writes the file) with
the timeouts below. ``skyfeast.featurestore.repo.load_store`` selects it, in Feast's config in
memory, for an ``s3://`` registry whose config names no store class of its own. boto3 is
imported here, at the cloud boundary, and only when the store is built.
"""

from __future__ import annotations

import functools
import os

CONNECT_S = 5.0
READ_S = 20.0  # a registry file is kilobytes to a few megabytes
ATTEMPTS = 3

STORE_CLASS = f"{__name__}.BoundedS3RegistryStore"


def deadline() -> float:
    """Seconds a registry read may take in all: every attempt's connect and read, and botocore's
    standard backoff between attempts (≤ 2**i s), as :class:`skyfeast.adapters.storage.s3.S3Store`
    counts its own."""
    return ATTEMPTS * (CONNECT_S + READ_S) + sum(min(2.0 ** i, 20.0) for i in range(1, ATTEMPTS))


def __getattr__(name: str):  # Feast imports the class by name (registry_store_type)
    if name == "BoundedS3RegistryStore":
        return _store_class()
    raise AttributeError(name)


@functools.cache
def _store_class():
    from feast.infra.registry.s3 import S3RegistryStore

    from skyfeast.adapters.storage.s3 import _sdk

    class BoundedS3RegistryStore(S3RegistryStore):
        """Feast's S3 registry store with CONNECT_S, READ_S and ATTEMPTS (see the module)."""

        def __init__(self, registry_config, repo_path):
            super().__init__(registry_config, repo_path)
            boto3, Config = _sdk()
            config = Config(connect_timeout=CONNECT_S, read_timeout=READ_S,
                            retries={"mode": "standard", "total_max_attempts": ATTEMPTS})
            self.s3_client = boto3.resource("s3", endpoint_url=os.environ.get("FEAST_S3_ENDPOINT_URL"), config=config)

    return BoundedS3RegistryStore
