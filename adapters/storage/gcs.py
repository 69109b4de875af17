"""Google Cloud Storage (or its emulator) as an object store.

The control plane goes through google-cloud-storage; Dask I/O goes through
gcsfs with :attr:`GCSStore.storage_options`. The SDK is imported on
construction, not with this module, so the module imports fine without the
``gcs`` extra.

Error translation (:func:`map_errors`)::

    NotFound (404)                                         -> NotFound
    Forbidden/Unauthorized (401/403), bad credentials      -> PermissionDenied
    TooManyRequests (429), ResourceExhausted, 403 rate/quota reasons -> QuotaExceeded
    5xx, DeadlineExceeded, retry budget spent,
    requests ConnectionError/Timeout, auth transport errors -> Transient
    anything else from google.api_core                     -> AdapterError
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable
from typing import Any

from skyfeast.adapters.base import AdapterError, NotFound, PermissionDenied, QuotaExceeded, Transient, translating
from skyfeast.adapters.storage._bucket import BucketStore, MissingExtra

QUOTA_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}


def _sdk() -> Any:
    try:
        storage = importlib.import_module("google.cloud.storage")
    except ImportError as exc:
        raise MissingExtra("GCS storage", "gcs", exc) from exc
    return storage


def _by_status(status: int | None, msg: str) -> AdapterError:
    if status == 404:
        return NotFound(msg)
    if status in (401, 403):
        return PermissionDenied(msg)
    if status == 429:
        return QuotaExceeded(msg)
    if status is not None and (status >= 500 or status == 408):
        return Transient(msg)
    return AdapterError(msg)


def translate(exc: BaseException, what: str) -> AdapterError | None:
    """The neutral error for a google.* / requests exception, or None if it is not one."""
    msg = f"{what}: {exc}"
    try:
        import requests
        from google.api_core import exceptions as gx
        from google.auth import exceptions as gax
        from google.cloud.storage import exceptions as gsx
    except ImportError:  # no SDK: nothing to translate
        return None
    if isinstance(exc, gx.RetryError):  # the retry budget ran out on transient errors
        return Transient(msg)
    if isinstance(exc, gx.Forbidden) and any(e.get("reason") in QUOTA_REASONS for e in exc.errors or ()):
        return QuotaExceeded(msg)
    if isinstance(exc, (gx.TooManyRequests, gx.ResourceExhausted)):
        return QuotaExceeded(msg)
    if isinstance(exc, (gx.Forbidden, gx.Unauthorized, gx.PermissionDenied, gx.Unauthenticated)):
        return PermissionDenied(msg)
    if isinstance(exc, gx.NotFound):
        return NotFound(msg)
    if isinstance(exc, (gx.ServerError, gx.DeadlineExceeded, gx.ServiceUnavailable)):
        return Transient(msg)
    if isinstance(exc, gx.GoogleAPICallError):
        return _by_status(exc.code if isinstance(exc.code, int) and exc.code >= 100 else None, msg)
    if isinstance(exc, gax.RefreshError):
        return Transient(msg) if getattr(exc, "retryable", False) else PermissionDenied(msg)
    if isinstance(exc, gax.DefaultCredentialsError):
        return PermissionDenied(msg)
    if isinstance(exc, gax.TransportError):
        return Transient(msg)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return Transient(msg)
    if isinstance(exc, gsx.InvalidResponse):
        return _by_status(getattr(exc.response, "status_code", None), msg)
    if isinstance(exc, gsx.DataCorruption):  # checksum mismatch in transit: read again
        return Transient(msg)
    if isinstance(exc, gax.GoogleAuthError):
        return PermissionDenied(msg)
    return None


def map_errors(what: str):
    """Re-raise google-cloud-storage errors as neutral :mod:`skyfeast.adapters.base` errors (``from exc``)."""
    return translating(translate, what)


def _credentials_configured() -> bool:
    """ADC is set up locally (env var or gcloud's file); never asks the metadata server."""
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    try:
        from google.auth import _cloud_sdk

        return os.path.exists(_cloud_sdk.get_application_default_credentials_path())
    except (ImportError, AttributeError, OSError):  # a private helper; if it moves, assume none
        return False


class GCSStore(BucketStore):
    """Objects under ``gs://bucket/prefix/``.

    ``endpoint`` (e.g. ``http://127.0.0.1:9023`` for an emulator) replaces the
    public API; with it and no locally configured credentials the client is
    anonymous, as emulators expect. ``connect_timeout``/``read_timeout`` bound
    one request and ``retry_deadline`` all retries of a call, after which it
    raises :class:`Transient`.
    """

    scheme = "gs"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        project: str | None = None,
        endpoint: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retry_deadline: float = 10.0,
    ):
        super().__init__(bucket, prefix)
        _sdk()  # fail at configuration time, not on first use
        self.project = project
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.anonymous = bool(self.endpoint) and not _credentials_configured()
        self._timeout = (connect_timeout, read_timeout)
        self._retry_deadline = retry_deadline
        self.deadline = retry_deadline + connect_timeout + read_timeout  # the retries, and the request in flight
        self._retry: Any = None

    @property
    def storage_options(self) -> dict:
        opts: dict[str, Any] = {}
        if self.project:
            opts["project"] = self.project
        if self.endpoint:
            opts["endpoint_url"] = self.endpoint
            # gcsfs >= 2026.4 asks the Storage Control gRPC API for the bucket
            # layout on every open; an emulator speaks only JSON/HTTP, and the
            # default 60 s retry budget turns each open into a 60 s hang. With no
            # retry budget the probe fails at once and gcsfs falls back to HTTP.
            opts["retry_timeout"] = 0
        if self.anonymous:
            opts["token"] = "anon"
        return opts

    def _connect(self) -> Any:
        storage = _sdk()
        kwargs: dict[str, Any] = {}
        if self.endpoint:
            kwargs["client_options"] = {"api_endpoint": self.endpoint}
        if self.anonymous:
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
            kwargs["project"] = self.project  # None: no project, and no ADC lookup for one
        elif self.project:
            kwargs["project"] = self.project
        from google.cloud.storage.retry import DEFAULT_RETRY

        self._retry = DEFAULT_RETRY.with_timeout(self._retry_deadline)
        return storage.Client(**kwargs)

    @property
    def _call(self) -> dict:
        self.client  # noqa: B018 - sets _retry
        return {"retry": self._retry, "timeout": self._timeout}

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return map_errors(what)

    def _list_names(self, full_prefix: str) -> Iterable[str]:
        blobs = self.client.list_blobs(self.bucket, prefix=full_prefix, page_size=self.list_page_size, **self._call)
        for blob in blobs:  # the iterator fetches further pages as it goes
            yield blob.name

    def _get(self, name: str) -> bytes:
        return self.client.bucket(self.bucket).blob(name).download_as_bytes(**self._call)

    def _put(self, name: str, data: bytes) -> None:
        blob = self.client.bucket(self.bucket).blob(name)
        # an upload of the same bytes is idempotent, so retry it like a read
        blob.upload_from_string(data, content_type="application/octet-stream", **self._call)

    def _exists(self, name: str) -> bool:
        return self.client.bucket(self.bucket).blob(name).exists(**self._call)

    def _delete_names(self, names: list[str]) -> None:
        from google.api_core.exceptions import NotFound as GNotFound

        bucket = self.client.bucket(self.bucket)
        for name in names:  # emulators lack the batch API; the daemon deletes a few parts at a time
            with contextlib.suppress(GNotFound):
                bucket.delete_blob(name, **self._call)

    def check(self) -> None:
        """List at most one object: NotFound if the bucket is missing, PermissionDenied if not ours."""
        with self._calling(f"check {self.url()}"):
            list(self.client.list_blobs(self.bucket, prefix=self.prefix, max_results=1, **self._call))
