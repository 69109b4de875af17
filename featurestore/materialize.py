"""Drop-in materialisation: a Feast feature view's batch source into its online store, on Dask.

:func:`materialize` is what ``FeatureStore.materialize`` does, run on a Dask
cluster instead of in one process:

* each view's ``FileSource`` (a parquet file or directory) is read with
  ``dask.dataframe``, keeping event timestamps in ``[start, end)``;
* rows are shuffled by entity, so every entity lands in exactly one partition:
  for SQLite and PostgreSQL, whose tables are B-trees in serialised-key order,
  each partition is one contiguous key range (:mod:`skyfeast.featurestore.partitioning`,
  ranges from a sample of the input); for other stores, a hash of the join keys;
* one task per partition, *on the workers*, writes the newest row per entity
  with :func:`skyfeast.featurestore.online.write_latest` (the native newest-wins writers),
  so the client never holds the range and a worker holds one partition at a time;
* all partitions of all views are submitted together, so views run concurrently;
* ``record_materialization`` is called once per view, as soon as all of its
  partitions are written.  The view's state is never set to ``MATERIALIZING``,
  so readers are never blocked.

:func:`materialize_with_failover` runs the same thing over an ordered list of
clusters: an infrastructure failure moves the unfinished views to the next
cluster, which rewrites only the partitions that are not written yet.
:func:`plan_view` and :func:`run_plans` are the lower level the Feast engine
plugin (:mod:`skyfeast.featurestore.engine`) shares.

Exceptions::

    MaterializeError
    ├── UnknownFeatureViewError (LookupError)  a named view is not in the registry
    ├── UnsupportedFeatureViewError            not a FileSource/parquet view, a transformation,
    │                                          not online, disabled
    ├── SourceError                            the parquet source is missing or lacks columns
    └── MaterializeFailed                      a view failed while running; ``.result`` has the
                                               per-view outcome, ``.infrastructure`` says whether
                                               every failure was the cluster's

Bounds are half-open, ``[start, end)``, like skyfeast windows: consecutive
ranges never write a row twice.  (Feast's file offline store reads ``[start,
end]``.)  Feast applies no TTL to an explicit ``materialize`` range (only
``materialize_incremental`` derives its first start from the TTL), so neither
does this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from skyfeast.adapters.failures import classify, describe, is_infrastructure
from skyfeast.adapters.waiting import waiting
from skyfeast.featurestore.alloc import in_batch
from skyfeast.featurestore.chunks import INPUT_BLOCK, ChunkBook, by_chunk, fix_partitioning, n_workers, watch
from skyfeast.featurestore.partitioning import ordered_writes
from skyfeast.featurestore.repo import FeastRepo, WriteTarget, _quiet

ProgressFn = Callable[[int, int], None]
RecordFn = Callable[[str, datetime, datetime], None]


class MaterializeError(Exception):
    """Root of this module's errors; the message is user-facing."""

    failure_class = "data"  # see skyfeast.adapters.failures


class UnknownFeatureViewError(MaterializeError, LookupError):
    """A feature view named by the caller is not registered."""


class UnsupportedFeatureViewError(MaterializeError):
    """The view cannot be materialised here (source type, transformation, not online...)."""


class SourceError(MaterializeError):
    """The view's batch source is missing or lacks a column the view needs."""


class MaterializeFailed(MaterializeError):
    """At least one view failed. ``result.per_view[name].error`` says why for each."""

    def __init__(self, result: MaterializeResult, infrastructure: bool):
        self.result = result
        self.infrastructure = infrastructure
        self.failure_class = "infrastructure" if infrastructure else "data"
        failed = [v for v in result.per_view.values() if v.error]
        super().__init__("; ".join(f"{v.feature_view}: {v.error}" for v in failed))


@dataclass
class ViewResult:
    feature_view: str
    rows: int = 0  # entity rows written (newest per entity)
    values: int = 0  # rows × features
    rows_in: int = 0  # source rows inside the range
    partitions: int = 0
    seconds: float = 0.0
    error: str | None = None
    infrastructure: bool = False  # the error was the cluster's (another cluster may succeed)
    failure_class: str | None = None  # the error's class (skyfeast.adapters.failures): "data", "config"...
    first_write_at: float | None = None  # wall clock (time.time()) the first partition's write started
    last_write_at: float | None = None  # ...and the last one's ended

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class MaterializeResult:
    rows: int
    values: int
    seconds: float
    per_view: dict[str, ViewResult]
    provider: str | None = None

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.per_view.values())


