"""S3 and GCS stores beyond the shared contract: error translation over the wire,
credentials, and their url()/storage_options wiring.

These need a backend-specific handle (a bucket that does not exist, an endpoint
that is down, an emulator with IAM switched on), so they are parametrised over
the bucket backends only; tests/contract/test_object_store.py runs the shared
contract on every backend, and tests/unit/test_storage_errors.py checks the
error tables rows the emulators cannot produce (throttling, 5xx).
"""

from __future__ import annotations

import json
import sys
import time

import fsspec
import pytest

from skyfeast.adapters.base import NotFound, ObjectStore, PermissionDenied, Transient
from tests.conftest import importorskip
from tests.emulators import S3_KEYS, closed_port, make_gcs_bucket, make_s3_bucket, need_sdk, unique_bucket


def _bucket_store(request: pytest.FixtureRequest, kind: str, bucket: str | None = None, endpoint: str | None = None,
                  **kw) -> ObjectStore:
    if kind == "s3":
        need_sdk("S3 backend", "s3", "boto3", "s3fs")
        from skyfeast.adapters.storage.s3 import S3Store

        endpoint = endpoint or request.getfixturevalue("moto_server").endpoint
        return S3Store(bucket or make_s3_bucket(endpoint), endpoint_url=endpoint, **{**S3_KEYS, **kw})
    need_sdk("GCS backend", "gcs", "google.cloud.storage", "gcsfs")
    from skyfeast.adapters.storage.gcs import GCSStore

    endpoint = endpoint or request.getfixturevalue("gcs_emulator").endpoint
    return GCSStore(bucket or make_gcs_bucket(endpoint), project="skyfeast-test", endpoint=endpoint, **kw)


@pytest.fixture(params=["s3", "gcs"])
def bucket_kind(request) -> str:
    return request.param


def test_errors_keep_the_sdk_error_as_cause(request, bucket_kind):
    store = _bucket_store(request, bucket_kind)
    with pytest.raises(NotFound) as info:
        store.read_bytes("missing.bin")
    cause = info.value.__cause__
    assert cause is not None and type(cause).__module__.split(".")[0] in ("botocore", "google")
    assert "missing.bin" in str(info.value)


def test_missing_bucket_is_not_found(request, bucket_kind):
    store = _bucket_store(request, bucket_kind, bucket=unique_bucket())
    with pytest.raises(NotFound):
        store.check()
    with pytest.raises(NotFound):
        store.read_bytes("k")
    with pytest.raises(NotFound):  # a missing bucket is a misconfiguration, not an empty listing
        store.list()
    with pytest.raises(NotFound):
        store.write_bytes("k", b"x")


def test_unreachable_endpoint_is_transient_and_quick(request, bucket_kind):
    # retries are bounded by the store's settings: S3 by its default 3 attempts, GCS here by a 1 s budget
    kw = {"retry_deadline": 1.0} if bucket_kind == "gcs" else {}
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = _bucket_store(request, bucket_kind, bucket="no-server-here", endpoint=endpoint, **kw)
    started = time.monotonic()
    with pytest.raises(Transient):
        store.read_bytes("k")
    assert time.monotonic() - started < 8
    # every other call maps the same way (no retries here, to keep the suite fast)
    once = {"retry_deadline": 0.0} if bucket_kind == "gcs" else {"max_attempts": 1}
    store = _bucket_store(request, bucket_kind, bucket="no-server-here", endpoint=endpoint, **once)
    store.client  # made on first use (seconds on a loaded host); the bound below is on the calls' retries
    for call in (store.check, lambda: store.write_bytes("k", b"x"), store.list, lambda: store.exists("k"),
                 lambda: store.delete(["k"])):
        started = time.monotonic()
        with pytest.raises(Transient):
            call()
        assert time.monotonic() - started < 2


def test_s3_list_follows_pages(request):
    # S3 only: gcp-storage-emulator ignores maxResults and never pages, so a GCS
    # run would pass without testing anything (google-cloud-storage's iterator pages)
    store = _bucket_store(request, "s3")
    store.list_page_size = 2  # 7 keys: four pages
    keys = [f"p/k{i}" for i in range(7)]
    for k in keys:
        store.write_bytes(k, b"x")
    assert store.list() == keys and store.list("p/") == keys
    assert store.glob("p/k*") == keys


def test_store_survives_pickling(request, bucket_kind):
    import pickle

    store = _bucket_store(request, bucket_kind)
    store.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_bytes("k") == b"v" and clone.url("k") == store.url("k")


def test_gcsfs_against_the_emulator_does_not_hang(request):
    """gcsfs probes the bucket layout over gRPC on every open; the storage options keep that instant."""
    store = _bucket_store(request, "gcs")
    started = time.monotonic()
    for i in range(5):
        with fsspec.open(store.url(f"k{i}"), "wb", **store.storage_options) as fh:
            fh.write(b"x")
        with fsspec.open(store.url(f"k{i}"), "rb", **store.storage_options) as fh:
            assert fh.read() == b"x"
    assert time.monotonic() - started < 10  # without retry_timeout=0 each open took ~60 s


