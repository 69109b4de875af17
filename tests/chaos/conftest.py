"""Helpers for tests that kill daemons, schedulers or storage on purpose."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.integration.conftest import BIN, make_project

SLOW_TRANSFORM = '''

import time as _time


def slow_features(events, window):
    """The quickstart transform, slowed so that a kill lands mid-run."""
    _time.sleep({seconds})
    return user_features(events, window)
'''


def future_end() -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:00:00Z")


def slow_job(cfg: dict, partitions: int) -> None:
    """One worker a provider, and the first job runs ``slow_features`` over ``partitions`` chunks: a
    fault injected a moment after its run starts lands mid-run (see :func:`add_slow_transform`)."""
    for p in cfg["providers"].values():
        p["cluster"]["workers"] = 1
    cfg["jobs"][0]["transform"] = "transforms:slow_features"
    cfg["jobs"][0]["partitions"] = partitions


def chaos_edit(state: str | None, every: str = "5s"):
    def edit(cfg):
        if state:
            cfg["state"] = state
        cfg["daemon"] = {"run_lease": "4s", "leader_lease": "3s", "poll": "0.5s", "grace": "60s"}
        # these tests kill and restart daemons, not providers: a probe slowed by the loaded test
        # host must not fail runs over (detection has its own tests with their own settings)
        cfg["health"] = {"timeout": "5s", "miss_budget": 4}
        for job in cfg["jobs"]:
            job["schedule"] = {"type": "interval", "every": every}
            job["catchup"] = "all"
        slow_job(cfg, partitions=6)
    return edit


def chaos_project(dest: Path, state: str | None, *, users: int = 400, per_day: int = 3000) -> Path:
    """A quickstart for daemons that are killed and restarted (its config path): :func:`chaos_edit`'s
    settings on the ledger ``state`` (None: the project's SQLite file), and ``slow_features``."""
    cfg = make_project(dest, end=future_end(), users=users, per_day=per_day, edit=chaos_edit(state))
    add_slow_transform(dest)
    return cfg


def add_slow_transform(project: Path, seconds: float = 0.4) -> None:
    """Append ``slow_features`` (the quickstart's ``user_features``, ``seconds`` slower a chunk) to
    the project's transforms.py."""
    with open(project / "transforms.py", "a") as fh:
        fh.write(SLOW_TRANSFORM.format(seconds=seconds))


# The drills' health settings: a killed scheduler is seen in about a second, and the provider is
# probed again soon enough that restore and failback are measured within the test.
DRILL_HEALTH = {"interval": "0.5s", "timeout": "2s", "miss_budget": 3, "blocklist_ttl": "3s", "failback_after": "2s"}


def drill_project(dest: Path, **health: str) -> Path:
    """A small quickstart for ``skyfeast drill`` (its config path): recent events (Feast's online reads
    drop values older than the view's 8-day ttl), one worker a provider, and ``user_features`` slowed
    to 8 chunks of 0.6 s, so that the fault lands mid-run. ``health`` overrides :data:`DRILL_HEALTH`."""
    def edit(cfg):
        cfg["health"] = {**DRILL_HEALTH, **health}
        slow_job(cfg, partitions=8)

    cfg = make_project(dest, end=future_end(), days=8, users=300, per_day=2000, edit=edit)
    add_slow_transform(cfg.parent, seconds=0.6)
    return cfg


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