@dataclass(frozen=True)
class ViewPlan:
    """One view to materialise: picklable, no live connections."""

    target: WriteTarget
    start: datetime
    end: datetime
    path: str
    storage_options: dict | None
    source_columns: tuple[str, ...]
    rename: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.target.name


# --------------------------------------------------------------------------- planning
def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def plan_view(repo_config, fv, start: datetime, end: datetime) -> ViewPlan:
    """Check that ``fv`` can be materialised from its batch source and describe how.

    Raises :class:`UnsupportedFeatureViewError` naming the view and the reason.
    """
    from feast.data_format import ParquetFormat
    from feast.infra.offline_stores.file_source import FileSource

    start, end = _utc(start), _utc(end)
    if end <= start:
        raise MaterializeError(f"end {end.isoformat()} must be after start {start.isoformat()}")
    from feast import StreamFeatureView

    name = fv.name
    if isinstance(fv, StreamFeatureView):
        raise UnsupportedFeatureViewError(f"{name!r} is a StreamFeatureView; only batch feature views are supported")
    if getattr(fv, "aggregations", None) or getattr(fv, "feature_transformation", None):
        raise UnsupportedFeatureViewError(
            f"feature view {name!r} has a transformation or aggregations; only plain feature views are materialised here"
        )
    source = fv.batch_source
    if not isinstance(source, FileSource):
        raise UnsupportedFeatureViewError(
            f"feature view {name!r} reads a {type(source).__name__}; only FileSource (parquet) is supported"
        )
    if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
        raise UnsupportedFeatureViewError(
            f"feature view {name!r} reads {type(source.file_format).__name__} files; only parquet is supported"
        )
    target = WriteTarget(
        repo_config=repo_config,
        view_proto=fv.to_proto().SerializeToString(),
        join_keys=tuple(ec.name for ec in fv.entity_columns),
        features=tuple(f.name for f in fv.features),
        timestamp_field=source.timestamp_field or "event_timestamp",
    )
    wanted = [*target.join_keys, *target.features, target.timestamp_field]
    if source.created_timestamp_column:
        wanted.append(source.created_timestamp_column)
    mapping = dict(source.field_mapping or {})  # source column -> view column
    reverse = {v: k for k, v in mapping.items()}
    source_columns = tuple(dict.fromkeys(reverse.get(c, c) for c in wanted))
    rename = {k: v for k, v in mapping.items() if k in source_columns}
    storage_options = {"client_kwargs": {"endpoint_url": source.s3_endpoint_override}} \
        if source.s3_endpoint_override else None
    path = FileSource.get_uri_for_file_path(repo_path=repo_config.repo_path, uri=source.path)
    return ViewPlan(target, start, end, path, storage_options, source_columns, rename)


def _views(repo: FeastRepo, names: list[str] | None) -> list:
    from feast import FeatureView

    with _quiet():
        registered = {fv.name: fv for fv in repo.store.list_feature_views()}
    if names is None:
        return [fv for name, fv in sorted(registered.items())
                if fv.online and getattr(fv, "enabled", True) and isinstance(fv, FeatureView)]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise UnknownFeatureViewError(f"unknown feature view(s) {unknown}; registered: {sorted(registered)}")
    out = []
    for name in dict.fromkeys(names):
        fv = registered[name]
        if not fv.online:
            raise UnsupportedFeatureViewError(f"feature view {name!r} has online=False; nothing to materialise")
        if not getattr(fv, "enabled", True):
            raise UnsupportedFeatureViewError(f"feature view {name!r} is disabled; enable it before materialising")
        out.append(fv)
    return out


# --------------------------------------------------------------------------- worker side
@in_batch
def _write_partition(pdf: pd.DataFrame, target: WriteTarget, after: dict | None = None) -> dict:
    """One partition into the online store. ``after`` is set when the view's partition writes are
    chained (:func:`run_plans`): the stats of the partition written before this one, or ``{}`` for
    the first; this one then writes alone."""
    from skyfeast.featurestore.online import write_latest

    started = time.time()  # wall clock, comparable across this machine's processes (phase timings)
    rows = write_latest(pdf, target, alone=after is not None) if len(pdf) else 0
    return {"rows_in": len(pdf), "rows": rows, "started": started, "finished": time.time()}