# --------------------------------------------------------------------------- S3 credentials against moto with IAM on
@pytest.fixture(scope="module")
def moto_with_auth():
    """A private moto server with IAM auth switched on, plus a bucket and two users.

    moto accepts any credentials by default; POST /moto-api/reset-auth turns on
    signature and policy checks for every later request. Returns
    (endpoint, bucket, allowed_keys, denied_keys).
    """
    need_sdk("S3 backend", "s3", "boto3", "s3fs")
    import boto3

    from tests.emulators import http, running, start_moto

    with running(start_moto) as emu:
        bucket = make_s3_bucket(emu.endpoint)
        iam = boto3.client("iam", endpoint_url=emu.endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        keys = {}
        for user in ("allowed", "denied"):
            iam.create_user(UserName=user)
            k = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (k["AccessKeyId"], k["SecretAccessKey"])
        iam.put_user_policy(UserName="allowed", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        status, _ = http("POST", f"{emu.endpoint}/moto-api/reset-auth", b"0")
        assert status == 200
        yield emu.endpoint, bucket, keys["allowed"], keys["denied"]


@pytest.mark.parametrize("who,code", [
    ("unknown-key", "InvalidAccessKeyId"),
    ("wrong-secret", "SignatureDoesNotMatch"),
    ("no-policy", "AccessDenied"),
])
def test_s3_bad_credentials_are_permission_denied(moto_with_auth, who, code):
    from skyfeast.adapters.storage.s3 import S3Store

    endpoint, bucket, (akid, secret), denied = moto_with_auth
    creds = {"unknown-key": ("AKIANOSUCHKEY0000000", secret), "wrong-secret": (akid, "not-the-secret"),
             "no-policy": denied}[who]
    store = S3Store(bucket, prefix="p", region="us-east-1", endpoint_url=endpoint,
                    access_key_id=creds[0], secret_access_key=creds[1])
    calls = {"write": lambda: store.write_bytes("k", b"x"), "read": lambda: store.read_bytes("k"),
             "list": store.list, "exists": lambda: store.exists("k"), "check": store.check}
    for name, call in calls.items():
        with pytest.raises(PermissionDenied) as info:
            call()
        if name not in ("check", "exists"):  # HEAD responses carry no error code, only the 403
            assert info.value.__cause__.response["Error"]["Code"] == code, name
    # the same server accepts the right credentials: the denial above is the credentials' doing
    ok = S3Store(bucket, prefix="p", region="us-east-1", endpoint_url=endpoint, access_key_id=akid, secret_access_key=secret)
    ok.write_bytes("k", b"x")
    assert ok.read_bytes("k") == b"x" and ok.list() == ["k"]
    ok.check()


def test_s3_without_any_credentials_is_permission_denied(request, monkeypatch, tmp_path):
    from skyfeast.adapters.storage.s3 import S3Store

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance-metadata service
    endpoint = request.getfixturevalue("moto_server").endpoint
    store = S3Store("any-bucket", region="us-east-1", endpoint_url=endpoint)
    assert "key" not in store.storage_options  # s3fs falls back to the same default chain
    with pytest.raises(PermissionDenied):
        store.read_bytes("k")


# --------------------------------------------------------------------------- construction, urls, options (no I/O)
def test_s3_url_and_storage_options():
    importorskip("boto3")
    from skyfeast.adapters.storage.s3 import S3Store

    full = S3Store("b", prefix="/runs/a/", region="eu-west-1", endpoint_url="http://h:1", access_key_id="K",
                   secret_access_key="S", session_token="T")
    assert full.url() == "s3://b/runs/a" and full.url("x/y.parquet") == "s3://b/runs/a/x/y.parquet"
    assert full.url("events/*.parquet") == "s3://b/runs/a/events/*.parquet"
    assert full.storage_options == {"key": "K", "secret": "S", "token": "T",
                                    "client_kwargs": {"endpoint_url": "http://h:1", "region_name": "eu-west-1"}}
    bare = S3Store("b")
    assert bare.url() == "s3://b" and bare.url("k") == "s3://b/k"
    assert bare.storage_options == {}
    with pytest.raises(PermissionDenied):
        bare.url("../other-prefix/k")


def test_gcs_url_and_storage_options(monkeypatch, tmp_path):
    importorskip("google.cloud.storage")
    from skyfeast.adapters.storage.gcs import GCSStore

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default credentials
    real = GCSStore("b", prefix="runs/a", project="p")
    assert real.url() == "gs://b/runs/a" and real.url("x/y.parquet") == "gs://b/runs/a/x/y.parquet"
    assert real.storage_options == {"project": "p"}  # gcsfs' default credentials, public endpoint
    emu = GCSStore("b", endpoint="http://127.0.0.1:9/")
    assert emu.anonymous
    assert emu.storage_options == {"endpoint_url": "http://127.0.0.1:9", "token": "anon", "retry_timeout": 0}


@pytest.mark.parametrize("module,cls,extra", [("skyfeast.adapters.storage.s3", "S3Store", "s3"),
                                              ("skyfeast.adapters.storage.gcs", "GCSStore", "gcs")])
def test_missing_sdk_names_the_extra(monkeypatch, module, cls, extra):
    import importlib

    mod = importlib.import_module(module)  # the module itself imports without the SDK
    for name in ("boto3", "botocore.config") if extra == "s3" else ("google.cloud.storage",):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(ImportError, match=rf"pip install 'skyfeast\[{extra}\]'"):
        getattr(mod, cls)("bucket")
