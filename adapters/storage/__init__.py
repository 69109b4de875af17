"""Object storage backends. ``local`` is built in; S3 and GCS are optional extras.

- ``local.LocalStore(root)``: a directory; the embedded default.
- ``s3.S3Store(bucket, prefix="", region=None, endpoint_url=None, access_key_id=None,
  secret_access_key=None, session_token=None)``: S3 or an S3-compatible endpoint via
  boto3, Dask I/O via s3fs. Needs ``pip install 'skyfeast[s3]'``.
- ``gcs.GCSStore(bucket, prefix="", project=None, endpoint=None)``: Google Cloud Storage
  (or an emulator at ``endpoint``) via google-cloud-storage, Dask I/O via gcsfs. Needs
  ``pip install 'skyfeast[gcs]'``.

The cloud modules import their SDK on construction, so importing them is cheap and
works without the extra; constructing a store without it raises an ImportError that
names the extra. Only ``s3.py`` and ``gcs.py`` import boto3/botocore/google.*;
``_bucket.py`` holds the key rules and store logic they share.
"""
