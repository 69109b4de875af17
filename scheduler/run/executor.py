"""Run one job window on one provider's Dask cluster.

The daemon process only builds the graph and watches futures; rows are read,
transformed, written offline (parquet) and online (Feast) *on the workers*,
one task per chunk.  The chunking, the shuffle and the watching are shared
with drop-in materialisation (:mod:`skyfeast.featurestore.chunks`); a failure
is classed by :func:`skyfeast.adapters.failures.classify`:

* :class:`UserCodeError` – the transform/scorer raised or returned bad output;
* :class:`~skyfeast.scheduler.errors.DataError` – the window's input is missing or malformed;
* ``TimeoutExpired`` – the job's ``timeout`` passed; futures are cancelled;
* anything else from the cluster, storage or online store – infrastructure.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# featurestore.writers imports Feast (seconds of CPU). Dask schedulers unpickle task graphs, and with
# them this module, on their event loop: keep this module's imports light and import the writers
# inside the worker-side functions, or a cold scheduler stops answering for that long.
from skyfeast.adapters.base import ObjectStore
from skyfeast.adapters.failures import FailureClass
from skyfeast.featurestore.chunks import INPUT_BLOCK, ChunkBook, by_chunk, fix_partitioning, n_workers, watch
from skyfeast.featurestore.online import OutputSchemaError, check_columns, write_latest
from skyfeast.featurestore.repo import WriteTarget
from skyfeast.scheduler.errors import DataError
from skyfeast.scheduler.run.contracts import check_inputs, null_keys
from skyfeast.scheduler.timing.windows import Window


class UserCodeError(Exception):
    """User code raised, or returned something unusable. Message includes the cause."""

    failure_class = FailureClass.USER_CODE


@dataclass
class ExecResult:
    partitions: int = 0
    rows_in: int = 0
    rows_out: int = 0
    rows_online: int = 0
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartitionSpec:
    """Everything a partition task needs; picklable."""

    window: Window
    target: WriteTarget
    out_url: str
    storage_options: dict
    user_fn: Callable[..., Any]
    user_fn_name: str
    ts_field: str | None = None
    read_start: Any = None
    read_end: Any = None
    model_url: str | None = None


# --------------------------------------------------------------------------- worker side
def _write_offline(frame: pd.DataFrame, url: str, storage_options: dict) -> None:
    import fsspec

    with fsspec.open(url, "wb", **storage_options) as fh:
        frame.to_parquet(fh, index=False)


def _call_user(spec: PartitionSpec, index: int, *args: Any) -> pd.DataFrame:
    try:
        out = spec.user_fn(*args)
    except Exception as exc:  # the chunk is named so that a repeat of the same failure is recognised
        raise UserCodeError(f"{spec.user_fn_name} raised {type(exc).__name__} on chunk {index}: {exc}") from None
    if not isinstance(out, pd.DataFrame):
        raise UserCodeError(f"{spec.user_fn_name} returned {type(out).__name__}, expected a pandas DataFrame")
    if spec.target.timestamp_field not in out.columns:
        out = out.assign(**{spec.target.timestamp_field: pd.Timestamp(spec.window.end)})
    try:
        check_columns(out, spec.target)
    except OutputSchemaError as exc:
        raise UserCodeError(f"{spec.user_fn_name}: {exc}") from None
    return out


def _finish_partition(out: pd.DataFrame, index: int, spec: PartitionSpec, rows_in: int) -> dict:
    cols = [*spec.target.join_keys, *spec.target.features, spec.target.timestamp_field]
    out = out[cols + [c for c in out.columns if c not in cols]]
    url = f"{spec.out_url}-part{index:05d}.parquet"
    if len(out):
        _write_offline(out, url, spec.storage_options)
    from skyfeast.featurestore.writers import EncodingError, StoreNotReadyError

    try:
        online = write_latest(out, spec.target)
    except (OutputSchemaError, EncodingError) as exc:
        raise UserCodeError(f"{spec.user_fn_name} returned rows the online store cannot take: {exc}") from None
    except StoreNotReadyError as exc:
        raise DataError(f"{exc}") from None
    return {"rows_in": rows_in, "rows_out": len(out), "rows_online": online, "file": url if len(out) else None}


def feature_partition(pdf: pd.DataFrame, index: int, spec: PartitionSpec) -> dict:
    ts = spec.ts_field
    nulls = null_keys(pdf, [*spec.target.join_keys, ts])
    if nulls:  # files without statistics got past the footer check
        raise DataError("input rows break their contract: " + ", ".join(f"{n:,} null {c} values" for c, n in nulls.items()))
    pdf = pdf[(pdf[ts] >= spec.read_start) & (pdf[ts] < spec.read_end)]
    if pdf.empty:
        return {"rows_in": 0, "rows_out": 0, "rows_online": 0, "file": None}
    out = _call_user(spec, index, pdf.reset_index(drop=True), spec.window)
    return _finish_partition(out, index, spec, len(pdf))


@functools.lru_cache(maxsize=8)
def _load_model(url: str, storage_options_json: str) -> Any:
    import fsspec
    import joblib

    with fsspec.open(url, "rb", **json.loads(storage_options_json)) as fh:
        return joblib.load(fh)


def model_partition(pdf: pd.DataFrame, index: int, spec: PartitionSpec) -> dict:
    if pdf.empty:
        return {"rows_in": 0, "rows_out": 0, "rows_online": 0, "file": None}
    try:
        model = _load_model(spec.model_url, json.dumps(spec.storage_options, sort_keys=True))
    except Exception as exc:
        raise UserCodeError(f"cannot load model artifact {spec.model_url}: {type(exc).__name__}: {exc}") from None
    out = _call_user(spec, index, model, pdf.reset_index(drop=True), spec.window)
    return _finish_partition(out, index, spec, len(pdf))


def model_partition_from_file(url: str, storage_options: dict, index: int, spec: PartitionSpec) -> dict:
    import fsspec

    with fsspec.open(url, "rb", **storage_options) as fh:
        pdf = pd.read_parquet(fh)
    return model_partition(pdf, index, spec)


# --------------------------------------------------------------------------- client side
ProgressFn = Callable[[int, int], None]


def _run_chunks(client, tasks: dict[int, Any], deadline: float, progress: ProgressFn | None,
                cancelled: Callable[[], bool], book: ChunkBook) -> None:
    """Compute ``tasks`` (chunk number → delayed), recording each chunk in ``book`` as it finishes."""
    total = len(tasks) + len(book.done)
    if progress:
        progress(len(book.done), total)
    if not tasks:
        return
    with client.as_current():
        futures = client.compute(list(tasks.values()))
    index = {f.key: i for f, i in zip(futures, tasks)}

    def on_result(fut, stats: dict) -> None:
        i = index[fut.key]
        book.record(i, stats)
        book.done[i] = stats
        if progress:
            progress(len(book.done), total)

    watch(client, futures, on_result=on_result, deadline=deadline, cancelled=cancelled)


def _clear_stale_outputs(store: ObjectStore, out_key: str, book: ChunkBook) -> None:
    """A run starting from scratch removes files a previous run of the window left behind."""
    if not book.done:
        store.delete(store.list(out_key))


def run_feature_job(*, client, store: ObjectStore, job, window: Window, target: WriteTarget, transform: Callable,
                    keys: list[str], deadline: float, progress: ProgressFn | None = None,
                    cancelled: Callable[[], bool] = lambda: False, book: ChunkBook | None = None,
                    source_store: ObjectStore | None = None) -> ExecResult:
    """``keys`` are on ``source_store`` (default: ``store``, which receives the outputs)."""
    import dask
    import dask.dataframe as dd

    book = book or ChunkBook()
    src = job.source
    read_start, read_end = window.read_range(src)
    source_store = source_store or store
    urls = [source_store.url(k) for k in keys]
    check_inputs(urls, source_store.storage_options, keys=target.join_keys, timestamp=src.timestamp_field,
                 declared=src.columns)
    rs, re_ = pd.Timestamp(read_start), pd.Timestamp(read_end)
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.read_parquet(urls, storage_options=source_store.storage_options or None, blocksize=INPUT_BLOCK,
                              filters=[(src.timestamp_field, ">=", rs), (src.timestamp_field, "<", re_)])
    missing = [c for c in (*target.join_keys, src.timestamp_field) if c not in ddf.columns]
    if missing:
        raise DataError(f"source {src.path!r} lacks column(s) {missing}; it has {list(ddf.columns)}")
    # the first attempt fixes the chunking for all later ones
    error, = fix_partitioning(client, [(ddf, target, book, job.partitions or max(2, 2 * n_workers(client)))])
    if error is not None:
        raise error
    parts = by_chunk(client, ddf, target, book).to_delayed()
    out_key = f"offline/{target.name}/{window.tag}"
    _clear_stale_outputs(store, out_key, book)
    spec = PartitionSpec(window=window, target=target, out_url=store.url(out_key), storage_options=store.storage_options,
                         user_fn=transform, user_fn_name=job.transform, ts_field=src.timestamp_field,
                         read_start=rs, read_end=re_)
    tasks = {i: dask.delayed(feature_partition, pure=False)(p, i, spec)
             for i, p in enumerate(parts) if i not in book.done}
    _run_chunks(client, tasks, deadline, progress, cancelled, book)
    return _collect(book)


def run_model_job(*, client, store: ObjectStore, job, window: Window, target: WriteTarget,
                  scorer: Callable, inputs: list[tuple[str, dict]], deadline: float, progress: ProgressFn | None = None,
                  cancelled: Callable[[], bool] = lambda: False, book: ChunkBook | None = None) -> ExecResult:
    import dask

    book = book or ChunkBook()
    if not store.exists(job.model.artifact):
        raise DataError(f"model artifact {job.model.artifact!r} not found under {store.url()}")
    # one chunk per upstream file: the upstream's partitioning is already by entity
    book.partitions = len(inputs)
    out_key = f"offline/{target.name}/{window.tag}"
    _clear_stale_outputs(store, out_key, book)
    spec = PartitionSpec(window=window, target=target, out_url=store.url(out_key), storage_options=store.storage_options,
                         user_fn=scorer, user_fn_name=job.model.scorer, model_url=store.url(job.model.artifact))
    tasks = {i: dask.delayed(model_partition_from_file, pure=False)(url, opts, i, spec)
             for i, (url, opts) in enumerate(inputs) if i not in book.done}
    _run_chunks(client, tasks, deadline, progress, cancelled, book)
    return _collect(book)


def _collect(book: ChunkBook) -> ExecResult:
    r = ExecResult(partitions=len(book.done))
    for d in book.done.values():
        r.rows_in += d.get("rows_in", 0)
        r.rows_out += d.get("rows_out", 0)
        r.rows_online += d.get("rows_online", 0)
        if d.get("file"):
            r.files.append(d["file"])
    return r
