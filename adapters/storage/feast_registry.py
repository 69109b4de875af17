"""Feast's registry file on S3 or GCS, under deadlines of ours.

Feast's ``S3RegistryStore`` builds its boto3 resource with boto3's defaults: a 60 s connect
and a 60 s read, retried, which took minutes on an endpoint that accepts and never answers.
Feast's ``GCSRegistryStore`` makes three calls to read the file (the bucket, the blob's
existence, the download), each with google-cloud-storage's default retry budget of 120 s.
:class:`BoundedS3RegistryStore` is Feast's S3 store (Feast's code reads and writes the file)
with the timeouts below; :class:`BoundedGCSRegistryStore` is Feast's GCS store whose calls
carry them. ``skyfeast.featurestore.repo.load_store`` selects them, in Feast's config in memory,
for an ``s3://`` or ``gs://`` registry whose config names no store class of its own. boto3 and
google.cloud are imported here, at the cloud boundary, and only when a store is built.
"""

from __future__ import annotations

import functools
import os

CONNECT_S = 5.0
READ_S = 20.0  # a registry file is kilobytes to a few megabytes
ATTEMPTS = 3

GCS_RETRY_S = 20.0  # google-cloud-storage's retry budget per call (its default: 120 s)
GCS_CALLS = 3  # a GCS read: the bucket, the blob's existence, the download

STORE_CLASSES = {"s3": f"{__name__}.BoundedS3RegistryStore", "gs": f"{__name__}.BoundedGCSRegistryStore"}


def deadline(scheme: str = "s3") -> float:
    """Seconds a registry read may take in all. S3: every attempt's connect and read, and botocore's
    standard backoff between attempts (≤ 2**i s), as :class:`skyfeast.adapters.storage.s3.S3Store`
    counts its own. GCS: each call's retry budget and the request in flight when it runs out."""
    if scheme == "gs":
        return GCS_CALLS * (GCS_RETRY_S + CONNECT_S + READ_S)
    return ATTEMPTS * (CONNECT_S + READ_S) + sum(min(2.0 ** i, 20.0) for i in range(1, ATTEMPTS))


def __getattr__(name: str):  # Feast imports the class by name (registry_store_type)
    if name == "BoundedS3RegistryStore":
        return _store_class()
    if name == "BoundedGCSRegistryStore":
        return _gcs_store_class()
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


@functools.cache
def _gcs_store_class():
    import uuid
    from tempfile import TemporaryFile

    from feast.infra.registry.gcs import GCSRegistryStore
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from feast.utils import _utc_now

    class BoundedGCSRegistryStore(GCSRegistryStore):
        """Feast's GCS registry store; each call with (CONNECT_S, READ_S) and a GCS_RETRY_S budget.
        The two methods are Feast 0.67's own (``infra/registry/gcs.py``) with those arguments."""

        def _call_args(self) -> dict:
            from google.cloud.storage.retry import DEFAULT_RETRY

            return {"timeout": (CONNECT_S, READ_S), "retry": DEFAULT_RETRY.with_timeout(GCS_RETRY_S)}

        def get_registry_proto(self):
            import google.cloud.storage as storage
            from google.cloud.exceptions import NotFound

            bounded = self._call_args()
            file_obj = TemporaryFile()
            registry_proto = RegistryProto()
            try:
                bucket = self.gcs_client.get_bucket(self._bucket, **bounded)
            except NotFound:
                raise Exception(f"No bucket named {self._bucket} exists; please create it first.") from None
            if storage.Blob(bucket=bucket, name=self._blob).exists(self.gcs_client, **bounded):
                self.gcs_client.download_blob_to_file(self._uri.geturl(), file_obj, **bounded)
                file_obj.seek(0)
                registry_proto.ParseFromString(file_obj.read())
                return registry_proto
            raise FileNotFoundError(f'Registry not found at path "{self._uri.geturl()}". Have you run "feast apply"?')

        def _write_registry(self, registry_proto):
            bounded = self._call_args()
            registry_proto.version_id = str(uuid.uuid4())
            registry_proto.last_updated.FromDatetime(_utc_now())
            blob = self.gcs_client.get_bucket(self._bucket, **bounded).blob(self._blob)
            file_obj = TemporaryFile()
            file_obj.write(registry_proto.SerializeToString())
            file_obj.seek(0)
            # the whole file each time: rewriting the same bytes is idempotent, so retried like a read
            blob.upload_from_file(file_obj, **bounded)

    return BoundedGCSRegistryStore
