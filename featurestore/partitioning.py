"""Range partitioning by serialised entity key, for online stores kept in key order.

SQLite and PostgreSQL keep Feast's rows in a B-tree ordered by the serialised
entity key.  A hash shuffle hands every partition entities from the whole key
range, so each partition's transactions touch pages all over the tree: SQLite
journals and rewrites most of the table once per chunk, and the write rate falls
as the table grows (measured: 10 hash-partitioned chunks of 20k entities × 20
features took 8.3 s inside the write lock, one sorted pass 4.0 s).  Partitions
that each hold one contiguous slice of the key order touch only their own slice.

:class:`KeyRanges` describes such a split:

* ``common`` is the byte prefix every sampled key shares (the header of Feast's
  serialisation plus, for example, the constant part of string ids);
* a key's *order key* is the 32 bytes that follow that prefix, zero-padded
  (keys that sort before or after the prefix map to all zeros or all ``0xff``),
  compared as NumPy fixed-width bytes, so order keys never decrease along the
  stores' ``memcmp`` order; 32 bytes reach past a string key's length field and
  a constant infix such as ``customer-``;
* ``bounds`` are order-key quantiles of a sample of the input: partition ``i``
  holds the keys with ``bounds[i-1] <= order key < bounds[i]``.

All rows of one entity share an order key, so an entity never spans two
partitions.  The split is computed once per run from a sample and kept in the
run's :class:`skyfeast.featurestore.chunks.ChunkBook`, so a resumed run (on any provider)
assigns every entity to the same partition as the first attempt did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from skyfeast.featurestore.repo import WriteTarget
from skyfeast.featurestore.writers import _columns as col
from skyfeast.featurestore.writers._encode import entity_keys
from skyfeast.featurestore.writers.base import join_key_types

WIDTH = 32  # bytes of each key compared after the common prefix
PART_COLUMN = "_partitions"  # the name Dask's shuffle takes as partition numbers, unhashed
SAMPLE_PER_PARTITION = 2_000  # input rows sampled per input partition...
SAMPLE_TOTAL = 200_000  # ...and at most about this many in all (down to 100 per partition)
BLOCK = 262_144  # rows whose keys are serialised at once when tagging partitions


@dataclass(frozen=True)
class KeyRanges:
    """A split of the serialised-key order into ``len(bounds) + 1`` contiguous partitions."""

    common: bytes
    bounds: tuple[bytes, ...]  # order keys, WIDTH bytes each

    @property
    def partitions(self) -> int:
        return len(self.bounds) + 1

    def to_json(self) -> dict:
        return {"common": self.common.hex(), "bounds": [b.hex() for b in self.bounds]}

    @classmethod
    def from_json(cls, data: dict) -> KeyRanges:
        return cls(bytes.fromhex(data["common"]), tuple(bytes.fromhex(b) for b in data["bounds"]))


def serialised_keys(frame: pd.DataFrame, target: WriteTarget) -> pa.Array:
    """Feast's serialised entity key (v3) of every row of ``frame``."""
    table = pa.Table.from_pandas(frame[list(target.join_keys)], preserve_index=False)
    return entity_keys(table, join_key_types(target))


def order_keys(keys: pa.Array, common: bytes) -> np.ndarray:
    """``S32`` per key, never decreasing along the keys' byte order (see the module doc)."""
    n, c = len(keys), len(common)
    if n == 0:
        return np.zeros(0, dtype=f"S{WIDTH}")
    keys = col.as_binary(keys)
    lens = col.lengths(keys)
    if lens.min() == lens.max():  # fixed-width keys (integer ids): straight from the buffer
        width = min(int(lens[0]), c + WIDTH)
        mat = np.zeros((n, c + WIDTH), dtype=np.uint8)
        mat[:, :width] = np.frombuffer(col.span(keys, 0, n), dtype=np.uint8).reshape(n, -1)[:, :width]
    else:
        head = pc.binary_slice(keys, 0, c + WIDTH)
        mat, _ = col._padded(head, col.lengths(head), c + WIDTH)
    if c:
        ref = np.frombuffer(common, dtype=np.uint8)
        diff = mat[:, :c] != ref
        differs = diff.any(axis=1)
        if differs.any():
            first = diff.argmax(axis=1)
            below = mat[np.arange(n), first] < ref[first]
            mat[differs & below, c:] = 0
            mat[differs & ~below, c:] = 0xFF
    return np.ascontiguousarray(mat[:, c:]).view(f"S{WIDTH}").ravel()


