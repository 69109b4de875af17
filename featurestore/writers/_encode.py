"""Feast's on-the-wire encodings, computed per column instead of per value.

Each function reproduces, byte for byte, what Feast 0.67 derives from an Arrow
column in ``feast.utils._convert_arrow_to_proto`` (``column.to_numpy()`` →
``type_map.python_values_to_proto_values`` → ``ValueProto``) and then stores:

* :func:`entity_keys` — ``key_encoding_utils.serialize_entity_key`` (v3);
* :class:`FeatureColumn` — ``ValueProto.SerializeToString()`` and, for the SQL
  stores, ``helpers.extract_text_and_num`` (``value_text`` / ``value_num``);
* :func:`utc_micros` — the event/created timestamps Feast hands to the stores
  (``pd.to_datetime`` → ``to_pydatetime``: microseconds, floored);
* :func:`timestamp_proto` — ``google.protobuf.Timestamp.FromDatetime`` bytes.

Arrow types with a vectorised path: float32 (Float32), float64 (Float64),
int32 (Int32), any signed int (Int64), bool, string, binary and timestamp
(UnixTimestamp).  Any other pairing of Arrow type and Feast type goes through
Feast's own conversion, so it is exact by construction (and fails where Feast
fails).

One deliberate difference: Feast converts an int64 column that contains nulls
to float64 first, so values beyond ±2**53 lose precision there; this module
keeps them exact.  Everything else, quirks included, matches: NaN in a float
column is stored as an empty (null) value, a null UnixTimestamp is stored as
``INT64_MIN`` seconds, and a Bytes column whose non-null values are all empty
is stored as nulls.
"""

from __future__ import annotations

import struct
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.value_type import ValueType

from skyfeast.featurestore.writers import _columns as col

# Protobuf tags (field number << 3 | wire type) of feast.types.Value.
_TAG_BYTES, _TAG_STRING, _TAG_INT32, _TAG_INT64 = 0x0A, 0x12, 0x18, 0x20
_TAG_DOUBLE, _TAG_FLOAT, _TAG_BOOL, _TAG_UNIX_TS = 0x29, 0x35, 0x38, 0x40
_INT64_MIN = np.iinfo(np.int64).min
_SIGNED_INTS = (pa.types.is_int8, pa.types.is_int16, pa.types.is_int32, pa.types.is_int64)


class EncodingError(ValueError):
    """Rows cannot be encoded the way Feast stores them; the message names the column."""