# --------------------------------------------------------------------------- client side
def _bounds(dtype, start: datetime, end: datetime):
    """Bounds comparable with the timestamp column: Feast reads naive timestamps as UTC."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if isinstance(dtype, pd.DatetimeTZDtype):
        return lo, hi
    return lo.tz_convert("UTC").tz_localize(None), hi.tz_convert("UTC").tz_localize(None)


def _filtered(frame, plan: ViewPlan, to_datetime=pd.to_datetime):
    """``frame`` (pandas, or Dask with ``dd.to_datetime``) renamed to the view's columns, event
    times as datetimes, and only the rows in [start, end): one definition for both readers."""
    if plan.rename:
        frame = frame.rename(columns=dict(plan.rename))
    ts = plan.target.timestamp_field
    if not pd.api.types.is_datetime64_any_dtype(frame[ts].dtype):
        frame = frame.assign(**{ts: to_datetime(frame[ts], utc=True)})
    lo, hi = _bounds(frame[ts].dtype, plan.start, plan.end)
    return frame[(frame[ts] >= lo) & (frame[ts] < hi)]


def _frame(plan: ViewPlan):
    """The view's rows inside [start, end), lazily: the filter is pushed into the parquet scan."""
    import dask
    import dask.dataframe as dd

    from skyfeast.featurestore.inprocess import check_columns

    check_columns(plan)  # a local source's files, each with every column the view reads
    with dask.config.set({"dataframe.convert-string": False}):
        try:
            ddf = dd.read_parquet(plan.path, columns=list(plan.source_columns), storage_options=plan.storage_options,
                                  blocksize=INPUT_BLOCK)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            # dask wraps the reader's error in a paragraph of its own: the reader's message is the line after it
            why = str(exc).rpartition("Original Message: ")[2].strip() or str(exc)
            raise SourceError(
                f"feature view {plan.name!r}: cannot read {plan.path} with columns {list(plan.source_columns)}: "
                f"{type(exc).__name__}: {why}") from None
    return _filtered(ddf, plan, dd.to_datetime)


@dataclass
class _Run:
    plan: ViewPlan
    book: Any
    t0: float
    futures: list = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


