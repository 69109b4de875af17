"""A local Dask cluster the daemon starts and owns: scheduler and workers as separate processes.

The scheduler runs in its own OS process (not inside the daemon), so that a
stalled daemon cannot stall the cluster, and so that drills and tests can
SIGKILL or SIGSTOP the scheduler alone. Every child dies with the daemon
(``PR_SET_PDEATHSIG`` on Linux), so a killed daemon leaves no orphans.

The daemon's client (and the health probe) reach the scheduler through a
:class:`~skyfeast.adapters.clusters.forwarder.Forwarder` the connector owns,
while workers connect to the scheduler directly. That relay is the network
path between daemon and cluster which a ``partition`` drill cuts
(:meth:`LocalConnector.partition`) and heals (:meth:`LocalConnector.restore`)
over real TCP. ``SKYFEAST_LOCAL_FORWARDER=0``
(or ``forward=False``) connects the client directly, at the price of no
partition drills on that cluster.

What the scheduler and workers import at start is the caller's choice
(:class:`Preload`): this layer does not know whose tasks the cluster runs.
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from skyfeast.adapters.base import ClusterConnector, Transient
from skyfeast.adapters.clusters.forwarder import Forwarder

__all__ = ["FORWARDER_ENV", "Forwarder", "LocalConnector", "Preload", "forwarding_enabled"]

log = logging.getLogger("skyfeast.clusters.local")
START_TIMEOUT = 120.0  # the scheduler imports its preload first: tens of seconds on a loaded 2-core box
FORWARDER_ENV = "SKYFEAST_LOCAL_FORWARDER"
SCHEDULER_PRELOAD_ENV = "SKYFEAST_SCHEDULER_PRELOAD"
WORKER_PRELOAD_ENV = "SKYFEAST_WORKER_PRELOAD"


@dataclass(frozen=True)
class Preload:
    """Modules the cluster's processes import at start (``--preload``), chosen by the caller.

    The adapter itself needs none: what to preload depends on the code whose tasks
    the cluster will run, which this layer does not know. Why a caller preloads:

    ``scheduler``: the Dask scheduler unpickles every submitted graph on its event
    loop, importing the modules the tasks reference. When that import is heavy
    (Feast: 9 s idle, 30-45 s on a loaded 2-core machine) and happens mid-run, the
    event loop stalls, health probes time out and a healthy cluster is declared
    down. Preloading those modules moves the cost to scheduler start, when nothing
    waits on the event loop yet (:data:`START_TIMEOUT` allows for it).

    ``workers``: workers start only once the scheduler is up, so a heavy preload
    there adds its cost to every cluster start; they import what tasks need on
    their first task, off the scheduler's event loop. Preload only light modules
    that must run before anything else (e.g. an import hook).

    ``SKYFEAST_SCHEDULER_PRELOAD`` / ``SKYFEAST_WORKER_PRELOAD`` (comma-separated
    modules; empty for none) override either list.
    """

    scheduler: tuple[str, ...] = ()
    workers: tuple[str, ...] = ()


def _preload_args(env_name: str, default: Sequence[str]) -> list[str]:
    env = os.environ.get(env_name)
    mods = default if env is None else [m.strip() for m in env.split(",") if m.strip()]
    return [arg for m in mods for arg in ("--preload", m)]


def forwarding_enabled() -> bool:
    """False when ``SKYFEAST_LOCAL_FORWARDER`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(FORWARDER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process:
# a cluster first used by a short-lived thread (a drill's run thread, a daemon worker
# thread) was SIGKILLed as soon as that thread ended. Every child is therefore forked by
# this one long-lived thread, which ends only with the process.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skyfeast-spawner")


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux/glibc: no parent-death signal
        return None


# Loaded in the parent, once: between fork and exec the child only makes the call.
# Importing a module or dlopen()ing a library there, in a copy of a process whose other
# threads (gRPC's, Dask's) may hold loader or allocator locks, can hang the child forever.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _scheduler_address(sched_file: Path) -> str | None:
    """The address in the scheduler file, or None until it is there: the scheduler creates the file
    and then writes it (not atomically), so a file that exists may still be empty or partial."""
    try:
        return json.loads(sched_file.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


class LocalConnector(ClusterConnector):
    """Starts and owns a Dask scheduler and ``workers`` worker processes on this machine.

    ``preload`` names the modules those processes import at start (see :class:`Preload`);
    by default none.
    """

    def __init__(self, *, workers: int, threads: int, memory_limit: str, name: str = "local",
                 forward: bool | None = None, preload: Preload = Preload(), start_timeout: float = START_TIMEOUT):
        self.workers = workers
        self.start_timeout = start_timeout  # one deadline for the scheduler, the connection and every worker
        self.preload = preload
        self.forward = forwarding_enabled() if forward is None else forward
        self._forwarder: Forwarder | None = None
        self._scheduler_address: str | None = None
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
        """Where the daemon reaches the scheduler: the forwarder's address when forwarding."""
        return self._address

    @property
    def scheduler_address(self) -> str | None:
        """The scheduler's own address (what the workers use)."""
        return self._scheduler_address

    @property
    def forwarder(self) -> Forwarder | None:
        return self._forwarder

    def partition(self) -> None:
        """Cut the daemon-to-scheduler path (blackhole, sockets stay open); workers are unaffected.

        Raises RuntimeError when the cluster is not running behind a forwarder."""
        if self._forwarder is None:
            raise RuntimeError(f"local cluster {self.name} has no forwarder (not started, or "
                               f"{FORWARDER_ENV}=0): it cannot be partitioned")
        self._forwarder.partition()

    def restore(self) -> None:
        """Heal a :meth:`partition`; connections that lost bytes are reset and reconnect."""
        if self._forwarder is not None:
            self._forwarder.restore()

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
        try:
            return _SPAWNER.submit(subprocess.Popen, argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent,
                                   close_fds=True).result()
        finally:
            out.close()  # the child holds its own copy

    def _start(self, deadline: float) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"skyfeast-{self.name}-")
        sched_file = Path(self._tmp.name) / "scheduler.json"
        py = sys.executable
        self._scheduler = self._spawn([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                       "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file),
                                       *_preload_args(SCHEDULER_PRELOAD_ENV, self.preload.scheduler)],
                                      "scheduler.log")
        # the workers start with it and wait for its file (up to --death-timeout): their imports
        # overlap the scheduler's instead of following them
        for i in range(self.workers):
            self._workers.append(self._spawn(
                [py, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file), "--nthreads",
                 str(self.threads), "--nworkers", "1", "--memory-limit", self.memory_limit, "--no-dashboard",
                 "--name", f"{self.name}-{i}", "--death-timeout", "30",
                 *_preload_args(WORKER_PRELOAD_ENV, self.preload.workers)],
                f"worker-{i}.log"))
        while (address := _scheduler_address(sched_file)) is None:
            if self._scheduler.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self._scheduler.poll() is not None else \
                    f"did not start within {self.start_timeout:g} s (start_timeout)"
                raise Transient(f"local scheduler for {self.name} {why}: {self._log_tail('scheduler.log')}")
            time.sleep(0.05)
        return address

    def _workers_state(self) -> str:
        """Each worker process: running or its exit code, and the end of its log."""
        parts = []
        for i, proc in enumerate(self._workers):
            code = proc.poll()
            state = "running" if code is None else f"exited {code}"
            tail = self._log_tail(f"worker-{i}.log")[-600:].strip().replace("\n", " | ")
            parts.append(f"worker {i} (pid {proc.pid}) {state}: {tail or '<empty log>'}")
        return "; ".join(parts)

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

        deadline = time.monotonic() + self.start_timeout
        try:
            self._address = self._scheduler_address = self._start(deadline)
            if self.forward:
                u = urlsplit(self._scheduler_address)
                sched = self._scheduler
                self._forwarder = Forwarder((u.hostname, u.port), alive=lambda: sched.poll() is None,
                                            name=self.name)
                self._address = self._forwarder.address
            client = Client(self._address, timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                            set_as_default=False)
            try:
                client.wait_for_workers(self.workers, timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                client.close()
                raise TimeoutError(f"{exc}; {self._workers_state()}") from None
            self._client = client  # only now is the cluster "connected" (and probed by the health monitor)
        except Transient:
            self.close()
            raise
        except (OSError, TimeoutError, RuntimeError) as exc:
            self.close()
            raise Transient(f"cannot start local cluster for {self.name} within {self.start_timeout:g} s "
                            f"(start_timeout): {exc}") from exc
        log.info("local cluster %s: scheduler %s (pid %s), %d worker(s)%s", self.name, self._scheduler_address,
                 self.scheduler_pid, self.workers, f", daemon connects via {self._address}" if self._forwarder else "")
        return self._client

    def abandon(self) -> None:
        """Kill the cluster's processes (SIGKILL, no graceful shutdown, no wait) and remove its
        files, leaving the client unclosed: for a process about to exit whose work on the
        cluster is finished, so that teardown does not delay its exit.  :meth:`close` is the
        graceful way; after this, the connector is closed."""
        self._client = None  # closing it would wait on the scheduler this kills
        for p in [*self._workers, *([self._scheduler] if self._scheduler else [])]:
            with contextlib.suppress(ProcessLookupError, OSError):
                p.kill()
        self._workers, self._scheduler, self._address, self._scheduler_address = [], None, None, None
        self._forwarder = None  # its sockets and thread end with the process
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

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
        fwd, self._forwarder = self._forwarder, None
        if fwd is not None:
            fwd.close()
        self._workers, self._scheduler, self._address, self._scheduler_address = [], None, None, None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
