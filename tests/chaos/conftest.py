"""Helpers for tests that kill daemons on purpose."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.integration.conftest import BIN

SLOW_TRANSFORM = '''

import time as _time


def slow_features(events, window):
    """The quickstart transform, slowed so that a kill lands mid-run."""
    _time.sleep(0.4)
    return user_features(events, window)
'''


def future_end() -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:00:00Z")


def chaos_edit(state: str | None, every: str = "5s"):
    def edit(cfg):
        if state:
            cfg["state"] = state
        cfg["daemon"] = {"run_lease": "4s", "leader_lease": "3s", "poll": "0.5s", "grace": "60s"}
        # these tests kill and restart daemons, not providers: a probe slowed by the loaded test
        # host must not fail runs over (detection has its own tests with their own settings)
        cfg["health"] = {"timeout": "5s", "miss_budget": 4}
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        for job in cfg["jobs"]:
            job["schedule"] = {"type": "interval", "every": every}
            job["catchup"] = "all"
        cfg["jobs"][0]["transform"] = "transforms:slow_features"
        cfg["jobs"][0]["partitions"] = 6
    return edit


def add_slow_transform(project: Path) -> None:
    with open(project / "transforms.py", "a") as fh:
        fh.write(SLOW_TRANSFORM)


class DaemonProc:
    """A ``skyfeast daemon`` in its own process group, so a kill takes its Dask workers too."""

    def __init__(self, cfg: Path, log: Path, env: dict[str, str] | None = None):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(BIN / "skyfeast"), "-v", "daemon", "-c", str(cfg)], cwd=cfg.parent,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the daemon and everything it started (a host crash)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 180) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group
            except (ProcessLookupError, PermissionError):
                pass
        self.log.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
