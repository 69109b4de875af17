"""Faults a drill injects into one provider, and their undo.

Every fault has the same small life cycle: ``prepare()`` before the drilled
run starts (most faults need nothing), ``inject()`` part-way through it,
``restore()`` once the run has finished elsewhere, ``close()`` at the end
(idempotent; undoes whatever is still in place). ``how`` says in one line what
was done, for the report.

=================  ==========================================  ===========================================
mode               managed local cluster / local storage       remote cluster / cloud storage
=================  ==========================================  ===========================================
kill               SIGKILL of the scheduler process            circuit fenced inside this process
hang               SIGSTOP of the scheduler (SIGCONT restores)  circuit fenced inside this process
partition          the daemon-to-scheduler TCP forwarder drops  circuit fenced inside this process
                   every byte (sockets stay open)
storage-outage     the storage root is renamed away and a       the store's endpoint (control plane *and*
                   plain file takes its place, so neither       the ``storage_options`` workers get) points
                   reads nor writes (nor ``mkdir``) work        at a closed local port; a plain ``http://``
                                                                endpoint (emulator, MinIO) is reached through
                                                                a forwarder from ``prepare()`` on, which
                                                                then refuses every connection, so in-flight
                                                                tasks lose storage too
=================  ==========================================  ===========================================

A fenced circuit is only as real as the failover it exercises: the remote
cluster keeps working, so a run whose tasks keep finishing is not moved (the
runner fails over a DOWN provider only when its tasks also stop finishing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from skyfeast.scheduler.control.policy import Breaker, ProviderState

log = logging.getLogger("skyfeast.faults")
MODES = ("kill", "hang", "partition", "storage-outage")
OUTAGE_SUFFIX = ".skyfeast-outage"


class Fault:
    how = ""

    def prepare(self) -> None:
        """Called before the drilled run starts."""

    def inject(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """Undo the fault (the provider may then recover)."""

    def close(self) -> None:
        """Undo whatever is still in place; idempotent."""
        self.restore()


class Fence(Fault):
    """Open the provider's circuit inside this process (the cluster itself is untouched)."""

    def __init__(self, pool, provider: str):
        self.pool, self.provider = pool, provider
        self.how = "circuit fenced inside this process (remote cluster)"

    def inject(self) -> None:
        self.pool.set_breaker(self.provider, Breaker(ProviderState.DOWN, 99, time.monotonic()))


class Signal(Fault):
    """SIGKILL (kill) or SIGSTOP (hang, restored by SIGCONT) of a managed scheduler process."""

    def __init__(self, pid: int, mode: str):
        self.pid, self.mode = pid, mode
        self.sig = signal.SIGKILL if mode == "kill" else signal.SIGSTOP
        self.how = f"{self.sig.name} of scheduler pid {pid}"
        self._stopped = False

    def inject(self) -> None:
        os.kill(self.pid, self.sig)
        self._stopped = self.sig is signal.SIGSTOP

    def restore(self) -> None:
        if self._stopped:
            self._stopped = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class Partition(Fault):
    """Blackhole the forwarder between this process and a managed scheduler."""

    def __init__(self, connector):
        self.conn = connector
        fwd = connector.forwarder
        self.how = (f"partition: forwarder {fwd.address} -> {connector.scheduler_address} drops every byte "
                    "(workers still reach the scheduler)")
        self._cut = False

    def inject(self) -> None:
        self.conn.partition()
        self._cut = True

    def restore(self) -> None:
        if self._cut:
            self._cut = False
            self.conn.restore()