def run_plans(client, plans: Sequence[ViewPlan], *, books: dict | None = None, progress: ProgressFn | None = None,
              record: RecordFn | None = None, partitions: int | None = None) -> dict[str, ViewResult]:
    """Write every plan's partitions on ``client``'s cluster, all views at once.

    ``books`` maps view name → :class:`~skyfeast.featurestore.chunks.ChunkBook`:
    partitions already in ``book.done`` are skipped, and a view's partitioning
    (count, and key ranges for key-ordered stores) is fixed by its first attempt.
    Missing entries are created (pass the same dict to a retry on another cluster).
    ``record(view, start, end)`` is called once a view's last partition is
    written.  A failure in one view cancels that view only; its
    :class:`ViewResult` carries the error.  Never raises for a view's failure;
    ``KeyboardInterrupt`` cancels everything and propagates.
    """
    import dask

    books = {} if books is None else books
    workers = n_workers(client)

    def default_parts(target: WriteTarget) -> int:
        # a chained view (ordered_writes) writes one partition at a time, and each partition's
        # first chunk is encoded before anything of it is written: one per worker keeps the
        # reading and shuffling parallel with the fewest such starts
        return partitions or (workers if ordered_writes(target) else 2 * workers)

    runs: dict[str, _Run] = {}
    frames = {}
    for plan in plans:
        run = runs[plan.name] = _Run(plan, books.setdefault(plan.name, ChunkBook()), time.monotonic())
        try:
            frames[plan.name] = _frame(plan)
        except Exception as exc:
            run.error = exc
    items = [(ddf, runs[name].plan.target, runs[name].book, max(default_parts(runs[name].plan.target), ddf.npartitions))
             for name, ddf in frames.items()]
    for name, error in zip(frames, fix_partitioning(client, items)):
        runs[name].error = error
    tasks: list = []
    keys: list[tuple[str, int]] = []
    for name, ddf in frames.items():
        run = runs[name]
        if run.error is not None:
            continue
        try:
            parts = by_chunk(client, ddf, run.plan.target, run.book)
        except Exception as exc:
            run.error = exc
            continue
        # A store that takes one writer at a time (SQLite) gets the partitions one after another in
        # ascending key order, each appending past the rows before it; reading, shuffling and
        # encoding still run in parallel (docs/benchmarks.md, materialize run m).
        chained = ordered_writes(run.plan.target)
        after = {} if chained else None  # {}: the head of a chain, which writes alone too
        for i, part in enumerate(parts):
            if i not in run.book.done:
                task = dask.delayed(_write_partition, pure=False)(part, run.plan.target, after)
                if chained:
                    after = task
                tasks.append(task)
                keys.append((name, i))
    total = sum(r.book.partitions or 0 for r in runs.values() if r.error is None)
    done = sum(len(r.book.done) for r in runs.values() if r.error is None)
    if progress:
        progress(done, total)

    def finish(run: _Run) -> None:
        run.seconds = time.monotonic() - run.t0
        if record is not None:
            try:
                record(run.plan.name, run.plan.start, run.plan.end)
            except Exception as exc:
                run.error = exc

    futures = client.compute(tasks) if tasks else []
    owner = {fut.key: key for fut, key in zip(futures, keys)}
    for fut, (name, _) in zip(futures, keys):
        runs[name].futures.append(fut)
    for run in runs.values():  # nothing left to write: a retry after every partition succeeded
        if run.error is None and not run.futures:
            finish(run)

    def on_result(fut, stats: dict) -> None:
        nonlocal done
        name, i = owner[fut.key]
        run = runs[name]
        if run.error is not None:
            return
        run.book.done[i] = stats
        run.book.record(i, stats)
        done += 1
        if progress:
            progress(done, total)
        if len(run.book.done) == run.book.partitions:
            finish(run)

    def on_error(fut, exc: BaseException) -> None:
        run = runs[owner[fut.key][0]]
        if run.error is None:
            run.error = exc
            client.cancel([f for f in run.futures if not f.done()], force=True)

    if futures:
        views = [name for name, run in runs.items() if run.futures]
        named = ", ".join(views) if len(views) <= 3 else f"{len(views)} feature views"
        label = runs[views[0]].plan.target.online_label
        with waiting(f"{len(futures)} partition(s) of {named} to be read and written to the online store ({label})"):
            watch(client, futures, on_result=on_result, on_error=on_error)
    return {name: _view_result(run) for name, run in runs.items()}


def _view_result(run: _Run) -> ViewResult:
    res = ViewResult(run.plan.name, partitions=len(run.book.done), seconds=round(run.seconds, 3))
    for stats in run.book.done.values():
        res.rows += stats.get("rows", 0)
        res.rows_in += stats.get("rows_in", 0)
    starts = [s["started"] for s in run.book.done.values() if "started" in s]
    ends = [s["finished"] for s in run.book.done.values() if "finished" in s]
    res.first_write_at, res.last_write_at = (min(starts) if starts else None), (max(ends) if ends else None)
    res.values = res.rows * len(run.plan.target.features)
    if run.error is not None:
        exc = run.error
        res.error = str(exc) if isinstance(exc, MaterializeError) else describe(exc)
        res.infrastructure = is_infrastructure(exc)
        res.failure_class = classify(exc).value
    return res


def make_result(per_view: dict[str, ViewResult], t0: float, provider: str | None = None) -> MaterializeResult:
    """The run's totals over ``per_view``, timed from ``t0`` (``time.monotonic()``)."""
    return MaterializeResult(
        rows=sum(v.rows for v in per_view.values()),
        values=sum(v.values for v in per_view.values()),
        seconds=round(time.monotonic() - t0, 3),
        per_view=per_view,
        provider=provider,
    )


def prepare_plans(repo_path, feature_views: list[str] | None, start: datetime,
                  end: datetime) -> tuple[FeastRepo, list[ViewPlan]]:
    """Load the Feast repo and plan each view (default: every online, enabled one).

    Raises :class:`MaterializeError` subclasses (and ``FeastRepoError``) for bad arguments,
    unknown or unsupported views; nothing is written."""
    path = Path(repo_path)
    if not (path / "feature_store.yaml").is_file():
        raise MaterializeError(f"{path} has no feature_store.yaml; point at a Feast repo")
    if _utc(end) <= _utc(start):
        raise MaterializeError(f"end {end} must be after start {start}")
    repo = FeastRepo(path)
    plans = [plan_view(repo.store.config, fv, start, end) for fv in _views(repo, feature_views)]
    if not plans:
        raise UnsupportedFeatureViewError(f"{path} has no online, enabled feature view to materialise")
    return repo, plans


