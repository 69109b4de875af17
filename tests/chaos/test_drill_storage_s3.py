"""The S3 storage-outage fault against moto's S3 server, over real HTTP/TCP (no cluster):
the control plane and the ``storage_options`` that tasks already hold both lose storage,
detection by ``check()`` is a prompt Transient (not a timeout), and restore brings it back."""

from __future__ import annotations

import time

import pytest

from skyfeast.adapters.base import Transient
from skyfeast.scheduler.drills.faults import BucketStorageOutage
from tests.emulators import S3_KEYS, make_s3_bucket, need_sdk

pytestmark = pytest.mark.chaos


def _task_write(url: str, opts: dict, data: bytes) -> None:
    """What a partition task does with the storage options it was submitted with."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True, **opts)
    with fs.open(path, "wb") as fh:
        fh.write(data)


def test_s3_outage_cuts_control_plane_and_in_flight_tasks_then_restores(moto_server):
    need_sdk("S3 backend", "s3", "boto3", "s3fs")
    from skyfeast.adapters.storage.s3 import S3Store

    endpoint = moto_server.endpoint
    store = S3Store(make_s3_bucket(endpoint), "drill", endpoint_url=endpoint, **S3_KEYS)
    store.write_bytes("before.txt", b"1")
    fault = BucketStorageOutage(store)
    try:
        fault.prepare()
        relayed = store.storage_options  # what tasks submitted from now on carry
        assert relayed["client_kwargs"]["endpoint_url"] != endpoint  # through the drill's relay
        store.check()
        _task_write(store.url("task-before.txt"), relayed, b"ok")
        assert store.read_bytes("task-before.txt") == b"ok"

        fault.inject()
        t0 = time.monotonic()
        with pytest.raises(Transient):
            store.check()
        assert time.monotonic() - t0 < 30, "an unreachable endpoint must fail fast (refused), not hang"
        with pytest.raises(Exception):  # a task holding the options from before the outage fails too
            _task_write(store.url("task-during.txt"), relayed, b"lost")
        assert store.storage_options["client_kwargs"]["endpoint_url"] not in (endpoint, relayed["client_kwargs"]["endpoint_url"])

        fault.restore()
        store.check()
        assert store.read_bytes("before.txt") == b"1"
        assert not store.exists("task-during.txt")
    finally:
        fault.close()
    assert store.endpoint_url == endpoint and store.storage_options["client_kwargs"]["endpoint_url"] == endpoint
