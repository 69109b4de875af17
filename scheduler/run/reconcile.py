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
from skyfeast.scheduler.run.offline import STAGING, owner_of, parts_prefix, write_manifest
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
    staged_removed: int = 0  # leftover staged parts of succeeded runs removed (:func:`sweep_staging`)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stopped is None and not any(r.error for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "ok": self.ok, "reconciled": sum(1 for r in self.runs if not r.error),
                "failed": sum(1 for r in self.runs if r.error), "pending_left": self.pending_left,
                "copied_files": sum(r.copied for r in self.runs), "copied_bytes": sum(r.bytes for r in self.runs),
                "stopped": self.stopped, "staged_removed": self.staged_removed, "seconds": round(self.seconds, 3),
                "runs": [r.as_dict() for r in self.runs]}


def reconcile(cfg, ledger, stores: Mapping[str, ObjectStore], *, limit: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              available: Callable[[str], bool] = lambda name: True, probe_timeout: float = 5.0,
              sweep: bool = True) -> ReconcileReport:
    """Copy pending runs' parts to the primary storage, then (``sweep``) remove leftover staged parts
    (:func:`sweep_staging`). Idempotent; safe to run from any process.

    ``available(provider)`` lets the daemon skip the pass while its health monitor holds the
    primary down (and skip sweeping a storage it holds down); otherwise the primary is probed
    first with ``probe_timeout``, so that a hung endpoint costs seconds, not the SDK's read timeouts."""
    t0 = time.monotonic()
    report = _copy_pending(cfg, ledger, stores, limit, progress, available, probe_timeout)
    if sweep:
        report.staged_removed = sweep_staging(cfg, ledger, stores, available=available, timeout=probe_timeout)
    report.seconds = time.monotonic() - t0
    return report


def _copy_pending(cfg, ledger, stores: Mapping[str, ObjectStore], limit: int | None,
                  progress: Callable[[int, int], None] | None, available: Callable[[str], bool],
                  probe_timeout: float) -> ReconcileReport:
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
    return report


def sweep_staging(cfg, ledger, stores: Mapping[str, ObjectStore], *,
                  available: Callable[[str], bool] = lambda name: True, timeout: float = 5.0) -> int:
    """Remove staged parts that no run will read again; returns how many.

    A run removes its own staged parts once it has published. A task that a lost provider's
    workers were still running when the run failed over can finish its staging write after
    that (the parts of a chunk the other provider redid), and nothing else would ever remove
    it. A window's staged parts are removed here when every run of it, by every job that
    writes the view, has succeeded. The keys are listed *before* the runs are read: a part
    listed was staged before a ``--force`` rerun could claim the window again, and such a
    rerun reads as running, not succeeded, until it has published. Parts of failed runs stay:
    a retry resumes from them. Best effort: a storage that fails, or gives no answer within
    ``timeout`` seconds, is tried again next pass."""
    writers: dict[str, list[str]] = {}
    for job in cfg.jobs:
        writers.setdefault(job.feature_view, []).append(job.name)
    removed = 0
    for name, store in stores.items():
        if not available(name):
            continue
        keys, why = _bounded(lambda store=store: store.list(f"{STAGING}/"), timeout)
        if why is not None:
            log.warning("cannot list staged parts on %s: %s", name, why)
            continue
        windows: dict[tuple[str, Window], list[str]] = {}
        for key in keys:
            parsed = _staged_window(key)
            if parsed is not None and parsed[0] in writers:
                windows.setdefault(parsed, []).append(key)
        for (view, window), group in windows.items():
            runs = [ledger.find_run(job, window.start, window.end) for job in writers[view]]
            runs = [r for r in runs if r is not None]
            if not runs or any(r.status != "succeeded" for r in runs):
                continue
            _, why = _bounded(lambda store=store, group=group: store.delete(group), timeout)
            if why is not None:
                log.warning("cannot remove staged parts of %s %s on %s: %s", view, window.tag, name, why)
                continue
            removed += len(group)
            log.info("removed %d leftover staged part(s) of %s %s on %s", len(group), view, window.tag, name)
    return removed


def _staged_window(key: str) -> tuple[str, Window] | None:
    """(view, window) of a staged part's key ``staging/<view>/<tag>-partNNNNN.parquet``, or None."""
    view, _, fname = key[len(STAGING) + 1:].rpartition("/")
    tag, sep, _ = fname.partition("-part")
    window = Window.from_tag(tag) if sep else None
    return (view, window) if view and window is not None else None


def _primary_down(store: ObjectStore) -> bool:
    return _unreachable(store, 5.0) is not None


def _unreachable(store: ObjectStore, timeout: float) -> str | None:
    """Why ``store`` cannot be used now, or None."""
    return _bounded(store.check, timeout)[1]


def _bounded(call: Callable[[], Any], timeout: float) -> tuple[Any, str | None]:
    """``(call(), None)``, or ``(None, why)`` when it raised or gave no answer within ``timeout``.
    The call runs in a daemon thread, so that a hung endpoint is given up on after ``timeout``
    (the thread ends with the SDK's own timeout)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported, not raised
            box["exc"] = exc

    t = threading.Thread(target=run, name="skyfeast-reconcile-call", daemon=True)
    t.start()
    t.join(timeout)
    if "exc" in box:
        exc = box["exc"]
        return None, f"{type(exc).__name__}: {exc}"
    if "value" not in box:
        return None, f"no answer within {timeout:.0f}s"
    return box["value"], None


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
