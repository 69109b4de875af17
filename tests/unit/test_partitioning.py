"""Key-range partitioning: order keys follow the serialised keys' byte order, ranges are balanced
and contiguous, and every entity lands in exactly one partition."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast import ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from skyfeast.featurestore.partitioning import KeyRanges, key_ranges, order_keys, partition_of
from skyfeast.featurestore.writers._encode import entity_keys

RNG = np.random.default_rng(7)


def _int_keys(n: int) -> tuple[pa.Array, list]:
    ids = np.unique(RNG.integers(-(2**62), 2**62, n))
    return entity_keys(pa.table({"user_id": ids}), {"user_id": ValueType.INT64}), ids.tolist()


def _str_keys(n: int) -> tuple[pa.Array, list]:
    # a long shared prefix and varying lengths: the first 8 bytes after the header say nothing
    ids = sorted({f"customer-{int(v):0{int(w)}d}" for v, w in zip(RNG.integers(0, 10**9, n), RNG.integers(6, 12, n))})
    return entity_keys(pa.table({"cid": ids}), {"cid": ValueType.STRING}), ids


def _composite_keys(n: int) -> pa.Array:
    table = pa.table({"shop": [f"s{int(v)}" for v in RNG.integers(0, 5, n)],
                      "user_id": RNG.integers(0, 1000, n)})
    return entity_keys(table, {"shop": ValueType.STRING, "user_id": ValueType.INT64})


def _bytes_sorted(keys: pa.Array) -> list[bytes]:
    return sorted(keys.to_pylist())


@pytest.mark.parametrize("make", [lambda n: _int_keys(n)[0], lambda n: _str_keys(n)[0], _composite_keys],
                         ids=["int64", "string", "composite"])
def test_order_keys_never_decrease_along_byte_order(make):
    keys = make(20_000)
    ordered = pa.array(_bytes_sorted(keys), pa.large_binary())
    sample = ordered[::97]  # a sample's common prefix can be longer than the whole set's
    for common in (b"", _common(sample), _common(ordered)):
        values = order_keys(ordered, common)
        assert (values[1:] >= values[:-1]).all(), common.hex()
    # past the shared prefix, they tell keys apart
    distinct = len(set(ordered.to_pylist()))
    assert len(np.unique(order_keys(ordered, _common(ordered)))) > 0.9 * distinct


def _common(keys: pa.Array) -> bytes:
    ks = _bytes_sorted(keys)
    n = 0
    while n < min(len(ks[0]), len(ks[-1])) and ks[0][n] == ks[-1][n]:
        n += 1
    return ks[0][:n]


def test_fixed_width_bytes_compare_like_memcmp():
    """NumPy's S dtype must order zero-padded rows exactly as memcmp does, inner zero bytes included."""
    rows = [bytes(RNG.integers(0, 3, 6, dtype=np.uint8)) for _ in range(3_000)]
    arr = np.array(rows, dtype="S6")
    assert [bytes(r).ljust(6, b"\0") for r in np.sort(arr)] == sorted(rows)


def test_entity_keys_are_feasts_serialisation():
    """The partitioner reads the same bytes the stores order by (checked against Feast itself)."""
    keys, ids = _int_keys(50)
    for got, i in zip(keys.to_pylist(), ids):
        ek = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=i)])
        assert got == serialize_entity_key(ek, entity_key_serialization_version=3)


@pytest.mark.parametrize("make", [_int_keys, _str_keys], ids=["int64", "string"])
def test_ranges_from_a_sample_are_balanced_and_contiguous(make):
    keys, _ = make(60_000)
    parts = 8
    ranges = key_ranges(keys[::29], parts)
    assert ranges.partitions == parts
    got = partition_of(keys, ranges)
    counts = np.bincount(got, minlength=parts)
    assert counts.sum() == len(keys)
    assert counts.min() > 0.6 * len(keys) / parts and counts.max() < 1.4 * len(keys) / parts, counts
    # contiguous: along the byte order, partition numbers never go down
    order = np.argsort(np.array(keys.to_pylist(), dtype=object), kind="stable")
    assert (np.diff(got[order]) >= 0).all()


