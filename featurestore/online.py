"""Worker-side online writes.

``write_latest`` runs inside a Dask task: it hands one partition's rows to the
native writer for the repo's online store (:mod:`skyfeast.featurestore.writers`: SQLite,
Redis, PostgreSQL, vectorised and newest-wins), or to Feast's own
``online_write_batch`` for every other store. Either way the bytes are what
Feast itself writes, so vanilla ``get_online_features`` reads them.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa

from skyfeast.featurestore.repo import WriteTarget

_local = threading.local()  # writers are not thread-safe: one per worker thread


class OutputSchemaError(ValueError):
    """A job's output frame does not match its feature view; message names the columns."""


def check_columns(frame: pd.DataFrame, target: WriteTarget) -> None:
    """The output contract of a job's frame for ``target``: every column of the view, no null
    entity key or event time, no strings in a numeric feature, and no infinite value in an integer
    or boolean feature (NaN is a missing value; ±inf has no integer form).  Raises
    :class:`OutputSchemaError` naming the column."""
    need = [*target.join_keys, *target.features, target.timestamp_field]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise OutputSchemaError(
            f"output for feature view {target.name!r} lacks column(s) {missing}; "
            f"it has {list(frame.columns)}"
        )
    for col in (*target.join_keys, target.timestamp_field):
        n = int(frame[col].isna().sum())
        if n:
            raise OutputSchemaError(f"output for feature view {target.name!r} has {n:,} null {col} values")
    numeric, integral = _numeric_features(target), _integral_features(target)
    for col in target.features:
        values = frame[col]
        if col in numeric and not pd.api.types.is_numeric_dtype(values.dtype) and pd.api.types.is_string_dtype(values):
            raise OutputSchemaError(f"output for feature view {target.name!r}: {col!r} is a numeric feature, "
                                    f"but holds strings ({values.dtype})")
        if pd.api.types.is_float_dtype(values.dtype) and col in integral:
            n = int(np.isinf(values.to_numpy(dtype="float64", na_value=np.nan)).sum())
            if n:
                raise OutputSchemaError(f"output for feature view {target.name!r}: {n:,} infinite values in "
                                        f"{col!r}, an integer or boolean feature")


def _numeric_features(target: WriteTarget) -> frozenset[str]:
    from feast.value_type import ValueType

    numeric = {ValueType.INT32, ValueType.INT64, ValueType.FLOAT, ValueType.DOUBLE, ValueType.BOOL}
    return frozenset(f.name for f in target.feature_view.features if f.dtype.to_value_type() in numeric)


def _integral_features(target: WriteTarget) -> frozenset[str]:
    from feast.value_type import ValueType

    integral = {ValueType.INT32, ValueType.INT64, ValueType.BOOL}
    return frozenset(f.name for f in target.feature_view.features if f.dtype.to_value_type() in integral)


def _writer(target: WriteTarget):
    from skyfeast.featurestore.writers import writer_for

    cache = getattr(_local, "writers", None)
    if cache is None:
        cache = _local.writers = {}
    cfg = target.repo_config
    # a model group writes only the fields of its models that scored: the writer is per field set
    key = (str(cfg.repo_path), cfg.project, target.name, type(cfg.online_store).__name__, target.features)
    writer = cache.get(key)
    if writer is None or writer.target.view_proto != target.view_proto:
        if writer is not None:
            writer.close()
        writer = cache[key] = writer_for(target)
    return writer


def close_writers() -> None:
    """Close this thread's cached writers (their connections); the next write opens new ones."""
    cache = getattr(_local, "writers", None) or {}
    while cache:
        _, writer = cache.popitem()
        try:
            writer.close()
        except Exception:  # a connection that is already gone has nothing left to release
            pass


def write_latest(frame: pd.DataFrame, target: WriteTarget, *, alone: bool = False) -> int:
    """Upsert the newest row per entity of ``frame``; an older event never replaces a newer one.

    ``alone``: no other writer of this store runs meanwhile (see ``OnlineWriter.alone``).

    Returns the number of entity rows sent. Raises :class:`OutputSchemaError`
    for missing columns and ``skyfeast.featurestore.writers.EncodingError`` for values
    Feast could not store.
    """
    if frame.empty:
        return 0
    check_columns(frame, target)
    cols = [*target.join_keys, *target.features, target.timestamp_field]
    created = target.feature_view.batch_source.created_timestamp_column
    if created and created in frame.columns and created not in cols:
        cols.append(created)
    table = pa.Table.from_pandas(frame, columns=cols, preserve_index=False)  # frame[cols] would copy them all
    writer = _writer(target)
    writer.alone = alone
    try:
        return writer.write(table)
    finally:
        writer.alone = False
