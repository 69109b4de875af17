"""Amazon S3 (or any S3-compatible endpoint) as an object store.

The control plane goes through boto3; Dask I/O goes through s3fs with
:attr:`S3Store.storage_options`, which reach the same endpoint with the same
credentials. boto3 is imported on construction, not with this module, so the
module imports fine without the ``s3`` extra.

Error translation (:func:`map_errors`)::

    NoSuchKey, NoSuchBucket, 404                          -> NotFound
    AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
    ExpiredToken, 401/403, no credentials                 -> PermissionDenied
    SlowDown, Throttling, RequestLimitExceeded, 429       -> QuotaExceeded
    other 5xx, connection refused/closed, timeouts        -> Transient
    anything else from botocore                           -> AdapterError
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from skyfeast.adapters.base import AdapterError, NotFound, PermissionDenied, QuotaExceeded, Transient, translating
from skyfeast.adapters.storage._bucket import BucketStore, MissingExtra

NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload"}
DENIED = {
    "AccessDenied", "403", "Forbidden", "401", "Unauthorized", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
}
THROTTLED = {
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "RequestLimitExceeded", "TooManyRequestsException", "BandwidthLimitExceeded",
}
TRANSIENT = {"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException", "OperationAborted"}
_DELETE_BATCH = 1000  # DeleteObjects limit


def _sdk() -> Any:
    try:
        import boto3
        import botocore.config
    except ImportError as exc:
        raise MissingExtra("S3 storage", "s3", exc) from exc
    return boto3, botocore.config.Config


def _from_code(code: str, status: int | None, msg: str) -> AdapterError:
    if code in NOT_FOUND or status == 404:
        return NotFound(msg)
    if code in DENIED or status in (401, 403):
        return PermissionDenied(msg)
    if code in THROTTLED or status == 429:  # before 5xx: SlowDown comes as a 503
        return QuotaExceeded(msg)
    if code in TRANSIENT or (status or 0) >= 500:
        return Transient(msg)
    return AdapterError(msg)


def translate(exc: BaseException, what: str) -> AdapterError | None:
    """The neutral error for a botocore/boto3 exception, or None if it is not one."""
    try:
        from botocore import exceptions as bce
    except ImportError:  # no botocore: nothing to translate
        return None
    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _from_code(code, status, f"{what}: {code or status} {err.get('Message', '')}".rstrip())
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError)):
        return PermissionDenied(f"{what}: {exc}")
    if isinstance(exc, (bce.HTTPClientError, bce.ConnectionError, bce.IncompleteReadError)):
        # EndpointConnectionError, ConnectTimeout, ReadTimeout, ConnectionClosed, ResponseStreaming
        return Transient(f"{what}: {exc}")
    if isinstance(exc, bce.BotoCoreError):
        return AdapterError(f"{what}: {exc}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Transient(f"{what}: {exc}")
    return None


def map_errors(what: str):
    """Re-raise botocore/boto3 errors as neutral :mod:`skyfeast.adapters.base` errors (``from exc``)."""
    return translating(translate, what)


class S3Store(BucketStore):
    """Objects under ``s3://bucket/prefix/``.

    Without keys the default AWS credential chain applies (env, profile, IMDS).
    ``connect_timeout``/``read_timeout`` (seconds) and ``max_attempts`` bound how
    long a call keeps trying (``max_attempts`` counts the first try) before it
    raises :class:`Transient`.
    """

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ):
        super().__init__(bucket, prefix)
        _sdk()  # fail at configuration time, not on first use
        self.region = region
        self.endpoint_url = endpoint_url
        self._creds = (access_key_id, secret_access_key, session_token)
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        # every attempt's connect and read, and botocore's standard backoff between them (≤ 2**i s)
        self.deadline = max_attempts * (connect_timeout + read_timeout) + sum(min(2.0 ** i, 20.0)
                                                                            for i in range(1, max_attempts))

    @property
    def storage_options(self) -> dict:
        key, secret, token = self._creds
        opts: dict[str, Any] = {k: v for k, v in (("key", key), ("secret", secret), ("token", token)) if v is not None}
        client_kwargs = {k: v for k, v in (("endpoint_url", self.endpoint_url), ("region_name", self.region)) if v}
        if client_kwargs:
            opts["client_kwargs"] = client_kwargs
        return opts

    def _connect(self) -> Any:
        boto3, Config = _sdk()
        key, secret, token = self._creds
        connect, read, attempts = self._timeouts
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token, region_name=self.region
        )
        config = Config(
            connect_timeout=connect, read_timeout=read, retries={"mode": "standard", "total_max_attempts": attempts}
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return map_errors(what)

    def _list_names(self, full_prefix: str) -> Iterable[str]:
        paging = {"PageSize": self.list_page_size} if self.list_page_size else {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full_prefix, PaginationConfig=paging
        )
        for page in pages:
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    def _get(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def _put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=name, Body=data)

    def _exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if isinstance(translate(exc, ""), NotFound):
                return False
            raise
        return True

    def _delete_names(self, names: list[str]) -> None:
        for i in range(0, len(names), _DELETE_BATCH):
            chunk = names[i : i + _DELETE_BATCH]
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in chunk], "Quiet": True}
            )
            for err in resp.get("Errors", ()):
                if err.get("Code") not in NOT_FOUND:
                    raise _from_code(str(err.get("Code", "")), None, f"delete s3://{self.bucket}/{err.get('Key')}: "
                                     f"{err.get('Code')} {err.get('Message', '')}".rstrip())

    def check(self) -> None:
        """HEAD the bucket: NotFound if it is missing, PermissionDenied if not ours."""
        with self._calling(f"check {self.url()}"):
            self.client.head_bucket(Bucket=self.bucket)
