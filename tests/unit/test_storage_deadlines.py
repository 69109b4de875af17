"""Object-store calls have deadlines, set per provider's storage (issue 14, item 4): against an
endpoint that accepts connections and never answers, a call fails within its deadline, as a
Transient naming the call, not after minutes."""

from __future__ import annotations

import time

import pytest

from skyfeast.adapters import PermissionDenied, Transient, make_store
from skyfeast.scheduler.config import GCSStorage, S3Storage
from tests.silent import silent_server


@pytest.fixture
def silent_port():
    with silent_server() as port:
        yield port


def test_s3_call_against_a_silent_endpoint_fails_within_its_deadline(tmp_path, silent_port):
    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    cfg = S3Storage(type="s3", bucket="features", endpoint_url=f"http://127.0.0.1:{silent_port}", region="us-east-1",
                    access_key_id="k", secret_access_key="s", connect_timeout="1s", read_timeout="1s")
    store = make_store(cfg, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(Transient) as ei:
        store.check()
    seconds = time.monotonic() - t0
    # 3 attempts of a 1 s read timeout, plus backoff; the default (60 s reads) would take minutes
    assert seconds < 10, seconds
    msg = str(ei.value)
    assert "s3://features" in msg and "timeout" in msg.lower() and str(silent_port) in msg, msg


def test_storage_deadlines_default_to_seconds_and_reach_the_stores(tmp_path):
    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    pytest.importorskip("google.cloud.storage", reason="the gcs extra is not installed")
    s3 = S3Storage(type="s3", bucket="features")
    assert (s3.connect_timeout.total_seconds(), s3.read_timeout.total_seconds()) == (5, 60)
    store = make_store(S3Storage(type="s3", bucket="features", connect_timeout="2s", read_timeout="20s"), tmp_path)
    config = store._connect().meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 20)
    gcs = make_store(GCSStorage(type="gcs", bucket="features", endpoint="http://127.0.0.1:9", read_timeout="7s",
                                connect_timeout="2s"), tmp_path)
    assert gcs._timeout == (2, 7) and gcs.deadline == 10 + 2 + 7  # its retry budget, and the request in flight


def test_a_storage_call_past_two_seconds_says_what_it_waits_for(tmp_path, silent_port, caplog):
    """A call that waits says so once it passes two seconds: the call, the object and its deadline."""
    import logging

    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    from skyfeast.adapters.storage.s3 import S3Store

    # the config's three attempts (1 s connect, 3 s read) and botocore's backoff between them
    cfg = S3Storage(type="s3", bucket="features", connect_timeout="1s", read_timeout="3s")
    assert make_store(cfg, tmp_path).deadline == 3 * (1 + 3) + 2 + 4
    store = S3Store("features", endpoint_url=f"http://127.0.0.1:{silent_port}", region="us-east-1",
                    access_key_id="k", secret_access_key="s", connect_timeout=1, read_timeout=3, max_attempts=1)
    assert store.deadline == 4  # one attempt: its connect and read, no backoff
    with caplog.at_level(logging.INFO, logger="skyfeast.wait"), pytest.raises(Transient):
        store.read_bytes("views/part-0.parquet")
    (notice,) = [r.getMessage() for r in caplog.records if r.name == "skyfeast.wait"]
    assert notice.startswith("waiting for read s3://features/views/part-0.parquet (2 s so far"), notice
    assert notice.endswith("gives up after 4 s)"), notice
    caplog.clear()
    store.deadline = None  # a quick call says nothing: here, one that fails at once
    with caplog.at_level(logging.INFO, logger="skyfeast.wait"), pytest.raises(PermissionDenied):
        store.write_bytes("../escape", b"x")
    assert not [r for r in caplog.records if r.name == "skyfeast.wait"]
