"""A composed model job's input: its first upstream's output inner-joined with its other upstreams'.

A job with ``source: {type: job, job: [a, b, ...]}`` scores the outputs of ``a``, ``b``, ...
for the same window, joined on the entity keys.  Two ways, with one result:

* **broadcast** – one chunk per part file of ``a``; each chunk's task reads its part and
  joins it with the *whole* output of every other upstream, which each worker process reads
  once per upstream run and keeps, within :data:`BROADCAST_CACHE_BYTES`
  (:func:`read_joined`).  No shuffle: the cheapest way while
  the other upstreams' outputs fit in a worker's memory beside its chunk.
* **shuffle** – every upstream is read part by part, each row tagged with its bucket (a hash
  of its entity keys, the same for every upstream: :func:`bucket_of`), and Dask's shuffle
  gathers bucket ``i`` of every upstream into chunk ``i`` (:func:`shuffle_joined`).  A worker
  then holds one bucket of each upstream at a time, whatever their size.

Either way, per other upstream: its rows whose keys the frame so far has, the columns the frame
lacks (a column the frame already has is taken from the first upstream that has it, the event
time included), and of several rows with one key, the last in its part order.  A chunk's rows are
in the order of their parts.

The way is chosen at a run's first attempt (:func:`join_way`: the job's ``join`` setting, and
for ``auto`` the size of the other upstreams' outputs, from the ledger's row counts and their
views' columns) and kept, with the chunk count, for every later attempt on any provider: chunk
``i`` always holds the same entities, so a resumed run recomputes only the chunks it lacks.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skyfeast.scheduler.errors import DataError

BROADCAST_JOIN_VALUES = 100_000_000
"""``join: auto`` shuffles when the other upstreams' outputs hold more values than this together (rows
times columns): a broadcast join keeps them all in every worker process, so its memory grows with them,
and past about this size its time too (``bench/join.py`` in docs/benchmarks.md: the broadcast was faster
at 42M values, as fast at 164M with twice the memory per worker, and slower at 328M with three times)."""

SEQ = "_skyfeast_seq"  # a row's place in its upstream's output: part number << 32 | row number
_PART_BITS = 32

# per other upstream: (its run's identity, its parts as (url, storage options JSON)); the identity (run id and
# end time) keeps a worker from reusing what it read of an earlier run of the window, whose parts had the same URLs
Joins = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def join_way(setting: str, other_values: int | None) -> str:
    """``broadcast`` or ``shuffle`` for a job whose ``join`` is ``setting`` (``auto``, ``broadcast``
    or ``shuffle``) and whose other upstreams wrote ``other_values`` values (rows times columns)
    together for the window (None: not known, as for runs recorded without row counts)."""
    if setting in ("broadcast", "shuffle"):
        return setting
    if setting != "auto":
        raise ValueError(f"unknown join setting {setting!r}")
    return "shuffle" if other_values is not None and other_values > BROADCAST_JOIN_VALUES else "broadcast"


def hashable(joins: Sequence[tuple[str, Sequence[tuple[str, dict]]]]) -> Joins:
    """``joins`` (per other upstream: its run's identity, and its parts as (url, storage options)) in a
    hashable form, for the workers' cache of joined upstreams."""
    return tuple((run, tuple((url, json.dumps(opts or {}, sort_keys=True)) for url, opts in parts))
                 for run, parts in joins)


# --------------------------------------------------------------------------- worker side
def read_part(url: str, storage_options: dict) -> pd.DataFrame:
    import fsspec

    with fsspec.open(url, "rb", **storage_options) as fh:
        return pd.read_parquet(fh)


def _check_keys(frame: pd.DataFrame, keys: Sequence[str], url: str) -> None:
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise DataError(f"upstream output {url} lacks the entity key column(s) {missing}")


def _joinable(other: pd.DataFrame, have, keys: Sequence[str]) -> pd.DataFrame:
    """``other``'s keys and the columns not in ``have``; of its rows with one key, the last."""
    other = other[[*keys, *(c for c in other.columns if c not in have)]]
    if other.duplicated(list(keys)).any():
        other = other.drop_duplicates(list(keys), keep="last")
    return other


def join_into(pdf: pd.DataFrame, other: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``pdf`` inner-joined on ``keys`` with ``other``'s columns that ``pdf`` lacks; of ``other``'s
    rows with one key, the last."""
    return pdf.merge(_joinable(other, pdf.columns, keys), on=list(keys), how="inner")


BROADCAST_CACHE_BYTES = 1 << 30
"""What a worker process keeps of other upstreams' outputs between chunks (the least recently used go
first; the newest is kept whatever its size).  An unbounded count of entries would keep every recent
run's outputs in a long-running worker, which Dask's memory monitor sees as leaked memory."""

_cache: collections.OrderedDict = collections.OrderedDict()  # key → (frame, bytes)
_cache_lock = threading.Lock()


def _broadcast_upstream(run: str, parts: tuple[tuple[str, str], ...], have: tuple[str, ...],
                        keys: tuple[str, ...]) -> pd.DataFrame:
    """One other upstream's whole output for the window, ready to join into frames with the columns
    ``have``: read, its columns chosen and its keys made unique once per worker process and upstream
    run (every chunk of a run has the same columns), not once per chunk; kept within
    :data:`BROADCAST_CACHE_BYTES`."""
    key = (run, parts, have, keys)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[0]
    frames = [read_part(url, json.loads(opts)) for url, opts in parts]
    other = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    _check_keys(other, keys, parts[0][0])
    other = _joinable(other, have, keys)
    with _cache_lock:
        _cache[key] = (other, int(other.memory_usage(index=True, deep=True).sum()))  # deep: strings' own bytes
        _cache.move_to_end(key)
        while len(_cache) > 1 and sum(size for _, size in _cache.values()) > BROADCAST_CACHE_BYTES:
            _cache.popitem(last=False)
    return other


def clear_broadcast_cache() -> None:
    """Forget every kept upstream output (a bench resets a worker with it)."""
    with _cache_lock:
        _cache.clear()


def read_joined(url: str, storage_options: dict, joins: Joins, keys: tuple[str, ...]) -> pd.DataFrame:
    """A broadcast chunk's input: the first upstream's part ``url``, joined with the whole output of
    every other upstream of the window."""
    pdf = read_part(url, storage_options)
    _check_keys(pdf, keys, url)
    for run, parts in joins:
        pdf = pdf.merge(_broadcast_upstream(run, parts, tuple(pdf.columns), tuple(keys)), on=list(keys), how="inner")
    return pdf


def bucket_of(frame: pd.DataFrame, keys: Sequence[str], n: int) -> np.ndarray:
    """Each row's bucket, 0 to ``n - 1``, from its entity keys alone: equal keys get equal buckets in
    every upstream and every process, whatever each upstream's column types (int32 or int64,
    nullable or not, object or Arrow strings, any datetime unit), as long as pandas would join
    them.  Numbers hash as float64 (integers past 2**53 may share a bucket, which only affects
    balance), datetimes as nanoseconds since the epoch in UTC (never as text, whose format pandas
    picks from the whole column), anything else as its text."""
    cols = {}
    for k in keys:
        s = frame[k]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            if isinstance(s.dtype, pd.DatetimeTZDtype):
                s = s.dt.tz_convert("UTC").dt.tz_localize(None)
            cols[k] = s.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view("int64")
        elif pd.api.types.is_bool_dtype(s.dtype) or not pd.api.types.is_numeric_dtype(s.dtype):
            cols[k] = s.astype(str).to_numpy(dtype=object)
        else:
            v = s.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
            cols[k] = np.where(v == 0, 0.0, v)  # -0.0 joins 0.0: one bucket for both
    h = pd.util.hash_pandas_object(pd.DataFrame(cols), index=False).to_numpy()
    return (h % np.uint64(n)).astype(np.int64)


def read_tagged(url: str, opts: str, part: int, keys: tuple[str, ...], n: int,
                keep: tuple[str, ...], dtypes: dict) -> pd.DataFrame:
    """Part ``part`` of an upstream's output, for the shuffle: the columns ``keep`` as
    ``dtypes`` (the upstream's columns as all its parts together have them), each row tagged with
    its place (``SEQ``) and its bucket (the shuffle's partition column).  (Not named ``columns``:
    Dask's ``from_map`` passes its own column projection by that name.)"""
    from skyfeast.featurestore.partitioning import PART_COLUMN

    pdf = read_part(url, json.loads(opts))
    _check_keys(pdf, keys, url)
    lacking = [c for c in keep if c not in pdf.columns]
    if lacking:
        raise DataError(f"upstream output {url} lacks column(s) {lacking} that other parts of its upstream have")
    pdf = pdf[list(keep)]
    casts = {c: t for c, t in dtypes.items() if pdf[c].dtype != t}
    if casts:  # e.g. a column all null in this part (object) and float elsewhere
        try:
            pdf = pdf.astype(casts)
        except (TypeError, ValueError) as exc:
            raise DataError(f"upstream output {url}: column(s) {sorted(casts)} do not fit the types its upstream's "
                            f"other parts have ({exc})") from None
    return pdf.assign(**{SEQ: (np.int64(part) << _PART_BITS) + np.arange(len(pdf), dtype=np.int64),
                         PART_COLUMN: bucket_of(pdf, keys, n)})


def join_bucket(first: pd.DataFrame, others: list[pd.DataFrame], keys: tuple[str, ...]) -> pd.DataFrame:
    """A shuffled chunk's input: bucket ``i`` of the first upstream joined with bucket ``i`` of each
    other, rows back in their parts' order (the shuffle does not keep it)."""
    pdf = first.sort_values(SEQ, kind="stable").drop(columns=[SEQ])
    for other in others:
        pdf = join_into(pdf, other.sort_values(SEQ, kind="stable").drop(columns=[SEQ]), keys)
    return pdf.reset_index(drop=True)


# --------------------------------------------------------------------------- client side
def _empty_like(parts: list[tuple[str, dict]]) -> pd.DataFrame:
    """An empty frame with the columns of every parquet file of ``parts`` and the types they all fit
    (their footers only: Arrow's schema unification, so a column all null in one part takes the
    type the others give it)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for url, opts in parts:
        with fsspec.open(url, "rb", **(opts or {})) as fh:
            schemas.append(pq.read_schema(fh))
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"the parts of upstream output {parts[0][0]} have columns of types that do not fit "
                        f"together: {exc}") from None
    return schema.empty_table().to_pandas()


def shuffle_joined(client, inputs: Sequence[tuple[str, dict]], joins: Sequence[tuple[str, Sequence[tuple[str, dict]]]],
                   keys: tuple[str, ...], n: int, *, deadline: float | None = None,
                   cancelled: Callable[[], bool] = lambda: False) -> list[Any]:
    """The shuffle join, lazily: one ``Delayed`` per chunk, item ``i`` the joined rows of bucket ``i``
    (:func:`join_bucket`).  ``inputs`` are the first upstream's parts, ``joins`` the others' (as
    :func:`hashable` takes them).  Every part is read on the workers; before that, one task per
    upstream reads its parts' footers for the columns, waited for until ``deadline``
    (``time.monotonic()``) or ``cancelled()`` (:func:`skyfeast.featurestore.chunks.result`)."""
    import dask
    import dask.dataframe as dd

    from skyfeast.featurestore.chunks import result
    from skyfeast.featurestore.partitioning import PART_COLUMN, shuffle_tagged

    upstreams = [list(inputs), *(list(parts) for _, parts in joins)]
    footers = [client.submit(_empty_like, parts, pure=False) for parts in upstreams]
    metas = [result(f, deadline, cancelled) for f in footers]
    have: list[str] = []
    shuffled = []
    with dask.config.set({"dataframe.convert-string": False}), client.as_current():
        for k, (parts, meta) in enumerate(zip(upstreams, metas)):
            _check_keys(meta, keys, parts[0][0])
            # the first upstream: every column, in its order; another: the keys and the columns the frame
            # so far lacks (as the broadcast join takes them)
            taken = {*keys, *have}
            keep = tuple(meta.columns) if not k else (*keys, *(c for c in meta.columns if c not in taken))
            meta = meta[list(keep)]
            have.extend(c for c in keep if c not in have)
            dtypes = dict(meta.dtypes.items())
            meta = meta.assign(**{SEQ: np.zeros(0, dtype=np.int64), PART_COLUMN: np.zeros(0, dtype=np.int64)})
            tagged = dd.from_map(read_tagged, [u for u, _ in parts],
                                 [json.dumps(o or {}, sort_keys=True) for _, o in parts], list(range(len(parts))),
                                 args=(tuple(keys), n, keep, dtypes), meta=meta, label=f"read-upstream-{k}",
                                 enforce_metadata=False)
            # lowered here, with the client current: Dask picks its shuffle method when it lowers
            shuffled.append(shuffle_tagged(tagged, n).to_delayed())
    first, others = shuffled[0], shuffled[1:]
    return [dask.delayed(join_bucket, pure=False)(first[i], [o[i] for o in others], tuple(keys)) for i in range(n)]


__all__ = ["BROADCAST_CACHE_BYTES", "BROADCAST_JOIN_VALUES", "Joins", "bucket_of", "clear_broadcast_cache", "hashable",
           "join_bucket", "join_into", "join_way", "read_joined", "read_part", "read_tagged", "shuffle_joined"]
