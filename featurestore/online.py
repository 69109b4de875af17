"""Worker-side online writes.

``write_latest`` runs inside a Dask task: it keeps the newest row per entity of
one partition and writes it with the online store that the Feast repo
configures, through Feast's own ``OnlineStore.online_write_batch``.  Vectorised
native writers for SQLite/Redis/PostgreSQL replace this path in a later
iteration (see the issue tracker); this one is correct for every store Feast
supports.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pyarrow as pa

from featurestore.repo import WriteTarget

_LOCK = threading.Lock()
_STORES: dict[tuple[str, str, str], Any] = {}


class OutputSchemaError(ValueError):
    """A job's output frame does not match its feature view; message names the columns."""


def _online_store(target: WriteTarget):
    cfg = target.repo_config
    key = (str(cfg.repo_path), cfg.project, type(cfg.online_store).__name__)
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            from feast.infra.online_stores.helpers import get_online_store_from_config

            store = _STORES[key] = get_online_store_from_config(cfg.online_store)
        return store


def check_columns(frame: pd.DataFrame, target: WriteTarget) -> None:
    need = [*target.join_keys, *target.features, target.timestamp_field]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise OutputSchemaError(
            f"output for feature view {target.name!r} lacks column(s) {missing}; "
            f"it has {list(frame.columns)}"
        )


def latest_per_entity(frame: pd.DataFrame, target: WriteTarget) -> pd.DataFrame:
    """The newest row (by the view's timestamp field) for each entity key."""
    check_columns(frame, target)
    ordered = frame.sort_values(target.timestamp_field, kind="stable")
    return ordered.drop_duplicates(subset=list(target.join_keys), keep="last")


def write_latest(frame: pd.DataFrame, target: WriteTarget, batch_size: int = 5_000) -> int:
    """Upsert the newest row per entity of ``frame`` into the online store. Returns rows written."""
    if frame.empty:
        return 0
    from feast.utils import _convert_arrow_to_proto

    latest = latest_per_entity(frame, target)
    fv = target.feature_view
    cols = [*target.join_keys, *target.features, target.timestamp_field]
    created = fv.batch_source.created_timestamp_column
    if created and created in latest.columns:
        cols.append(created)
    table = pa.Table.from_pandas(latest[cols], preserve_index=False)
    join_key_types = {ec.name: ec.dtype.to_value_type() for ec in fv.entity_columns}
    store = _online_store(target)
    written = 0
    for batch in table.to_batches(max_chunksize=batch_size):
        rows = _convert_arrow_to_proto(batch, fv, join_key_types)
        store.online_write_batch(target.repo_config, fv, rows, None)
        written += len(rows)
    return written