_prepare = prepare_plans


def materialize(repo_path, feature_views: list[str] | None, start: datetime, end: datetime, *, client,
                progress: ProgressFn | None = None, chunk_book: dict | None = None,
                partitions: int | None = None) -> MaterializeResult:
    """Materialise ``feature_views`` (default: every online, enabled view) for ``[start, end)``.

    ``client`` is a connected ``distributed.Client``; ``chunk_book`` maps view
    name → ChunkBook for resuming (see :func:`run_plans`); ``partitions``
    overrides the shuffle's partition count (default: twice the workers, or the
    input's partition count if larger).  Naive datetimes are UTC.

    Raises :class:`MaterializeError` subclasses before anything is written for
    bad arguments or unsupported views, and :class:`MaterializeFailed` after
    running if any view failed (views that succeeded are recorded).
    """
    t0 = time.monotonic()
    repo, plans = prepare_plans(repo_path, feature_views, start, end)
    per_view = run_plans(client, plans, books=chunk_book, progress=progress, record=repo.record_materialization,
                         partitions=partitions)
    result = make_result(per_view, t0)
    if not result.ok:
        raise MaterializeFailed(result, all(v.infrastructure for v in per_view.values() if v.error))
    return result


def run_with_failover(plans: Sequence[ViewPlan], providers: Sequence[tuple[str, Callable[[], Any]]], *,
                      progress: ProgressFn | None = None, record: RecordFn | None = None,
                      partitions: int | None = None,
                      on_failover: Callable[[str, str], None] | None = None) -> tuple[dict[str, ViewResult], str | None]:
    """:func:`run_plans` on the first provider whose cluster works, highest priority first.

    ``providers`` are ``(name, connect)`` pairs; ``connect()`` returns a
    ``distributed.Client`` or raises.  Views that fail for infrastructure
    reasons move to the next provider, keeping the partitions already written;
    views that fail for any other reason stay failed.  ``on_failover(provider,
    reason)`` is told about each move.  Returns the per-view results and the
    last provider used.
    """
    books: dict = {}
    pending = list(plans)
    results: dict[str, ViewResult] = {}
    used = None
    for index, (name, connect) in enumerate(providers):
        used = name
        try:
            client = connect()
            results.update(run_plans(client, pending, books=books, progress=progress, record=record,
                                     partitions=partitions))
        except Exception as exc:  # unreachable cluster, or lost while the graph was submitted
            if not is_infrastructure(exc):
                raise
            for plan in pending:
                run = _Run(plan, books.setdefault(plan.name, ChunkBook()), time.monotonic(), error=exc)
                results[plan.name] = _view_result(run)
        pending = [p for p in pending if results[p.name].infrastructure]
        if not pending:
            break
        if on_failover and index + 1 < len(providers):
            on_failover(name, "; ".join(f"{p.name}: {results[p.name].error}" for p in pending))
    return results, used


def materialize_with_failover(repo_path, feature_views: list[str] | None, start: datetime, end: datetime, *,
                              providers: Sequence[tuple[str, Callable[[], Any]]], progress: ProgressFn | None = None,
                              partitions: int | None = None,
                              on_failover: Callable[[str, str], None] | None = None) -> MaterializeResult:
    """:func:`materialize` over ``providers`` in order (see :func:`run_with_failover`)."""
    t0 = time.monotonic()
    if not providers:
        raise MaterializeError("no provider to run on")
    repo, plans = prepare_plans(repo_path, feature_views, start, end)
    per_view, used = run_with_failover(plans, providers, progress=progress, record=repo.record_materialization,
                                       partitions=partitions, on_failover=on_failover)
    result = make_result(per_view, t0, used)
    if not result.ok:
        raise MaterializeFailed(result, all(v.infrastructure for v in per_view.values() if v.error))
    return result


__all__ = [
    "MaterializeError",
    "MaterializeFailed",
    "MaterializeResult",
    "SourceError",
    "UnknownFeatureViewError",
    "UnsupportedFeatureViewError",
    "ViewPlan",
    "ViewResult",
    "is_infrastructure",
    "make_result",
    "materialize",
    "materialize_with_failover",
    "plan_view",
    "prepare_plans",
    "run_plans",
    "run_with_failover",
]
