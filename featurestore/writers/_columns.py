"""Columns of byte strings, built with NumPy and joined row-wise by Arrow.

Every encoder in this package produces an Arrow ``large_binary`` array with one
element per row and no nulls (an absent value is the empty string).  Building
blocks:

* :func:`fixed` / :func:`ragged` wrap NumPy bytes as such an array without
  copying per element;
* :func:`tagged_varint` / :func:`tagged_fixed` emit protobuf fields (tag +
  payload) for every row where ``present`` is true and nothing elsewhere;
* :func:`join` concatenates columns (and broadcast constants) row by row in
  Arrow's C++ kernel, which is what makes whole-row encodings (a RESP command, a
  PostgreSQL COPY tuple) cheap;
* :func:`span` returns the bytes of a run of consecutive rows as one buffer.

Nothing here knows about Feast; :mod:`._encode` does.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Part = pa.Array | pa.Scalar

_EMPTY = pa.scalar(b"", pa.large_binary())
# Thresholds 2**7, 2**14, ... 2**63: a value needs one varint byte per threshold it reaches, plus one.
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def const(data: bytes) -> pa.Scalar:
    """A constant that :func:`join` repeats on every row."""
    return pa.scalar(data, pa.large_binary())


def _from_buffers(n: int, offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [None, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int64)), pa.py_buffer(np.ascontiguousarray(data))],
    )


def ragged(data: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Row ``i`` is the next ``lengths[i]`` bytes of ``data`` (uint8)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _from_buffers(len(lengths), offsets, data)


def fixed(mat: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """Row ``i`` is ``mat[i]`` (an ``(n, w)`` uint8 matrix), or empty where ``present`` is false."""
    n, width = mat.shape
    if present is None or present.all():
        return _from_buffers(n, np.arange(n + 1, dtype=np.int64) * width, mat.reshape(-1))
    return ragged(mat[present].reshape(-1), np.where(present, width, 0))


def le_bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as an ``(n, itemsize)`` uint8 matrix in the given (endian-explicit) dtype."""
    arr = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    return arr.view(np.uint8).reshape(len(arr), arr.dtype.itemsize)


def varint_len(values: np.ndarray) -> np.ndarray:
    return np.searchsorted(_VARINT_STEPS, values.astype(np.uint64), side="right") + 1


