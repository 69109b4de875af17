"""Where a run's work went on the workers: task seconds by phase, from Dask's task stream.

A run's client-side phases (plan, submit, compute, write, ...) are wall times, and
``compute`` lumps reading, shuffling, transforming and staging together.  This module
splits the work by what each task did, from the ``startstops`` the workers report to the
scheduler (its task stream):

* ``read`` – input reading (Dask's parquet read tasks, and the tasks that also tag rows
  with their key range, :func:`skyfeast.featurestore.partitioning.range_shuffle`);
* ``shuffle`` – Dask's shuffle tasks (p2p transfer and unpack, or the disk shuffle's);
* ``transform`` – the contract check and the user's transform or scorer, per chunk;
* ``stage`` – writing each chunk's output to its staging key;
* ``online`` and ``offline`` – the two halves of publishing;
* ``transfer`` – moving task inputs between workers (any phase);
* ``other`` – any other task of the run.

Figures are seconds of task execution summed over every task (on two workers a phase
can take twice the wall time it spans), so they add up across chunks and regressions
point at a phase.  A p2p shuffle also works in background threads of each worker; that
part shows in no task, only in the ``compute`` wall time.

Only tasks whose keys the run submitted (:func:`graph_keys`) are counted, so runs that
share a cluster do not mix.  :func:`start` makes sure the scheduler records the task
stream (its plugin keeps a bounded deque of recent tasks); :func:`collect` reads it.
Both are best effort: timing never fails a run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("skyfeast.phases")

PHASES = ("read", "shuffle", "transform", "stage", "online", "offline", "transfer", "other")
# task key name (the part before the token) → phase; first match wins
_BY_NAME = (
    (("stage_chunk",), "stage"),
    (("publish_online",), "online"),
    (("publish_offline",), "offline"),
    (("feature_partition", "model_partition", "group_partition"), "transform"),
    (("read_inputs", "read_parquet", "readparquet", "_with_part", "with_part"), "read"),
    (("shuffle", "p2p", "partd", "barrier"), "shuffle"),
)


def _name(key: Any) -> str:
    return str(key[0] if isinstance(key, tuple) and key else key)


def phase_of(key: Any) -> str:
    """The phase of a task from its key (``('read_parquet-operation-<token>', 3)``,
    ``'stage_chunk-<uuid>'``, ...); ``other`` when no phase matches."""
    name = _name(key)
    for prefixes, phase in _BY_NAME:
        if any(p in name for p in prefixes):
            return phase
    return "other"


def task_seconds(records: Iterable[dict], keys: set) -> dict[str, float]:
    """Task-stream ``records`` of tasks in ``keys`` summed by phase: each record's ``compute``
    spans go to the task's phase, its ``transfer`` spans to ``transfer``.  Rounded to 1 ms;
    phases with no task are left out."""
    out: dict[str, float] = {}
    for rec in records:
        key = rec.get("key")
        if key not in keys:
            continue
        phase = phase_of(key)
        for span in rec.get("startstops") or ():
            action = span.get("action")
            try:
                secs = float(span["stop"]) - float(span["start"])
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isfinite(secs):
                continue  # would make ``skyfeast run --json`` print NaN, which is not JSON
            secs = max(0.0, secs)
            if action == "compute":
                out[phase] = out.get(phase, 0.0) + secs
            elif action == "transfer":
                out["transfer"] = out.get("transfer", 0.0) + secs
    return {p: round(out[p], 3) for p in PHASES if p in out}


def graph_keys(collections: Iterable[Any]) -> set:
    """Every task key of Dask ``collections`` (delayed objects: their whole graphs)."""
    keys: set = set()
    seen: set = set()  # layers shared by several collections (every chunk's holds the whole shuffle)
    for c in collections:
        try:
            graph = c.__dask_graph__()
        except Exception:  # not a collection (a plain value): nothing to count
            continue
        layers = getattr(graph, "layers", None)
        if layers is None:
            keys.update(graph.keys())
            continue
        for name, layer in layers.items():
            if name not in seen:
                seen.add(name)
                keys.update(layer.keys())
    return keys


TIMEOUT = 3.0  # seconds a task-stream request may take: a hung scheduler must not hold up a run


def _stream(client, **kw) -> list[dict]:
    # the scheduler's RPC with a deadline (``Client.get_task_stream`` has none)
    return client.sync(client.scheduler.get_task_stream, callback_timeout=TIMEOUT, **kw)


def start(client) -> float:
    """Make sure ``client``'s scheduler records the task stream; returns the time to
    :func:`collect` from (the scheduler's clock, ``time.time()``, up to skew)."""
    now = time.time()
    try:
        _stream(client, start=now, count=0)  # the first request installs the scheduler's plugin
    except Exception as exc:
        log.debug("task stream unavailable: %s", exc)
    return now - 1.0  # a little early: clocks may differ, and the keys filter out other runs


def collect(client, since: float, keys: set, into: dict[str, float] | None = None) -> dict[str, float]:
    """Task seconds by phase of the tasks in ``keys`` recorded since ``since``, added to ``into``
    (returned).  An unreachable scheduler or a stream without them leaves ``into`` as it was."""
    into = {} if into is None else into
    if not keys:
        return into
    try:
        records = _stream(client, start=since)
    except Exception as exc:
        log.debug("cannot read the task stream: %s", exc)
        return into
    for phase, secs in task_seconds(records, keys).items():
        into[phase] = round(into.get(phase, 0.0) + secs, 3)
    return into


__all__ = ["PHASES", "collect", "graph_keys", "phase_of", "start", "task_seconds"]