class LocalStorageOutage(Fault):
    """A local storage root vanishes (an unmounted volume): it is renamed to
    ``<root>.skyfeast-outage`` and an empty *file* takes its path, so that no
    read, write or ``mkdir -p`` under it can succeed. ``restore`` reverses both.
    After a crash mid-drill, recover by hand: ``rm <root> && mv <root>.skyfeast-outage <root>``."""

    def __init__(self, store):
        self.root = Path(store.root).resolve()
        self.aside = self.root.with_name(self.root.name + OUTAGE_SUFFIX)
        self.how = f"storage outage: {self.root} moved to {self.aside}, a file in its place"
        self._out = False

    def inject(self) -> None:
        if self.aside.exists():
            raise RuntimeError(f"{self.aside} exists: a previous drill was not restored (see the runbook)")
        self.root.rename(self.aside)
        self.root.write_text("skyfeast storage-outage drill: the real root is at " + str(self.aside) + "\n")
        self._out = True

    def restore(self) -> None:
        if not self._out:
            return
        self._out = False
        if self.root.is_file():
            self.root.unlink()
        elif self.root.is_dir():
            # something recreated the root during the outage; keep it for inspection
            self.root.rename(self.root.with_name(self.root.name + f".during-outage-{int(time.time())}"))
        self.aside.rename(self.root)


def _closed_port() -> socket.socket:
    """A bound but never listening socket: connecting to its port is refused, and no other
    process can take the port while we hold it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


class BucketStorageOutage(Fault):
    """An S3 or GCS store becomes unreachable: its endpoint is swapped for a closed local port
    (the SDK client is rebuilt, and every ``storage_options`` handed out from then on names
    the same port). A plain ``http://host:port`` endpoint is additionally relayed through a
    :class:`~skyfeast.adapters.clusters.forwarder.Forwarder` from :meth:`prepare` on, and that relay
    stops accepting and resets every connection at :meth:`inject`, so tasks already on the
    workers lose storage as well."""

    def __init__(self, store):
        self.store = store
        self.attr = "endpoint_url" if hasattr(store, "endpoint_url") else "endpoint"
        self.original = getattr(store, self.attr)
        self._fwd = None
        self._hole: socket.socket | None = None
        self._out = False
        self.how = f"storage outage: {store.url()} endpoint {self.original or 'default'} -> closed local port"

    def _set(self, endpoint: str | None) -> None:
        setattr(self.store, self.attr, endpoint)
        self.store._client = None  # rebuilt on next use, against the new endpoint

    def prepare(self) -> None:
        u = urlsplit(self.original or "")
        if u.scheme != "http" or not u.port:
            return
        from skyfeast.adapters.clusters.forwarder import Forwarder

        self._fwd = Forwarder((u.hostname, u.port), name="storage")
        self._set(f"http://127.0.0.1:{self._fwd.port}")
        self.how = (f"storage outage: {self.store.url()} reached via relay 127.0.0.1:{self._fwd.port} -> "
                    f"{self.original}; the relay refuses and resets every connection, the store "
                    "then points at a closed port")

    def inject(self) -> None:
        self._hole = _closed_port()
        if self._fwd is not None:
            self._fwd.close()  # connection refused from now on, open connections reset
        self._set(f"http://127.0.0.1:{self._hole.getsockname()[1]}")
        self._out = True

    def restore(self) -> None:
        if not self._out:
            return
        self._out = False
        self._set(self.original)
        if self._hole is not None:
            self._hole.close()
            self._hole = None

    def close(self) -> None:
        self.restore()
        if self._fwd is not None:
            self._fwd.close()
            self._fwd = None
        self._set(self.original)


def make_fault(pool, provider: str, mode: str) -> Fault:
    """The fault ``mode`` for ``provider``; its cluster must already be connected for
    cluster faults (the drill injects part-way through a run)."""
    if mode not in MODES:
        raise ValueError(f"unknown fault mode {mode!r}; known: {MODES}")
    if mode == "storage-outage":
        store = pool.store(provider)
        if hasattr(store, "root"):
            return LocalStorageOutage(store)
        if hasattr(store, "endpoint_url") or hasattr(store, "endpoint"):
            return BucketStorageOutage(store)
        raise ValueError(f"no storage outage is known for {type(store).__name__}")
    conn = pool.connector(provider)
    pid = getattr(conn, "scheduler_pid", None)
    if mode in ("kill", "hang") and pid is not None:
        return Signal(pid, mode)
    if mode == "partition" and getattr(conn, "forwarder", None) is not None:
        return Partition(conn)
    if mode == "partition" and pid is not None:
        raise ValueError(f"provider {provider!r}: its local cluster runs without a forwarder "
                         "(SKYFEAST_LOCAL_FORWARDER=0), so it cannot be partitioned")
    return Fence(pool, provider)