def tagged_varint(tag: int | None, values: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """Protobuf varint fields: ``tag`` (one byte, or none) + base-128 varint of ``values``.

    ``values`` is read as uint64, so a negative int64/int32 becomes the 10-byte
    sign-extended form protobuf uses for ``int32``/``int64`` fields.
    """
    v = np.asarray(values)
    if v.dtype.kind in "ib":
        u = v.astype(np.int64, copy=False).view(np.uint64)
    else:
        u = v.astype(np.uint64, copy=False)
    n = len(u)
    nbytes = varint_len(u)
    lead = 0 if tag is None else 1
    mat = np.empty((n, lead + 10), dtype=np.uint8)
    if lead:
        mat[:, 0] = tag
    for k in range(10):
        byte = ((u >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= np.where(nbytes > k + 1, 0x80, 0).astype(np.uint8)
        mat[:, lead + k] = byte
    row_len = nbytes + lead
    if present is not None:
        row_len = np.where(present, row_len, 0)
    keep = np.arange(lead + 10) < row_len[:, None]
    return ragged(mat[keep], row_len)


def tagged_fixed(tag: int, payload: np.ndarray, present: np.ndarray | None = None) -> pa.Array:
    """Protobuf fixed32/fixed64 fields: ``tag`` + the ``(n, w)`` little-endian payload matrix."""
    n, width = payload.shape
    mat = np.empty((n, width + 1), dtype=np.uint8)
    mat[:, 0] = tag
    mat[:, 1:] = payload
    return fixed(mat, present)


def _padded(arr: pa.Array, lens: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements of a ``large_binary`` array left-aligned in a zero-padded ``(n, width)``
    matrix, and the mask of the bytes that are theirs."""
    valid = np.arange(width) < lens[:, None]
    padded = np.zeros((len(lens), width), dtype=np.uint8)
    padded[valid] = np.frombuffer(span(arr, 0, len(lens)), dtype=np.uint8)
    return padded, valid


def join(*parts: Part) -> pa.Array:
    """Row-wise concatenation; at least one part must be an array.

    Parts whose elements all have one length (and constants) are assembled in one
    ``(n, width)`` NumPy matrix, about three times faster than Arrow's
    element-wise join (~40 ns per element).  When some parts are ragged (strings,
    varints, nullable values), each run of consecutive fixed-width parts is first
    merged that way into one array, and Arrow's element-wise join then
    concatenates the few merged runs and the ragged parts: padding every ragged
    part to its longest element and compacting the whole row matrix with a mask
    cost about twice as much as the fixed-width case (measured on Redis restore
    payloads of mixed-type views; docs/benchmarks.md).  Arrow's join is used as
    is for arrays that are not plain ``large_binary`` without nulls.
    """
    n = next((len(p) for p in parts if not isinstance(p, pa.Scalar)), None)
    if not n:
        return pc.binary_join_element_wise(*parts, _EMPTY)
    shapes = []  # per part: (bytes or array, longest, lengths or None when all equal)
    for part in parts:
        if isinstance(part, pa.Scalar):
            data = part.as_py()
            shapes.append((data, len(data), None))
            continue
        if not (isinstance(part, pa.Array) and pa.types.is_large_binary(part.type)) or part.null_count:
            return pc.binary_join_element_wise(*parts, _EMPTY)
        lens = lengths(part)
        longest = int(lens.max())
        shapes.append((part, longest, None if lens.min() == longest else lens))
    if all(lens is None for _, _, lens in shapes):
        return _join_fixed(n, shapes)
    merged: list = []
    run: list = []

    def flush() -> None:
        if not run:
            return
        if all(isinstance(data, bytes) for data, _, _ in run):
            merged.append(const(b"".join(data for data, _, _ in run)))
        elif len(run) == 1:
            merged.append(run[0][0])
        else:
            merged.append(_join_fixed(n, run))
        run.clear()

    for shape in shapes:
        if shape[2] is None:
            run.append(shape)
        else:
            flush()
            merged.append(shape[0])
    flush()
    if len(merged) == 1:
        return merged[0]
    return pc.binary_join_element_wise(*merged, _EMPTY)


def _join_fixed(n: int, shapes: list) -> pa.Array:
    """:func:`join` of parts whose elements each have one length (constants included)."""
    width = sum(w for _, w, _ in shapes)
    if width >= 512 or width >= 8 * len(shapes):
        # Wide rows (a view of hundreds of features) or wide parts: copied straight into the
        # row-major matrix.  Transposing a matrix this wide costs several times more (20,000 rows
        # of 1,000 parts, 11.5 kB each: 4.5 s against 0.36 s, numpy 2.4).
        mat = np.empty((n, width), dtype=np.uint8)
        at = 0
        for data, w, _ in shapes:
            if w == 0:
                continue
            if isinstance(data, bytes):
                mat[:, at : at + w] = np.frombuffer(data, dtype=np.uint8)
            else:
                mat[:, at : at + w] = np.frombuffer(span(data, 0, n), dtype=np.uint8).reshape(n, w)
            at += w
        return _from_buffers(n, np.arange(n + 1, dtype=np.int64) * width, mat.reshape(-1))
    # Many narrow parts: built transposed, one contiguous row per byte position, then transposed
    # once; copying a few bytes per row into a row-major matrix is up to three times slower there.
    mat_t = np.empty((width, n), dtype=np.uint8)
    at = 0
    for data, w, _ in shapes:
        if w == 0:
            continue
        if isinstance(data, bytes):
            mat_t[at : at + w] = np.frombuffer(data, dtype=np.uint8)[:, None]
        else:
            mat_t[at : at + w] = np.frombuffer(span(data, 0, n), dtype=np.uint8).reshape(n, w).T
        at += w
    mat = np.ascontiguousarray(mat_t.T)
    return _from_buffers(n, np.arange(n + 1, dtype=np.int64) * width, mat.reshape(-1))


def as_binary(arr: pa.Array) -> pa.Array:
    """A string/binary Arrow array as ``large_binary`` with nulls turned into empty strings."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_large_binary(arr.type):
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.large_string()).view(pa.large_binary())
        else:
            arr = arr.cast(pa.large_binary())
    if arr.null_count:
        arr = arr.fill_null(_EMPTY)
    return arr


def offsets(arr: pa.Array) -> np.ndarray:
    """The ``n + 1`` offsets of a large_binary array, relative to its data buffer."""
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    return raw[arr.offset : arr.offset + len(arr) + 1]


def lengths(arr: pa.Array) -> np.ndarray:
    return np.diff(offsets(arr))


def span(arr: pa.Array, start: int, stop: int) -> memoryview:
    """Bytes of rows ``start..stop-1`` of a large_binary array, as one zero-copy buffer."""
    off = offsets(arr)
    data = arr.buffers()[2]
    if data is None:
        return memoryview(b"")
    return memoryview(data)[int(off[start]) : int(off[stop])]


def decimal(values: np.ndarray) -> pa.Array:
    """ASCII decimal of integers, e.g. RESP lengths."""
    return pc.cast(pa.array(values, pa.int64()), pa.large_string()).view(pa.large_binary())


def _crc64_table() -> np.ndarray:
    poly = 0x95AC9329AC4BC9B5  # Jones polynomial 0xad93d23594c935a9, reflected
    table = np.zeros(256, dtype=np.uint64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[i] = c
    return table


_CRC64 = _crc64_table()


@functools.cache
def _crc64_pairs() -> np.ndarray:
    """The CRC-64 register update for two input bytes at once (65,536 entries, 512 KiB)."""
    c = np.arange(1 << 16, dtype=np.uint64)
    for _ in range(2):
        c = _CRC64[c & np.uint64(0xFF)] ^ (c >> np.uint64(8))
    return c


def crc64(arr: pa.Array) -> np.ndarray:
    """Redis' CRC-64 (Jones, reflected, init 0, as in DUMP payloads) of every element of a
    ``large_binary`` array without nulls: one NumPy step per two byte positions, for all rows
    at once.

    Rows are right-aligned behind zero bytes (to an even width): with the register at 0, a
    zero byte leaves it at 0 (``table[0] == 0``), so the padding changes nothing and every
    step is the same for all rows, ragged or not."""
    n = len(arr)
    lens = lengths(arr)
    crc = np.zeros(n, dtype=np.uint64)
    if n == 0 or int(lens.max()) == 0:
        return crc
    longest = int(lens.max())
    width = longest + (longest & 1)
    data = np.frombuffer(span(arr, 0, n), dtype=np.uint8)
    if lens.min() == width:
        mat = data.reshape(n, width)
    else:
        mat = np.zeros((n, width), dtype=np.uint8)
        mat[np.arange(width) >= (width - lens)[:, None]] = data
    words_t = np.ascontiguousarray(mat.view("<u2").T)  # row j: bytes 2j, 2j+1 of every row
    table, sixteen, low = _crc64_pairs(), np.uint64(16), np.uint64(0xFFFF)
    for j in range(width // 2):
        crc = table[(crc ^ words_t[j]) & low] ^ (crc >> sixteen)
    return crc


def ragged_rows(mat: np.ndarray, lens: np.ndarray) -> pa.Array:
    """Row ``i`` is the first ``lens[i]`` bytes of row ``i`` of the ``(n, w)`` uint8 matrix."""
    if len(lens) and lens.min() == lens.max():  # one length: no mask (the common case of small entries)
        return fixed(np.ascontiguousarray(mat[:, : int(lens[0])]))
    keep = np.arange(mat.shape[1]) < lens[:, None]
    return ragged(mat[keep], lens)


def to_list(arr: pa.Array) -> list[bytes]:
    return arr.to_pylist()
