"""Fallback writer: Feast's own ``online_write_batch`` for every store without a native writer.

Rows are validated and collapsed to the newest per entity exactly as the native
writers do, converted with ``feast.utils._convert_arrow_to_proto`` and written
``chunk_rows`` at a time.  Newest-wins against stored data is a read-then-write
(``online_read`` of the batch's entities, then dropping rows older than what is
stored): two round trips and not atomic, so a concurrent writer can slip in
between.  Stores whose own ``online_write_batch`` already refuses older rows
(Redis) simply check twice.
"""

from __future__ import annotations

import contextlib

from skyfeast.featurestore.online import OutputSchemaError
from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers.base import OnlineWriter, created_column, prepare


class FallbackWriter(OnlineWriter):
    def __init__(self, target: WriteTarget, *, chunk_rows: int = 5_000, guard_stale: bool = True):
        super().__init__(target)
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self.chunk_rows = chunk_rows
        self.guard_stale = guard_stale
        self._store = None

    def _online_store(self):
        if self._store is None:
            from feast.infra.online_stores.helpers import get_online_store_from_config

            self._store = get_online_store_from_config(self.target.repo_config.online_store)
        return self._store

    def write(self, table) -> int:
        if table.num_rows == 0:
            return 0
        from feast.utils import _convert_arrow_to_proto

        created = created_column(self.target)
        if created and created not in table.column_names:
            raise OutputSchemaError(
                f"output for feature view {self.target.name!r} lacks the created timestamp column {created!r}"
            )
        batch = prepare(self.target, table)
        fv, cfg = self.target.feature_view, self.target.repo_config
        key_types = {ec.name: ec.dtype.to_value_type() for ec in fv.entity_columns}
        store = self._online_store()
        # Feast's converter reads only the first record batch of a Table: hand it batches.
        for record_batch in batch.table.to_batches(max_chunksize=self.chunk_rows):
            rows = _convert_arrow_to_proto(record_batch, fv, key_types)
            if self.guard_stale:
                rows = self._drop_stale(store, rows)
            if rows:
                store.online_write_batch(cfg, fv, rows, None)
        return len(batch)

    def _drop_stale(self, store, rows: list) -> list:
        from feast.utils import make_tzaware

        stored = store.online_read(
            self.target.repo_config, self.target.feature_view, [r[0] for r in rows], list(self.target.features)
        )
        return [
            row
            for row, (old_ts, _) in zip(rows, stored)
            if old_ts is None or make_tzaware(row[2]) >= make_tzaware(old_ts)
        ]

    def close(self) -> None:
        store, self._store = self._store, None
        for attr in ("_conn", "_client"):
            handle = getattr(store, attr, None)
            # Best effort: Feast stores have no close(); their handles may already be gone.
            with contextlib.suppress(Exception):
                handle.close()
