"""A network wait past two seconds says what it waits for, once (issue 14, item 4); cluster start
has one configurable deadline."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest

from skyfeast.adapters import Transient, waiting
from skyfeast.adapters.waiting import set_notifier


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(waiting, "NOTICE_AFTER", 0.2)
    yield
    set_notifier(None)


def test_a_short_wait_shows_nothing(quick, caplog):
    with caplog.at_level(logging.INFO, "skyfeast.wait"), waiting.waiting("the ledger", 5):
        pass
    time.sleep(0.4)
    assert caplog.records == []


def test_a_long_wait_is_announced_once_with_its_deadline(quick, caplog):
    with caplog.at_level(logging.INFO, "skyfeast.wait"), waiting.waiting("the ledger at postgresql://h/db", 5):
        time.sleep(0.7)
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for the ledger at postgresql://h/db (0 s so far, gives up after 5 s)"]


def test_a_terminal_notice_is_taken_down_when_the_wait_ends(quick):
    shown, taken_down = [], threading.Event()
    set_notifier(lambda text: shown.append(text) or taken_down.set)
    with waiting.waiting("provider aws's cluster to start"):
        time.sleep(0.5)
        assert shown == ["waiting for provider aws's cluster to start (0 s so far)"] and not taken_down.is_set()
    assert taken_down.is_set()


def test_a_slow_cluster_start_is_logged_once_naming_the_provider(quick, caplog, monkeypatch, tmp_path):
    from skyfeast.scheduler.config import AddressCluster, HealthSettings, LocalStorage, Provider
    from skyfeast.scheduler.control import providers

    class Slow:
        connect_timeout = 30.0
        address = None

        def connect(self):
            time.sleep(0.6)
            return "client"

        def close(self):
            pass

    monkeypatch.setattr(providers, "make_cluster", lambda *a, **k: Slow())
    cfg = SimpleNamespace(base_dir=tmp_path, health=HealthSettings(), providers={
        "onprem": Provider(cluster=AddressCluster(type="address", address="tcp://127.0.0.1:9"),
                           storage=LocalStorage(type="local", root="s"))})
    pool = providers.ProviderPool(cfg)
    with caplog.at_level(logging.INFO, "skyfeast.wait"):
        assert pool.client("onprem") == "client"
    # a client's start-up may take its connect timeout, then as long again for the replies (start_limit)
    assert [r.getMessage() for r in caplog.records] == [
        "waiting for provider onprem's cluster to start (0 s so far, gives up after 60 s)"]
    assert caplog.records[0].levelno == logging.INFO


def test_a_local_cluster_start_gives_up_at_its_deadline(tmp_path):
    """A scheduler process cannot even import distributed in 0.2 s, so that deadline is never met (a
    1 s one was, at times, on a warm machine)."""
    from skyfeast.adapters import make_cluster
    from skyfeast.scheduler.config import LocalCluster

    conn = make_cluster(LocalCluster(type="local", workers=1, start_timeout="0.2s"), "tiny", tmp_path)
    assert conn.start_timeout == 0.2
    t0 = time.monotonic()
    try:
        with pytest.raises(Transient, match=r"within 0\.2 s \(start_timeout\)"):
            conn.connect()
    finally:
        conn.close()
    assert time.monotonic() - t0 < 10


def test_short_waits_start_no_thread_each_and_a_long_one_is_still_announced(quick, caplog, monkeypatch):
    """One watcher thread serves every wait (a timer thread each cost ~0.3 ms a call, on every
    storage call): a burst of short waits starts no thread, and a long wait after it is announced."""
    with waiting.waiting("warm-up"):
        pass
    starts = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: starts.append(self.name) or start(self))
    with caplog.at_level(logging.INFO, "skyfeast.wait"):
        for i in range(2000):
            with waiting.waiting(f"call {i}", 5):
                pass
        assert starts == []
        with waiting.waiting("the slow one", 5):
            time.sleep(0.5)
    assert [r.getMessage() for r in caplog.records] == ["waiting for the slow one (0 s so far, gives up after 5 s)"]
