"""Health monitor against a real local cluster: kill, hang (SIGSTOP) and recovery (SIGCONT)."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

from skyfeast.scheduler.config import HealthSettings, LocalCluster, LocalStorage, Provider
from skyfeast.scheduler.control.health import HealthMonitor
from skyfeast.scheduler.control.policy import ProviderState
from skyfeast.scheduler.control.providers import ProviderPool

pytestmark = pytest.mark.chaos


class _NoCordons:
    def cordons(self):
        return {}


def _pool(tmp_path, **health):
    cfg = SimpleNamespace(
        base_dir=tmp_path,
        providers={"a": Provider(cluster=LocalCluster(type="local", workers=1), storage=LocalStorage(type="local", root="a"),
                                 priority=1)},
        health=HealthSettings(interval="0.5s", timeout="1s", miss_budget=3, blocklist_ttl="2s",
                              failback_after="1s", **health),
    )
    return ProviderPool(cfg), cfg


def _until(monitor, pool, state, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        monitor.probe_once()
        if pool.breaker("a").state is state:
            return time.monotonic() - t0
        time.sleep(0.5)
    pytest.fail(f"provider never became {state.value} within {timeout}s (is {pool.breaker('a').state.value})")


def test_hang_is_detected_within_10s_and_recovers_after_sigcont(tmp_path):
    pool, cfg = _pool(tmp_path)
    monitor = HealthMonitor(pool, _NoCordons(), cfg.health)
    try:
        pool.client("a")
        assert _until(monitor, pool, ProviderState.HEALTHY, 10) < 10
        pid = pool._clusters["a"].scheduler_pid
        os.kill(pid, signal.SIGSTOP)
        try:
            detected = _until(monitor, pool, ProviderState.DOWN, 15)
            assert detected <= 10, f"hang detected after {detected:.1f}s"
        finally:
            os.kill(pid, signal.SIGCONT)
        # blocklist TTL (2 s), then a half-open probe, then healthy again
        assert _until(monitor, pool, ProviderState.HEALTHY, 30) > 1.5
        assert pool.views()["a"].state in (ProviderState.DEGRADED, ProviderState.HEALTHY)
        time.sleep(1.1)  # failback_after
        assert pool.views()["a"].state is ProviderState.HEALTHY
    finally:
        monitor.close()
        pool.close()


def test_kill_is_detected_within_2s_and_a_managed_cluster_is_restarted(tmp_path):
    pool, cfg = _pool(tmp_path)
    monitor = HealthMonitor(pool, _NoCordons(), cfg.health)
    try:
        pool.client("a")
        _until(monitor, pool, ProviderState.HEALTHY, 10)
        os.kill(pool._clusters["a"].scheduler_pid, signal.SIGKILL)
        killed = time.monotonic()
        while pool.breaker("a").state is not ProviderState.DOWN and time.monotonic() - killed < 5:
            monitor.probe_once()  # the monitor's loop, at the configured 0.5 s interval
            time.sleep(0.5)
        assert pool.breaker("a").state is ProviderState.DOWN
        detected = time.monotonic() - killed
        assert detected <= 2, f"kill detected after {detected:.1f}s"
        assert pool.views()["a"].state is ProviderState.DOWN
        # after the blocklist TTL the monitor restarts the dead cluster it owns and probes it half-open
        assert _until(monitor, pool, ProviderState.HEALTHY, 60) > 1.5
        assert pool._clusters["a"].scheduler_pid is not None
    finally:
        monitor.close()
        pool.close()
