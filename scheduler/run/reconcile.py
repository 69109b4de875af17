"""The reconciler: brings a failed-over window's offline parts home to the primary storage.

:func:`reconcile` copies every part of a run that is off the primary
(:mod:`.offline`) to the same key on the primary, removes stale parts a dead
attempt left there, writes the primary's manifest and marks the run done in the
ledger. A run whose copy fails stays pending with its error; when the primary
itself is unreachable the pass stops early (nothing else can succeed either).
The daemon's leader runs a pass every ``offline.reconcile_every``; ``skyfeast
reconcile`` runs one on demand.

Copies go through the storage adapters (read then write one object at a time,
so memory is bounded by the largest part file, i.e. one partition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skyfeast.adapters.base import AdapterError, ObjectStore, Transient
from skyfeast.scheduler.run.offline import owner_of, parts_prefix, write_manifest
from skyfeast.scheduler.timing.windows import Window

log = logging.getLogger("skyfeast.reconcile")


@dataclass
class CopyOutcome:
    run_id: int
    job: str
    window: str
    copied: int = 0
    bytes: int = 0
    removed: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ReconcileReport:
    primary: str
    runs: list[CopyOutcome] = field(default_factory=list)
    pending_left: int = 0
    stopped: str | None = None  # why the pass ended early
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stopped is None and not any(r.error for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "ok": self.ok, "reconciled": sum(1 for r in self.runs if not r.error),
                "failed": sum(1 for r in self.runs if r.error), "pending_left": self.pending_left,
                "copied_files": sum(r.copied for r in self.runs), "copied_bytes": sum(r.bytes for r in self.runs),
                "stopped": self.stopped, "seconds": round(self.seconds, 3),
                "runs": [r.as_dict() for r in self.runs]}


def reconcile(cfg, ledger, stores: Mapping[str, ObjectStore], *, limit: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              available: Callable[[str], bool] = lambda name: True, probe_timeout: float = 5.0) -> ReconcileReport:
    """Copy pending runs' parts to the primary storage. Idempotent; safe to run from any process.

    ``available(provider)`` lets the daemon skip the pass while its health monitor holds the
    primary down; otherwise the primary is probed first with ``probe_timeout``, so that a hung
    endpoint costs seconds, not the SDK's read timeouts."""
    t0 = time.monotonic()
    primary = cfg.primary_provider
    report = ReconcileReport(primary=primary)
    pending = ledger.pending_copies(limit or cfg.offline.reconcile_batch)
    pstore = stores[primary]
    if pending:
        why = None if available(primary) else "the health monitor holds it down"
        why = why or _unreachable(pstore, probe_timeout)
        if why:
            report.stopped = f"primary storage of {primary!r} is unreachable: {why}"
            report.pending_left = ledger.copy_states().get("pending", 0)
            report.seconds = time.monotonic() - t0
            return report
    for n, item in enumerate(pending, 1):
        window = Window(item["window_start"], item["window_end"])
        out = CopyOutcome(item["run_id"], item["job"], window.tag)
        report.runs.append(out)
        try:
            job = cfg.job(item["job"])
        except KeyError:
            out.error = f"job {item['job']!r} is no longer in the config; its parts stay where they are"
            ledger.finish_copy(out.run_id, error=out.error)
            continue
        try:
            _copy_run(ledger, stores, primary, job, window, out)
        except AdapterError as exc:
            out.error = f"{type(exc).__name__}: {exc}"
            ledger.finish_copy(out.run_id, error=out.error)
            if isinstance(exc, Transient) and _primary_down(pstore):
                report.stopped = f"primary storage of {primary!r} is unreachable: {exc}"
                break
        else:
            ledger.finish_copy(out.run_id)
        if progress:
            progress(n, len(pending))
    report.pending_left = ledger.copy_states().get("pending", 0)
    report.seconds = time.monotonic() - t0
    return report


def _primary_down(store: ObjectStore) -> bool:
    return _unreachable(store, 5.0) is not None


def _unreachable(store: ObjectStore, timeout: float) -> str | None:
    """Why ``store`` cannot be used now, or None. The check runs in a daemon thread so that a
    hung endpoint is given up on after ``timeout`` (the thread ends with the SDK's own timeout)."""
    box: dict[str, BaseException | None] = {}

    def check() -> None:
        try:
            store.check()
            box["exc"] = None
        except BaseException as exc:  # noqa: BLE001 - reported, not raised
            box["exc"] = exc

    t = threading.Thread(target=check, name="skyfeast-reconcile-probe", daemon=True)
    t.start()
    t.join(timeout)
    if "exc" not in box:
        return f"no answer within {timeout:.0f}s"
    exc = box["exc"]
    return None if exc is None else f"{type(exc).__name__}: {exc}"


def _copy_run(ledger, stores: Mapping[str, ObjectStore], primary: str, job, window: Window,
              out: CopyOutcome) -> None:
    pstore = stores[primary]
    files = sorted(c["file"] for c in ledger.chunks(out.run_id).values() if c.get("file"))
    keep: set[str] = set()
    located: list[str] = []
    for url in files:
        hit = owner_of(url, stores)
        if hit is None:
            raise AdapterError(f"part {url} is on no configured provider's storage")
        name, key = hit
        keep.add(key)
        if name != primary:
            data = stores[name].read_bytes(key)
            pstore.write_bytes(key, data)
            out.copied += 1
            out.bytes += len(data)
        located.append(pstore.url(key))
    # parts a dead attempt wrote on the primary, which the successful attempt replaced elsewhere
    stale = [k for k in pstore.list(parts_prefix(job.feature_view, window)) if k not in keep]
    if stale:
        pstore.delete(stale)
        out.removed = len(stale)
    run = ledger.get_run(out.run_id)
    write_manifest(pstore, job=job.name, feature_view=job.feature_view, window=window, run_id=out.run_id,
                   provider=run.provider if run else primary, files=located,
                   rows=(run.rows_written or 0) if run else 0)
    log.info("reconciled %s %s: %d part(s) copied to %s, %d stale removed", job.name, window.tag,
             out.copied, primary, out.removed)