def _shared_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def key_ranges(keys: pa.Array, partitions: int) -> KeyRanges | None:
    """A split into at most ``partitions`` ranges holding about as many of ``keys`` each.

    ``keys`` are serialised entity keys of a sample of the input rows (rows, not
    entities: an entity with more rows weighs more, as it does in the shuffle).
    None when there is nothing to split.  Fewer partitions come out when the
    sample has too few distinct order keys.
    """
    if len(keys) == 0 or partitions < 1:
        return None
    ordered = sorted(keys.to_pylist())
    common = _shared_prefix(ordered[0], ordered[-1])  # shared by all: the sort's extremes share it
    values = np.sort(order_keys(keys, common))
    picks = values[(np.arange(1, partitions) * len(values)) // partitions]
    bounds = np.unique(picks[picks > values[0]])  # a bound at the minimum would leave partition 0 empty
    return KeyRanges(common, tuple(bytes(b).ljust(WIDTH, b"\0") for b in bounds))


def partition_of(keys: pa.Array, ranges: KeyRanges) -> np.ndarray:
    """The partition number (0-based) of every serialised key."""
    bounds = np.array(ranges.bounds, dtype=f"S{WIDTH}")
    return np.searchsorted(bounds, order_keys(keys, ranges.common), side="right").astype(np.int64)


# ---------------------------------------------------------------- Dask side
def _sample(pdf: pd.DataFrame, columns: Sequence[str], size: int) -> pd.DataFrame:
    step = max(1, len(pdf) // size)
    return pdf[list(columns)].iloc[::step]


def sample_rows(ddf, target: WriteTarget, size: int | None = None):
    """Lazily, about ``size`` evenly spaced rows' join keys from every partition of ``ddf``
    (default: :data:`SAMPLE_PER_PARTITION`, less when there are many partitions)."""
    cols = list(target.join_keys)
    if size is None:
        size = max(100, min(SAMPLE_PER_PARTITION, SAMPLE_TOTAL // max(1, ddf.npartitions)))
    return ddf.map_partitions(_sample, cols, size, meta=ddf._meta[cols])


def _with_part(pdf: pd.DataFrame, target: WriteTarget, ranges: KeyRanges) -> pd.DataFrame:
    """``pdf`` with its rows' partition numbers; keys are serialised a block at a time, so an
    input partition of millions of rows needs a few tens of MB beside it, not GBs."""
    part = np.zeros(len(pdf), dtype=np.int64)
    keys = pdf[list(target.join_keys)]
    rows = np.flatnonzero(keys.notna().all(axis=1).to_numpy())  # null keys: partition 0 (the writer refuses them)
    for start in range(0, len(rows), BLOCK):
        block = rows[start : start + BLOCK]
        part[block] = partition_of(serialised_keys(keys.iloc[block], target), ranges)
    return pdf.assign(**{PART_COLUMN: part})


def range_shuffle(ddf, target: WriteTarget, ranges: KeyRanges):
    """``ddf`` rearranged so that partition ``i`` holds exactly the rows of key range ``i``.

    The rows are tagged with their partition number in the column Dask's own shuffle
    reads partition numbers from (``_partitions``: what ``DataFrame.shuffle`` assigns by
    hashing), and handed to the same shuffle (p2p on a distributed cluster): no
    extra copy of the frame, unlike ``set_index`` with divisions, which assigns its
    own column and then sorts every output partition.
    """
    meta = ddf._meta.assign(**{PART_COLUMN: np.zeros(0, dtype=np.int64)})
    return shuffle_tagged(ddf.map_partitions(_with_part, target, ranges, meta=meta), ranges.partitions)


def shuffle_tagged(tagged, n: int):
    """``tagged`` (a Dask frame whose ``PART_COLUMN`` holds each row's partition number, 0 to
    ``n - 1``) rearranged into ``n`` partitions, partition ``i`` holding exactly the rows tagged
    ``i``, without the column."""
    internal = _dask_shuffle()
    if internal is None:  # a Dask without this internal: the public range shuffle (a copy and a sort more)
        # divisions 0, 1, ..., n-1, n-1: Dask's searchsorted puts part i in output partition i
        # (its own "_partitions" column is assigned on the way, hence the rename)
        return (tagged.rename(columns={PART_COLUMN: "_skyfeast_part"})
                .set_index("_skyfeast_part", divisions=[*range(n), n - 1]))
    new_collection, shuffle = internal
    return new_collection(shuffle(tagged.expr, PART_COLUMN, n, True)).drop(columns=[PART_COLUMN])


def _dask_shuffle():
    """``(new_collection, Shuffle)`` of Dask's expression API, or None where they moved."""
    try:
        from dask.dataframe.dask_expr import new_collection
        from dask.dataframe.dask_expr._shuffle import Shuffle
    except ImportError:
        return None
    return new_collection, Shuffle


def keeps_key_order(target: WriteTarget) -> bool:
    """True when the native writer for ``target``'s store writes into a key-ordered B-tree."""
    return _writer_says(target, "key_ordered")


def ordered_writes(target: WriteTarget) -> bool:
    """True when ``target``'s native writer wants a view's partitions written one at a time, in
    ascending key order (``OnlineWriter.ordered_writes``)."""
    return _writer_says(target, "ordered_writes")


def _writer_says(target: WriteTarget, flag: str) -> bool:
    from skyfeast.featurestore.writers import writer_class

    return getattr(writer_class(target), flag, False)
