"""Fixtures that build a real quickstart project (events, Feast repo, config) in a temp dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

QUICKSTART = ROOT / "examples" / "quickstart"
BIN = Path(sys.executable).parent
END = "2026-03-02T12:00:00Z"  # data ends here; the hourly window [11:00, 12:00) is "current" at 12:30
AT = "2026-03-02T12:30:00Z"


def skyfeast(*args: str, cwd: Path, timeout: float = 300, check: bool = False, env: dict | None = None):
    """Run the installed ``skyfeast`` console script; returns CompletedProcess (text)."""
    proc = subprocess.run([str(BIN / "skyfeast"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"skyfeast {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def skyfeast_json(*args: str, cwd: Path, **kw) -> tuple[int, dict]:
    proc = skyfeast(*args, "--json", cwd=cwd, **kw)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def make_project(dest: Path, *, end: str = END, users: int = 1500, per_day: int = 15000, days: int = 8,
                 edit=None) -> Path:
    """Copy the quickstart to ``dest``, seed deterministic events, ``feast apply``. Returns the config path."""
    shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("data", "__pycache__", ".skyfeast"))
    subprocess.run([sys.executable, "seed.py", "--users", str(users), "--events-per-day", str(per_day),
                    "--days", str(days), "--end", end], cwd=dest, check=True, capture_output=True, timeout=120)
    subprocess.run([str(BIN / "feast"), "apply"], cwd=dest / "feature_repo", check=True, capture_output=True, timeout=180)
    cfg = dest / "skyfeast.yaml"
    if edit is not None:
        data = yaml.safe_load(cfg.read_text())
        edit(data)
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """A quickstart project where both jobs already ran for [11:00, 12:00) via ``skyfeast run --json``."""
    dest = tmp_path_factory.mktemp("qs") / "quickstart"
    cfg = make_project(dest)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=dest)
    return {"dir": dest, "config": cfg, "exit": code, "report": report}


class Spawned:
    """A background process whose output goes to files, not pipes: a chatty process can
    never block on a full pipe while the test waits for something else."""

    def __init__(self, args: list[str], cwd: Path, **kw):
        import tempfile

        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=self._out, stderr=self._err, text=True,
                                     env={**os.environ, **kw.pop("env", {})}, **kw)
        self.pid = self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        return self.proc.poll()

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.proc.wait(timeout=timeout)
        self._out.seek(0)
        self._err.seek(0)
        return self._out.read(), self._err.read()
