"""A local Dask cluster the daemon starts and owns: scheduler and workers as separate processes.

The scheduler runs in its own OS process (not inside the daemon), so that a
stalled daemon cannot stall the cluster, and so that drills and tests can
SIGKILL or SIGSTOP the scheduler alone. Every child dies with the daemon
(``PR_SET_PDEATHSIG`` on Linux), so a killed daemon leaves no orphans.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adapters.base import ClusterConnector, Transient

log = logging.getLogger("skyfeast.clusters.local")
START_TIMEOUT = 60.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalConnector(ClusterConnector):
    def __init__(self, *, workers: int, threads: int, memory_limit: str, name: str = "local"):
        self.workers = workers
        self.threads = threads
        self.memory_limit = memory_limit
        self.name = name
        self._client = None
        self._scheduler: subprocess.Popen | None = None
        self._workers: list[subprocess.Popen] = []
        self._address: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def address(self) -> str | None:
        return self._address

    @property
    def connected(self) -> bool:
        """A client is connected and its workers arrived (starting clusters are not probed)."""
        # a dead scheduler still counts: the health monitor must see (and report) it
        return self._client is not None and self._scheduler is not None

    @property
    def scheduler_pid(self) -> int | None:
        return self._scheduler.pid if self._scheduler is not None else None

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._workers]

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        assert self._tmp is not None
        out = open(Path(self._tmp.name) / log_name, "wb")
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=_die_with_parent, close_fds=True)

    def _start(self) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"skyfeast-{self.name}-")
        sched_file = Path(self._tmp.name) / "scheduler.json"
        py = sys.executable
        self._scheduler = self._spawn([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                       "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                                      "scheduler.log")
        deadline = time.monotonic() + START_TIMEOUT
        while not sched_file.exists():
            if self._scheduler.poll() is not None or time.monotonic() > deadline:
                raise Transient(f"local scheduler for {self.name} did not start: {self._log_tail('scheduler.log')}")
            time.sleep(0.05)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(self.workers):
            self._workers.append(self._spawn(
                [py, "-m", "distributed.cli.dask_worker", address, "--nthreads", str(self.threads), "--nworkers", "1",
                 "--memory-limit", self.memory_limit, "--no-dashboard", "--name", f"{self.name}-{i}",
                 "--death-timeout", "30"], f"worker-{i}.log"))
        return address

    def _log_tail(self, name: str) -> str:
        try:
            return (Path(self._tmp.name) / name).read_text(errors="replace")[-2000:]
        except (OSError, AttributeError):
            return "<no log>"

    def connect(self):
        if self._client is not None and self._client.status == "running" and self._scheduler is not None \
                and self._scheduler.poll() is None:
            return self._client
        self.close()
        from distributed import Client

        try:
            self._address = self._start()
            client = Client(self._address, timeout=30, set_as_default=False)
            client.wait_for_workers(self.workers, timeout=START_TIMEOUT)
            self._client = client  # only now is the cluster "connected" (and probed by the health monitor)
        except Transient:
            self.close()
            raise
        except (OSError, TimeoutError, RuntimeError) as exc:
            self.close()
            raise Transient(f"cannot start local cluster for {self.name}: {exc}") from exc
        log.info("local cluster %s: scheduler %s (pid %s), %d worker(s)", self.name, self._address,
                 self.scheduler_pid, self.workers)
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # close the client *before* the scheduler goes away; a client that outlives its
            # scheduler spends 30 s trying to reconnect
            with contextlib.suppress(Exception):
                client.close(timeout=2)
        procs = [*self._workers, *([self._scheduler] if self._scheduler else [])]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)  # a SIGSTOPped process cannot act on SIGTERM
                    p.terminate()
        deadline = time.monotonic() + 2  # graceful first; nothing of value is lost by a kill after that
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self._workers, self._scheduler, self._address = [], None, None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
