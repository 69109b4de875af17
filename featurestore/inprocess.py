"""Small inputs without a cluster: the same rows, the same writer, in this process.

Starting a Dask cluster costs seconds (two or three Python processes that import
Dask and Feast), more than writing a few hundred thousand rows takes.  For an
input that small, :func:`run_in_process` reads each view's rows in ``[start,
end)`` here and hands them, as one partition, to the very function the workers
run (:func:`skyfeast.featurestore.materialize._write_partition`, hence
:func:`~skyfeast.featurestore.online.write_latest` and the native newest-wins
writers), so what is stored is the same to the byte.  Each view is then recorded
in the registry like a cluster run records it.

:func:`input_rows` estimates the rows a set of plans reads, from parquet
metadata only (row groups whose event-time statistics miss the range are not
counted), so the caller can pick this path before starting anything.  Sources
that are not local files (``s3://`` and other URLs) always answer ``None``: they
take the cluster path, whose reader knows their storage options.

The frame a view's task receives is built like the Dask reader builds each of its
partitions: ``pyarrow`` reads the parquet columns and converts them with
``to_pandas(ignore_metadata=False)`` (Dask's ``dataframe.convert-string`` is off
here too), then the same renames, timestamp conversion and half-open filter
apply (:func:`skyfeast.featurestore.materialize._filtered`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from skyfeast.adapters.waiting import waiting
from skyfeast.featurestore.chunks import ChunkBook
from skyfeast.featurestore.materialize import (
    ProgressFn,
    RecordFn,
    SourceError,
    ViewPlan,
    ViewResult,
    _filtered,
    _Run,
    _view_result,
    _write_partition,
)

__all__ = ["check_columns", "input_rows", "is_local", "run_in_process"]


def is_local(plan: ViewPlan) -> bool:
    """Whether the plan's source is a path on this machine (not an ``s3://``-style URL)."""
    return "://" not in plan.path or plan.path.startswith("file://")


def _local_path(plan: ViewPlan) -> str:
    return plan.path[len("file://"):] if plan.path.startswith("file://") else plan.path


def input_rows(plans: Sequence[ViewPlan]) -> int | None:
    """Rows the plans read, from parquet footers: the row groups whose event-time statistics
    overlap ``[start, end)`` (all of a file's rows when it has no usable statistics).  None
    when a source is not local: the caller then assumes it is large.  A local source that
    cannot be inspected counts 0 rows: the in-process reader then names the problem at once."""
    total = 0
    for plan in plans:
        if not is_local(plan):
            return None
        try:
            total += _plan_rows(plan)
        except Exception:  # missing or unreadable: reading it in this process reports why, at once
            continue
    return total


def _plan_rows(plan: ViewPlan) -> int:
    import pyarrow.dataset as ds

    dataset = ds.dataset(_local_path(plan), format="parquet", partitioning="hive")
    ts = {v: k for k, v in plan.rename.items()}.get(plan.target.timestamp_field, plan.target.timestamp_field)
    rows = 0
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        names = meta.schema.names
        column = names.index(ts) if ts in names else None
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            if column is None or _overlaps(group.column(column).statistics, plan.start, plan.end):
                rows += group.num_rows
    return rows


def _overlaps(stats, start: datetime, end: datetime) -> bool:
    """False only when the row group's min/max event time lies wholly outside [start, end)."""
    if stats is None or not stats.has_min_max:
        return True
    lo, hi = stats.min, stats.max
    if not isinstance(lo, datetime) or not isinstance(hi, datetime):
        return True  # strings, integers...: no cheap comparison, count the group
    if lo.tzinfo is None:  # Feast reads naive event times as UTC
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return not (hi < start or lo >= end)


def check_columns(plan: ViewPlan) -> None:
    """Raise :class:`SourceError` naming each file of a local source that lacks a column the view
    reads, from the files' footers. A dataset reader fills a column one file lacks with nulls, which
    would then be written over good values as "no value"; and the cluster's reader fails such a file
    with a bare ``KeyError``. A partition directory's key (``date=...``) counts as a column."""
    import pyarrow.dataset as ds

    if not is_local(plan):
        return
    try:
        dataset = ds.dataset(_local_path(plan), format="parquet", partitioning="hive")
        fragments = list(dataset.get_fragments())
    except (FileNotFoundError, ValueError, OSError):
        return  # the reader names it
    problems = []
    for fragment in fragments:
        try:
            names = list(fragment.physical_schema.names)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(f"source file {fragment.path} is not readable parquet (truncated or corrupt?): {exc}")
            continue
        names += [k for k in ds.get_partition_keys(fragment.partition_expression) if k not in names]
        missing = [c for c in plan.source_columns if c not in names]
        if missing:
            shown = ", ".join(n for n in names if not n.startswith("__"))
            problems.append(f"source file {fragment.path} lacks column(s) {missing} (it has {shown})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise SourceError(f"feature view {plan.name!r}: " + "; ".join(problems[:3]) + more)


def _frame(plan: ViewPlan):
    """The view's rows inside [start, end) as one pandas frame, read the way Dask reads a partition."""
    import pyarrow.parquet as pq

    check_columns(plan)
    try:
        table = pq.read_table(_local_path(plan), columns=list(plan.source_columns), partitioning="hive")
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise SourceError(
            f"feature view {plan.name!r}: cannot read {plan.path} with columns {list(plan.source_columns)}: "
            f"{type(exc).__name__}: {exc}") from None
    frame = table.to_pandas(ignore_metadata=False)
    return _filtered(frame, plan)


def run_in_process(plans: Sequence[ViewPlan], *, progress: ProgressFn | None = None,
                   record: RecordFn | None = None) -> dict[str, ViewResult]:
    """Write each plan's rows in this process, one view after another, as one partition each.
    (Splitting a view over two writer threads was measured slower for SQLite, 20-24 s against
    16.6-17.5 s for 100k mixed-type entities: encoding holds the GIL.)

    Same contract as :func:`skyfeast.featurestore.materialize.run_plans`: ``record(view, start,
    end)`` once a view is written; a view's failure is in its :class:`ViewResult`, never
    raised (``KeyboardInterrupt`` propagates).  The writers' connections are closed before
    returning."""
    from skyfeast.featurestore.online import close_writers

    runs = {plan.name: _Run(plan, ChunkBook(partitions=1), time.monotonic()) for plan in plans}
    done = 0
    if progress:
        progress(done, len(runs))
    try:
        for run in runs.values():
            run.t0 = time.monotonic()
            try:
                with waiting(f"{run.plan.name} to be read and written to the online store "
                             f"({run.plan.target.online_label})"):
                    stats = _write_partition(_frame(run.plan), run.plan.target)
                run.book.done[0] = stats
                run.seconds = time.monotonic() - run.t0
                if record is not None:
                    record(run.plan.name, run.plan.start, run.plan.end)
            except Exception as exc:
                run.error = exc
                run.seconds = time.monotonic() - run.t0
            done += 1
            if progress:
                progress(done, len(runs))
    finally:
        close_writers()
    return {name: _view_result(run) for name, run in runs.items()}
