"""A local Dask cluster the daemon starts and owns: scheduler and workers as separate processes.

The scheduler runs in its own OS process (not inside the daemon), so that a
stalled daemon cannot stall the cluster, and so that drills and tests can
SIGKILL or SIGSTOP the scheduler alone. Every child dies with the daemon
(``PR_SET_PDEATHSIG`` on Linux), so a killed daemon leaves no orphans.

The daemon's client (and the health probe) reach the scheduler through a
:class:`Forwarder` the connector owns, while workers connect to the scheduler
directly. That relay is the network path between daemon and cluster which a
``partition`` drill cuts (:meth:`LocalConnector.partition`) and heals
(:meth:`LocalConnector.restore`) over real TCP. ``SKYFEAST_LOCAL_FORWARDER=0``
(or ``forward=False``) connects the client directly, at the price of no
partition drills on that cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from skyfeast.adapters.base import ClusterConnector, Transient

log = logging.getLogger("skyfeast.clusters.local")
START_TIMEOUT = 120.0  # the scheduler imports PRELOAD first: tens of seconds on a loaded 2-core box
FORWARDER_ENV = "SKYFEAST_LOCAL_FORWARDER"
# The scheduler unpickles every submitted graph on its event loop, which imports the modules
# the tasks reference. scheduler.executor pulls in feast (9 s idle, 30-45 s on a loaded 2-core
# machine); imported lazily, that stalled the event loop mid-run, so health probes timed out and
# healthy providers were declared down. Importing it at scheduler start moves the cost to
# startup, where nothing waits on the event loop yet. Workers do not preload it: they start
# only once the scheduler is up, so a preload there would add its cost to every cluster start
# (past START_TIMEOUT on a loaded machine); they import it on their first task, off the
# scheduler's event loop. SKYFEAST_SCHEDULER_PRELOAD overrides
# (comma-separated modules; empty for none). scheduler.executor itself is light now; Feast
# arrives with the task specs (their WriteTarget holds a Feast RepoConfig), hence
# featurestore.writers, which imports Feast.
PRELOAD = ("scheduler.executor", "featurestore.writers")
# Workers preload only the filter that makes Feast's import three times cheaper
# (featurestore._typechecks; it imports typeguard, not Feast): a task spec unpickled
# before anything of skyfeast would otherwise import Feast with typeguard's instrumentation.
WORKER_PRELOAD = ("featurestore._typechecks",)


def _preload(env_name: str = "SKYFEAST_SCHEDULER_PRELOAD", default: tuple[str, ...] = PRELOAD) -> list[str]:
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


class LocalConnector(ClusterConnector):
    def __init__(self, *, workers: int, threads: int, memory_limit: str, name: str = "local",
                 forward: bool | None = None):
        self.workers = workers
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
    def forwarder(self) -> "Forwarder | None":
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

    def _start(self) -> str:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"skyfeast-{self.name}-")
        sched_file = Path(self._tmp.name) / "scheduler.json"
        py = sys.executable
        self._scheduler = self._spawn([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                       "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file),
                                       *_preload()],
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
                 "--death-timeout", "30", *_preload("SKYFEAST_WORKER_PRELOAD", WORKER_PRELOAD)],
                f"worker-{i}.log"))
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

        try:
            self._address = self._scheduler_address = self._start()
            if self.forward:
                u = urlsplit(self._scheduler_address)
                sched = self._scheduler
                self._forwarder = Forwarder((u.hostname, u.port), alive=lambda: sched.poll() is None,
                                            name=self.name)
                self._address = self._forwarder.address
            client = Client(self._address, timeout=30, set_as_default=False)
            try:
                client.wait_for_workers(self.workers, timeout=START_TIMEOUT)
            except TimeoutError as exc:
                client.close()
                raise TimeoutError(f"{exc}; {self._workers_state()}") from None
            self._client = client  # only now is the cluster "connected" (and probed by the health monitor)
        except Transient:
            self.close()
            raise
        except (OSError, TimeoutError, RuntimeError) as exc:
            self.close()
            raise Transient(f"cannot start local cluster for {self.name}: {exc}") from exc
        log.info("local cluster %s: scheduler %s (pid %s), %d worker(s)%s", self.name, self._scheduler_address,
                 self.scheduler_pid, self.workers, f", daemon connects via {self._address}" if self._forwarder else "")
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
        fwd, self._forwarder = self._forwarder, None
        if fwd is not None:
            fwd.close()
        self._workers, self._scheduler, self._address, self._scheduler_address = [], None, None, None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# --------------------------------------------------------------------------- TCP forwarder
class Forwarder:
    """A TCP relay on ``127.0.0.1:<port>`` to ``target``, so that a fault can cut one network path.

    Each accepted connection gets its own upstream connection and two pump threads
    (blocking ``recv``/``sendall``: no per-message work beyond one copy). Modes:

    * forwarding (the default);
    * :meth:`partition`: a blackhole. Sockets stay open and connections are still
      accepted, but every byte read from either side is dropped, so peers see
      silence, never a reset (a network partition, not a dead process);
    * :meth:`restore`: forward again. Connections that lost bytes have a gap in
      their stream that no protocol can resynchronise, so they are reset (as TCP
      itself gives up on a long partition); their peers reconnect.

    ``alive`` (optional) tells whether the target process still exists; once it
    is gone the forwarder closes its listening socket, so that clients get
    "connection refused" exactly as they would from the dead process itself.
    """

    BUFSIZE = 1 << 18

    def __init__(self, target: tuple[str, int], *, alive: Callable[[], bool] | None = None,
                 host: str = "127.0.0.1", name: str = "forwarder"):
        self.target = target
        self.name = name
        self._alive = alive
        self._host = host
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._blackhole = False
        self._closed = False
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)  # the accept loop polls ``alive`` and ``close``
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"skyfeast-fwd-{name}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"tcp://{self._host}:{self.port}"

    @property
    def partitioned(self) -> bool:
        return self._blackhole

    def partition(self) -> None:
        """Drop every byte in both directions from now on (keeps sockets open)."""
        with self._lock:
            self._blackhole = True

    def restore(self) -> None:
        """Forward again; reset the connections whose streams lost bytes."""
        with self._lock:
            self._blackhole = False
            broken = [link for link in self._links if link.dropped]
        for link in broken:
            self._drop(link)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.close()
        for link in links:
            self._drop(link)
        self._thread.join(timeout=2)

    # -- internals
    def _drop(self, link: "_Link") -> None:
        link.close()
        with self._lock:
            self._links.discard(link)

    def _target_gone(self) -> bool:
        return self._alive is not None and not self._alive()

    def _accept_loop(self) -> None:
        while not self._closed:
            if self._target_gone():
                log.info("%s: target %s:%s is gone; refusing connections", self.name, *self.target)
                with contextlib.suppress(OSError):
                    self._listener.close()
                return
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = None
            if not self._blackhole:  # across a partition no new connection reaches the target
                try:
                    up = socket.create_connection(self.target, timeout=5)
                    up.settimeout(None)
                    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    down.close()  # as the target itself would: nobody answers
                    continue
            link = _Link(down, up)
            link.dropped = up is None
            with self._lock:
                self._links.add(link)
            for src, dst in ((down, up), (up, down)) if up is not None else ((down, None),):
                threading.Thread(target=self._pump, args=(link, src, dst), daemon=True,
                                 name=f"skyfeast-fwd-{self.name}-pump").start()

    def _pump(self, link: "_Link", src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while True:
                data = src.recv(self.BUFSIZE)
                if not data:
                    break
                if self._blackhole or dst is None:
                    link.dropped = True
                    continue
                dst.sendall(data)
        except OSError:
            pass
        self._drop(link)
        if src is link.up and self._target_gone():
            with contextlib.suppress(OSError):  # don't wait for the accept loop's next poll
                self._listener.close()


class _Link:
    """One relayed connection: the accepted socket and its upstream (None across a partition)."""

    def __init__(self, down: socket.socket, up: socket.socket | None):
        self.down, self.up = down, up
        self.dropped = False
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in (self.down, self.up):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv
            with contextlib.suppress(OSError):
                s.close()