def _array(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _feast_protos(arr: pa.Array, value_type: ValueType) -> list:
    from feast.type_map import python_values_to_proto_values

    return python_values_to_proto_values(arr.to_numpy(zero_copy_only=False), value_type)


def _present(arr: pa.Array) -> np.ndarray:
    if not arr.null_count:
        return np.ones(len(arr), dtype=bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _ints(arr: pa.Array) -> np.ndarray:
    return arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------- timestamps


def utc_micros(column, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since the epoch (UTC, floored) and a presence mask, as Feast derives them."""
    arr = _array(column)
    if pa.types.is_timestamp(arr.type):
        raw = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        unit = arr.type.unit
        present = _present(arr)
    else:  # strings, dates, ...: the very call Feast makes
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(arr.to_numpy(zero_copy_only=False)))
        except (ValueError, TypeError) as exc:
            raise EncodingError(f"column {name!r} ({arr.type}) is not a timestamp: {exc}") from None
        present = ~np.asarray(idx.isna())
        raw = np.where(present, idx.asi8, 0)
        unit = idx.unit
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[unit]
    micros = raw // 1_000 if scale is None else raw * scale
    return micros, present


def timestamp_proto(micros: np.ndarray) -> pa.Array:
    """Serialized ``google.protobuf.Timestamp`` (seconds=1, nanos=2; zero fields omitted)."""
    seconds = micros // 1_000_000
    nanos = (micros % 1_000_000) * 1_000
    return col.join(
        col.tagged_varint(0x08, seconds, seconds != 0),
        col.tagged_varint(0x10, nanos, nanos != 0),
    )


def _epoch_seconds(micros: np.ndarray) -> np.ndarray:
    """``int(naive.timestamp())`` for naive-UTC datetimes, when local time is UTC: truncation."""
    q, r = np.divmod(micros, 1_000_000)
    return q + ((q < 0) & (r > 0))


def float_text(values: np.ndarray) -> pa.Array:
    """``repr(float(v))`` of each value as a ``large_string`` array: Feast's ``value_text`` of a float.

    Arrow's float-to-string cast prints the same shortest round-trip digits as
    Python, about ten times faster, but formats some magnitudes differently: it
    omits the ``.0`` of integral values, writes ``0.00001`` where Python writes
    ``1e-05``, and switches to exponents at 1e10.  Values in ``[1e-4, 1e9)`` are
    taken from Arrow (integral ones get their ``.0`` back); every other value
    (zero excepted, which is integral) goes through ``repr``.  Compared against
    ``repr`` on millions of values in ``tests/unit/test_encode_float_text.py``.
    """
    values = np.asarray(values, dtype=np.float64)
    out = pc.cast(pa.array(values), pa.large_string())
    size = np.abs(values)
    integral = np.isfinite(values) & (values == np.floor(values)) & (size < 1e9)
    other = ~integral & ~((size >= 1e-4) & (size < 1e9))
    if integral.any():
        dotted = pc.binary_join_element_wise(out, _DOT_ZERO, _NO_TEXT)
        out = pc.if_else(pa.array(integral), dotted, out)
    if other.any():
        texts = [repr(v) for v in values[other].tolist()]
        out = pc.replace_with_mask(out, pa.array(other), pa.array(texts, pa.large_string()))
    return out


_DOT_ZERO = pa.scalar(".0", pa.large_string())
_NO_TEXT = pa.scalar("", pa.large_string())


def sqlite_seconds(micros: np.ndarray, present: np.ndarray) -> list:
    """What sqlite3 stores for Feast's naive-UTC datetimes (Feast registers ``int(dt.timestamp())``).

    ``datetime.timestamp()`` reads a naive datetime in the *local* zone, so off UTC
    this repeats Python's own arithmetic row by row to stay identical.
    """
    if _local_is_utc():
        out = _epoch_seconds(micros).tolist()
    else:
        from datetime import datetime, timedelta

        epoch = datetime(1970, 1, 1)
        out = [int((epoch + timedelta(microseconds=int(u))).timestamp()) for u in micros.tolist()]
    if not present.all():
        out = [v if p else None for v, p in zip(out, present.tolist())]
    return out


def _local_is_utc() -> bool:
    import time

    probes = (0, 15_638_400, 946_684_800, 962_409_600)  # Jan/Jul of 1970 and 2000
    return time.timezone == 0 and all(time.localtime(t).tm_gmtoff == 0 for t in probes)


# ---------------------------------------------------------------- entity keys


def entity_keys(table: pa.Table, join_keys: dict[str, ValueType]) -> pa.Array:
    """``serialize_entity_key(EntityKey(join_keys, values), 3)`` for every row.

    Raises :class:`EncodingError` on a null join key (Feast cannot serialise one).
    """
    names = sorted(join_keys)
    head = struct.pack("<I", len(names)) + b"".join(
        struct.pack("<II", ValueType.STRING.value, len(k.encode())) + k.encode() for k in names
    )
    parts: list = [col.const(head)]
    for name in names:
        arr = _array(table.column(name))
        if arr.null_count:
            raise EncodingError(f"join key {name!r} has {arr.null_count} null value(s)")
        parts.append(_entity_value(arr, join_keys[name], name))
    return col.join(*parts)


def _entity_value(arr: pa.Array, vtype: ValueType, name: str) -> pa.Array:
    n = len(arr)
    if vtype == ValueType.INT64 and any(t(arr.type) for t in _SIGNED_INTS):
        return _typed_fixed(vtype, col.le_bytes(_ints(arr), "<i8"))
    if vtype == ValueType.INT32 and any(t(arr.type) for t in _SIGNED_INTS[:3]):
        return _typed_fixed(vtype, col.le_bytes(_ints(arr), "<i4"))
    if vtype == ValueType.UNIX_TIMESTAMP and pa.types.is_timestamp(arr.type):
        seconds = utc_micros(arr, name)[0] // 1_000_000
        return _typed_fixed(vtype, col.le_bytes(seconds, "<i8"))
    if (vtype == ValueType.STRING and _is_string(arr.type)) or (vtype == ValueType.BYTES and _is_binary(arr.type)):
        data = col.as_binary(arr)
        head = np.empty((n, 2), dtype="<u4")
        head[:, 0] = vtype.value
        head[:, 1] = col.lengths(data)
        return col.join(col.fixed(head.view(np.uint8).reshape(n, 8)), data)
    from feast.infra.key_encoding_utils import _serialize_val

    out = []
    for proto in _feast_protos(arr, vtype):
        try:
            raw, code = _serialize_val(proto.WhichOneof("val"), proto)
        except ValueError as exc:
            raise EncodingError(f"join key {name!r}: {exc}") from None
        out.append(struct.pack("<II", code, len(raw)) + raw)
    return pa.array(out, pa.large_binary())


def _typed_fixed(vtype: ValueType, payload: np.ndarray) -> pa.Array:
    n, width = payload.shape
    head = np.empty((n, 8 + width), dtype=np.uint8)
    head[:, :8] = np.frombuffer(struct.pack("<II", vtype.value, width), dtype=np.uint8)
    head[:, 8:] = payload
    return col.fixed(head)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


# ---------------------------------------------------------------- feature values


class FeatureColumn:
    """One feature's Arrow column and the encodings the stores need, computed on demand."""

    def __init__(self, name: str, column, value_type: ValueType):
        self.name = name
        self.arr = _array(column)
        self.value_type = value_type
        self._kind = _fast_kind(self.arr.type, value_type)

    def __len__(self) -> int:
        return len(self.arr)

    @cached_property
    def _protos(self) -> list:
        return _feast_protos(self.arr, self.value_type)

    @cached_property
    def _numbers(self) -> np.ndarray:
        """Non-null values as NumPy (float32/float64/int64/bool), nulls zero-filled."""
        arr = self.arr
        if self._kind in ("float32", "float64"):
            return arr.fill_null(0).to_numpy(zero_copy_only=False)
        if self._kind == "int":
            return arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        if self._kind == "bool":
            return arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        raise AssertionError(self._kind)

    @cached_property
    def present(self) -> np.ndarray:
        """Rows whose value is not null for Feast (UnixTimestamp: not null in Arrow)."""
        p = _present(self.arr)
        if self._kind in ("float32", "float64"):
            p &= ~np.isnan(self._numbers)  # Feast: pd.isnull(nan) → empty Value
        elif self._kind == "bytes" and not (col.lengths(col.as_binary(self.arr))[p] > 0).any():
            p[:] = False  # Feast: no non-empty sample → every value empty
        elif self._kind is None:
            p = np.array([v.WhichOneof("val") is not None for v in self._protos], dtype=bool)
        return p

    @cached_property
    def proto_bytes(self) -> pa.Array:
        """``ValueProto.SerializeToString()`` per row (``b""`` for a null)."""
        kind, p = self._kind, self.present
        if kind is None:
            return pa.array([v.SerializeToString() for v in self._protos], pa.large_binary())
        if kind == "float32":
            return col.tagged_fixed(_TAG_FLOAT, col.le_bytes(self._numbers, "<f4"), p)
        if kind == "float64":
            return col.tagged_fixed(_TAG_DOUBLE, col.le_bytes(self._numbers, "<f8"), p)
        if kind == "int":
            tag = _TAG_INT32 if self.value_type == ValueType.INT32 else _TAG_INT64
            return col.tagged_varint(tag, self._numbers, p)
        if kind == "bool":
            return col.tagged_varint(_TAG_BOOL, self._numbers, p)
        if kind == "timestamp":
            micros, valid = utc_micros(self.arr, self.name)
            seconds = np.where(valid, micros // 1_000_000, _INT64_MIN)  # Feast: NaT → INT64_MIN
            return col.tagged_varint(_TAG_UNIX_TS, seconds)
        data = col.as_binary(self.arr)  # string / bytes: tag + varint length + payload; nulls are b""
        tag = _TAG_STRING if kind == "string" else _TAG_BYTES
        return col.join(col.tagged_varint(tag, col.lengths(data), p), data)

    @cached_property
    def sql_text(self) -> list:
        """``value_text`` per row: Feast's ``extract_text_and_num(...)[0]``."""
        kind, p = self._kind, self.present
        if kind is None:
            from feast.infra.online_stores.helpers import extract_text_and_num

            return [extract_text_and_num(v, False)[0] for v in self._protos]
        if kind == "string":
            out = self.arr.to_pylist()
        elif kind == "int":
            out = pc.cast(pa.array(self._numbers), pa.string()).to_pylist()
        elif kind == "bool":
            out = ["True" if b else "False" for b in self._numbers.tolist()]
        elif kind in ("float32", "float64"):
            return self.sql_text_array().to_pylist()  # str(float(x)), vectorised
        else:
            return [None] * len(self)
        if not p.all():
            out = [v if k else None for v, k in zip(out, p.tolist())]
        return out

    def sql_text_array(self) -> pa.Array:
        """:attr:`sql_text` as a ``large_string`` array (null where Feast stores NULL)."""
        if self._kind == "string":
            return self.arr.cast(pa.large_string())
        if self._kind == "int":
            return pc.cast(pa.array(self._numbers, mask=~self.present), pa.large_string())
        if self._kind in ("float32", "float64"):
            text = float_text(self._numbers)
            if not self.present.all():
                text = pc.if_else(pa.array(self.present), text, pa.scalar(None, pa.large_string()))
            return text
        return pa.array(self.sql_text, pa.large_string())

    def sql_num_array(self) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`sql_num` as float64 values and a presence mask."""
        if self._kind in ("int", "bool", "float32", "float64"):
            return self._numbers.astype(np.float64), self.present
        if self._kind is None:
            nums = self.sql_num
            present = np.array([v is not None for v in nums], dtype=bool)
            return np.array([0.0 if v is None else v for v in nums], dtype=np.float64), present
        return np.zeros(len(self)), np.zeros(len(self), dtype=bool)

    @cached_property
    def sql_num(self) -> list:
        """``value_num`` per row: Feast's ``extract_text_and_num(..., True)[1]``."""
        kind, p = self._kind, self.present
        if kind is None:
            from feast.infra.online_stores.helpers import extract_text_and_num

            return [extract_text_and_num(v, True)[1] for v in self._protos]
        if kind not in ("int", "bool", "float32", "float64"):
            return [None] * len(self)
        out = self._numbers.astype(np.float64).tolist()
        if not p.all():
            out = [v if k else None for v, k in zip(out, p.tolist())]
        return out


def _fast_kind(t: pa.DataType, vtype: ValueType) -> str | None:
    """The vectorised encoder for this (Arrow type, Feast type), or None for Feast's own path."""
    if vtype == ValueType.FLOAT and pa.types.is_float32(t):
        return "float32"
    if vtype == ValueType.DOUBLE and pa.types.is_float64(t):
        return "float64"
    if vtype == ValueType.INT64 and any(f(t) for f in _SIGNED_INTS):
        return "int"
    if vtype == ValueType.INT32 and any(f(t) for f in _SIGNED_INTS[:3]):
        return "int"
    if vtype == ValueType.BOOL and pa.types.is_boolean(t):
        return "bool"
    if vtype == ValueType.STRING and _is_string(t):
        return "string"
    if vtype == ValueType.BYTES and _is_binary(t):
        return "bytes"
    if vtype == ValueType.UNIX_TIMESTAMP and pa.types.is_timestamp(t):
        return "timestamp"
    return None
