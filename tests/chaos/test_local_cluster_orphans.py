"""A SIGKILLed daemon leaves no Dask process behind: local clusters' scheduler and workers
get the parent-death signal (Linux), however busy the parent's other threads are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.chaos

CHILD = r"""
import json, sys, threading, time
from skyfeast.adapters.clusters.local import LocalConnector

# other threads importing and allocating while the cluster's processes are forked
def churn():
    import importlib
    while True:
        for name in ("json", "decimal", "fractions", "statistics"):
            importlib.reload(importlib.import_module(name))
        bytearray(1 << 20)

for _ in range(3):
    threading.Thread(target=churn, daemon=True).start()
conn = LocalConnector(workers=2, threads=1, memory_limit="512MiB", name="orphans")
conn.connect()
print(json.dumps([conn.scheduler_pid, *conn.worker_pids]), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_parent_takes_its_local_cluster_with_it():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=root, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": root})
    try:
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "cluster processes outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
