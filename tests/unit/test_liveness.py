"""No headless daemon: a guarded thread that dies fails its runtime's liveness, and the daemon's
loop then stops with ThreadDied (after the usual shutdown), so the process can exit non-zero."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from skyfeast.scheduler.app.daemon import Daemon, ThreadDied
from skyfeast.scheduler.control.liveness import INJECT, InjectedFault, Liveness
from tests.unit.test_daemon_dispatch import Env, FakeExecute


def test_a_guarded_thread_that_raises_fails_the_runtime(caplog):
    live = Liveness()

    def loop():
        live.beat("worker")
        raise KeyError("boom")

    with caplog.at_level(logging.CRITICAL, logger="skyfeast.liveness"):
        t = threading.Thread(target=live.guard("worker", loop))
        t.start()
        t.join(5)
    assert live.failed.is_set() and live.dead() == {"worker": "KeyError: 'boom'"}
    assert "thread worker died" in caplog.text and caplog.records[0].exc_info is not None
    assert "worker" in live.ages()


def test_a_thread_that_ends_normally_is_not_a_death():
    live = Liveness()
    t = threading.Thread(target=live.guard("worker", lambda: None))
    t.start()
    t.join(5)
    assert not live.failed.is_set() and live.dead() == {}


def test_injected_death_hits_only_the_named_thread(monkeypatch):
    monkeypatch.setenv(INJECT, "heartbeat")
    live = Liveness()
    live.beat("health")
    with pytest.raises(InjectedFault):
        live.beat("heartbeat")


@pytest.mark.parametrize("how", ["thread", "reconciler"])
def test_the_daemon_stops_with_thread_died(tmp_path, how):
    env = Env(tmp_path)
    led = env.ledger("A")
    live = Liveness()

    def maintenance():
        raise OSError("reconciler lost its storage")

    d = Daemon(env.cfg, led, FakeExecute(led), cancel=threading.Event(), identity="A", clock=env.clock.view(),
               liveness=live, maintenance=maintenance if how == "reconciler" else None)
    errors: list[BaseException] = []

    def serve():
        try:
            d.serve()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        if how == "thread":
            time.sleep(0.3)
            live.died("health", RuntimeError("probe pool broke"))
        th.join(10)
        assert not th.is_alive(), "the daemon lived on headless"
        (exc,) = errors
        assert isinstance(exc, ThreadDied)
        assert set(exc.dead) == ({"health"} if how == "thread" else {"reconciler"})
    finally:
        d.stop.set()
        env.close()