def test_keys_outside_the_sampled_prefix_go_to_the_edge_partitions():
    keys, ids = _str_keys(5_000)
    width = len(ids[0])
    in_class = np.array([len(i) == width and i.startswith("customer-0") for i in ids])
    sample = pa.array([k for k, inside in zip(keys.to_pylist(), in_class) if inside], pa.large_binary())
    ranges = key_ranges(sample, 4)
    assert ranges.partitions == 4
    assert len(ranges.common) > len(_common(keys))  # the sample shares more than the full set
    got = partition_of(keys, ranges)
    # other lengths (the length field precedes the text) and other digits sort wholly before or
    # after the sampled prefix: they go to the first or the last partition, in byte order
    assert (~in_class).sum() > 0 and set(got[~in_class]) <= {0, 3}
    assert set(got[in_class]) == {0, 1, 2, 3}
    order = np.argsort(np.array(keys.to_pylist(), dtype=object), kind="stable")
    assert (np.diff(got[order]) >= 0).all()


def test_degenerate_inputs():
    keys, _ = _int_keys(10)
    assert key_ranges(keys[:0], 4) is None
    one = key_ranges(pa.array([keys[0].as_py()] * 50, pa.large_binary()), 4)
    assert one.partitions == 1 and (partition_of(keys, one) == 0).all()
    few = key_ranges(keys[:3], 8)  # three distinct keys cannot make eight ranges
    assert 1 < few.partitions <= 3
    assert len(set(partition_of(keys[:3], few))) == few.partitions


def test_ranges_survive_the_ledger_round_trip():
    keys, _ = _int_keys(5_000)
    ranges = key_ranges(keys, 6)
    again = KeyRanges.from_json(json.loads(json.dumps(ranges.to_json())))
    assert again == ranges
    assert (partition_of(keys, again) == partition_of(keys, ranges)).all()


def test_null_join_keys_go_to_partition_zero_and_others_are_unchanged():
    from skyfeast.featurestore.partitioning import PART_COLUMN, _with_part

    target = _int_target()
    frame = pd.DataFrame({"user_id": pd.array([5, None, 9, 11], dtype="Int64"), "x": [1, 2, 3, 4]})
    keys = entity_keys(pa.table({"user_id": [5, 9, 11]}), {"user_id": ValueType.INT64})
    ranges = key_ranges(keys, 3)
    got = _with_part(frame, target, ranges)
    assert got[PART_COLUMN].tolist() == [partition_of(keys, ranges)[0], 0, *partition_of(keys, ranges)[1:]]
    assert got["x"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("internal", [True, False], ids=["dask-shuffle", "public-set-index"])
def test_range_shuffle_puts_each_range_in_its_partition(internal, monkeypatch):
    """On Dask's synchronous scheduler: through Dask's own shuffle, and through the public
    set_index fallback used when that internal is missing."""
    import dask
    import dask.dataframe as dd

    import skyfeast.featurestore.partitioning as partitioning
    from skyfeast.featurestore.partitioning import range_shuffle, sample_rows, serialised_keys

    assert partitioning._dask_shuffle() is not None  # this Dask has it
    if not internal:
        monkeypatch.setattr(partitioning, "_dask_shuffle", lambda: None)
    target = _int_target()
    ids = RNG.permutation(30_000).astype(np.int64) * 13
    frame = pd.DataFrame({"user_id": ids, "x": np.arange(len(ids))})
    ddf = dd.from_pandas(frame, npartitions=4)
    with dask.config.set(scheduler="sync"):
        sample = sample_rows(ddf, target, size=500).compute()
        assert 1_900 <= len(sample) <= 2_100
        ranges = key_ranges(serialised_keys(sample, target), 5)
        parts = [p.compute() for p in range_shuffle(ddf, target, ranges).to_delayed()]
    assert len(parts) == ranges.partitions == 5
    want = partition_of(serialised_keys(frame, target), ranges)
    for i, part in enumerate(parts):
        assert list(part.columns) == ["user_id", "x"]  # the partition column is gone
        assert len(part) > 0 and (want[part["x"].to_numpy()] == i).all()
    assert sum(len(p) for p in parts) == len(frame)


def _int_target():
    class Target:
        join_keys = ("user_id",)

        class feature_view:  # noqa: N801 - the attribute WriteTarget has
            class _Col:
                name = "user_id"

                class dtype:  # noqa: N801
                    @staticmethod
                    def to_value_type():
                        return ValueType.INT64

            entity_columns = [_Col]

    return Target
