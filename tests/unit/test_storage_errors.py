"""SDK error → neutral error tables of the S3 and GCS stores, with hand-made SDK errors.

The emulators cannot be made to throttle or fail with a 5xx, so those rows are
checked here; tests/contract/test_object_store.py checks the rest over the wire.
"""

from __future__ import annotations

import pytest

from skyfeast.adapters.base import AdapterError, NotFound, PermissionDenied, QuotaExceeded, Transient
from tests.conftest import importorskip


def _exact(err: AdapterError | None, cls: type) -> bool:
    return type(err) is cls


# --------------------------------------------------------------------------- S3 / botocore
def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize("code,status,expected", [
    ("NoSuchKey", 404, NotFound),
    ("NoSuchBucket", 404, NotFound),
    ("404", 404, NotFound),  # HEAD: no body, so the code is the status
    ("AccessDenied", 403, PermissionDenied),
    ("403", 403, PermissionDenied),
    ("InvalidAccessKeyId", 403, PermissionDenied),
    ("SignatureDoesNotMatch", 403, PermissionDenied),
    ("ExpiredToken", 400, PermissionDenied),
    ("SlowDown", 503, QuotaExceeded),  # a 503, but a throttle: not Transient
    ("Throttling", 400, QuotaExceeded),
    ("RequestLimitExceeded", 503, QuotaExceeded),
    ("TooManyRequestsException", 429, QuotaExceeded),
    ("InternalError", 500, Transient),
    ("ServiceUnavailable", 503, Transient),
    ("BadGateway", 502, Transient),
    ("RequestTimeout", 400, Transient),
    ("InvalidArgument", 400, AdapterError),
    ("BucketAlreadyOwnedByYou", 409, AdapterError),
])
def test_s3_client_errors(code, status, expected):
    importorskip("botocore")
    from skyfeast.adapters.storage.s3 import translate

    err = translate(_client_error(code, status), "read s3://b/k")
    assert _exact(err, expected), err
    assert str(err).startswith("read s3://b/k: ")


@pytest.mark.parametrize("name,kwargs,expected", [
    ("EndpointConnectionError", {"endpoint_url": "http://x"}, Transient),
    ("ConnectTimeoutError", {"endpoint_url": "http://x"}, Transient),
    ("ReadTimeoutError", {"endpoint_url": "http://x"}, Transient),
    ("ConnectionClosedError", {"endpoint_url": "http://x"}, Transient),
    ("ResponseStreamingError", {"error": "reset"}, Transient),
    ("NoCredentialsError", {}, PermissionDenied),
    ("PartialCredentialsError", {"provider": "env", "cred_var": "AWS_SECRET_ACCESS_KEY"}, PermissionDenied),
    ("NoRegionError", {}, AdapterError),
])
def test_s3_botocore_errors(name, kwargs, expected):
    exceptions = importorskip("botocore.exceptions")
    from skyfeast.adapters.storage.s3 import translate

    assert _exact(translate(getattr(exceptions, name)(**kwargs), "w"), expected)


def test_s3_map_errors_chains_and_passes_foreign_errors():
    importorskip("botocore")
    from skyfeast.adapters.storage.s3 import map_errors

    sdk = _client_error("NoSuchKey", 404)
    with pytest.raises(NotFound) as info, map_errors("read"):
        raise sdk
    assert info.value.__cause__ is sdk
    with pytest.raises(ValueError), map_errors("read"):  # not an SDK error: untouched
        raise ValueError("bug")
    mine = Transient("already neutral")
    with pytest.raises(Transient) as again, map_errors("read"):
        raise mine
    assert again.value is mine


# --------------------------------------------------------------------------- GCS / google.api_core
def _gx():
    return importorskip("google.api_core.exceptions")


@pytest.mark.parametrize("name,expected", [
    ("NotFound", NotFound),
    ("Forbidden", PermissionDenied),
    ("Unauthorized", PermissionDenied),
    ("TooManyRequests", QuotaExceeded),
    ("ResourceExhausted", QuotaExceeded),
    ("ServiceUnavailable", Transient),
    ("InternalServerError", Transient),
    ("BadGateway", Transient),
    ("GatewayTimeout", Transient),
    ("DeadlineExceeded", Transient),
    ("BadRequest", AdapterError),
    ("Conflict", AdapterError),
    ("PreconditionFailed", AdapterError),
])
def test_gcs_api_errors(name, expected):
    gx = _gx()
    from skyfeast.adapters.storage.gcs import translate

    err = translate(getattr(gx, name)("m"), "read gs://b/k")
    assert _exact(err, expected), err
    assert str(err).startswith("read gs://b/k: ")


def test_gcs_forbidden_for_rate_limits_is_quota():
    gx = _gx()
    from skyfeast.adapters.storage.gcs import translate

    assert _exact(translate(gx.Forbidden("m", errors=[{"reason": "rateLimitExceeded"}]), "w"), QuotaExceeded)
    assert _exact(translate(gx.Forbidden("m", errors=[{"reason": "forbidden"}]), "w"), PermissionDenied)


def test_gcs_transport_and_auth_errors():
    gx = _gx()
    import requests
    from google.auth import exceptions as gax

    from skyfeast.adapters.storage.gcs import translate

    assert _exact(translate(gx.RetryError("deadline", cause=requests.ConnectionError("refused")), "w"), Transient)
    assert _exact(translate(requests.ConnectionError("refused"), "w"), Transient)
    assert _exact(translate(requests.Timeout("slow"), "w"), Transient)
    assert _exact(translate(gax.TransportError("dns"), "w"), Transient)
    assert _exact(translate(gax.DefaultCredentialsError("none"), "w"), PermissionDenied)
    assert _exact(translate(gax.RefreshError("revoked"), "w"), PermissionDenied)
    assert _exact(translate(gax.RefreshError("503", retryable=True), "w"), Transient)
    assert translate(ValueError("bug"), "w") is None
