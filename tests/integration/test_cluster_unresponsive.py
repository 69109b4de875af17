"""A Dask scheduler address whose server accepts TCP connections and never answers: connecting gives
up within the connect timeout and a margin, as one readable Transient naming the address and the
timeout, and leaves no client, IO-loop thread or socket behind.

Regression: distributed bounds the TCP connect by ``timeout`` but not the handshake read after it,
and ``Client.start`` waits without a deadline, so ``skyfeast status --probe`` (and ``run``) hung
forever after "waiting for provider aws's cluster to start (2 s so far, gives up after 3 s)".
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from skyfeast.adapters.base import Transient
from skyfeast.adapters.clusters.address import AddressConnector
from tests.integration.conftest import QUICKSTART, skyfeast
from tests.silent import refusing_port, silent_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CONNECT_TIMEOUT = 2.0
BOUND = 9.0  # start_limit(2 s) = 4 s, closing the failed client, noise


def _connect_bounded(conn: AddressConnector, seconds: float) -> tuple[BaseException | None, float]:
    """``conn.connect()`` on a helper thread (so a regression fails here instead of hanging the run):
    the exception it raised (None if it connected) and the seconds it took."""
    out: list[BaseException | None] = []

    def target() -> None:
        try:
            conn.connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)
        else:
            out.append(None)

    t = threading.Thread(target=target, name="test-connect", daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(seconds)
    took = time.monotonic() - t0
    assert not t.is_alive(), f"connect() to a silent scheduler still waiting after {took:.1f} s"
    return out[0], took


def _settled_threads(before: set[int], seconds: float = 5.0) -> list[str]:
    """Names of threads started since ``before`` that are still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        extra = [t for t in threading.enumerate() if t.ident not in before and t.name != "test-connect"]
        if not extra or time.monotonic() > deadline:
            return [t.name for t in extra]
        time.sleep(0.1)


def test_a_silent_scheduler_is_transient_within_the_connect_timeout():
    from distributed import Client

    from skyfeast.adapters.clusters._client import _clients_in

    with silent_server() as port:
        address = f"tcp://127.0.0.1:{port}"
        before = {t.ident for t in threading.enumerate()}
        for attempt in range(2):  # and again: a failed attempt leaves nothing that slows the next one
            conn = AddressConnector(address=address, connect_timeout=CONNECT_TIMEOUT, name="aws")
            exc, took = _connect_bounded(conn, 30)
            assert isinstance(exc, Transient), repr(exc)
            assert took < BOUND, f"attempt {attempt}: {took:.1f} s"
            msg = str(exc)
            assert address in msg and "aws" in msg and f"connect_timeout {CONNECT_TIMEOUT:g} s" in msg, msg
            assert msg.count(address) == 1, msg  # said once, readable
            assert not conn.connected
            failed = list(_clients_in(exc, Client))
            assert len(failed) == 1, exc
            assert failed[0].status == "closed"
            assert not failed[0]._loop_runner.is_started()
            conn.close()
        assert _settled_threads(before) == []


def test_the_connection_to_a_silent_scheduler_is_closed():
    """The connection the handshake hung on is aborted, not left to its finalizer (which warns
    "Closing dangling stream", whenever garbage collection gets to it)."""
    import gc
    import logging

    import psutil

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    records = Records()
    tcp_log = logging.getLogger("distributed.comm.tcp")  # distributed's loggers may not propagate
    tcp_log.addHandler(records)
    try:
        with silent_server() as port:
            exc, _ = _connect_bounded(AddressConnector(address=f"tcp://127.0.0.1:{port}",
                                                       connect_timeout=1, name="aws"), 30)
            assert isinstance(exc, Transient), repr(exc)
            del exc
            gc.collect()
            mine = [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port]
    finally:
        tcp_log.removeHandler(records)
    assert mine == [], mine
    assert not [m for m in records.messages if "dangling" in m.lower()], records.messages


def test_status_probe_reports_a_silent_scheduler_as_down(tmp_path):
    """``skyfeast status --probe --json`` on the quickstart with aws's cluster at a silent address (and
    gcp's at a refusing one): it ends, the provider is down, and the probe error says why."""
    import shutil

    project = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, project, ignore=shutil.ignore_patterns("data", "__pycache__", ".skyfeast"))
    with silent_server() as port:
        cfg = yaml.safe_load((project / "skyfeast.yaml").read_text())
        address = f"tcp://127.0.0.1:{port}"
        cfg["providers"]["aws"]["cluster"] = {"type": "address", "address": address, "connect_timeout": "3s"}
        cfg["providers"]["gcp"]["cluster"] = {"type": "address", "address": f"tcp://127.0.0.1:{refusing_port()}",
                                              "connect_timeout": "1s"}
        cfg["jobs"] = []  # no Feast views to check: the repo needs no `feast apply`
        (project / "hung.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        t0 = time.monotonic()
        proc = skyfeast("status", "-c", "hung.yaml", "--probe", "--json", cwd=project, timeout=90)
        seconds = time.monotonic() - t0
    assert proc.returncode == 0, (proc.returncode, seconds, proc.stderr[-2000:])
    providers = {p["name"]: p for p in json.loads(proc.stdout)["providers"]}
    aws = providers["aws"]
    assert aws["state"] == "down", aws
    assert address in aws["probe_error"] and "connect_timeout 3 s" in aws["probe_error"], aws
    assert "Traceback" not in proc.stderr
    assert "waiting for provider aws's cluster to start" in proc.stderr
