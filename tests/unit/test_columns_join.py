"""``_columns.join`` builds the same rows as Arrow's element-wise join, on every path."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from skyfeast.featurestore.writers import _columns as col


def _ragged(rng, n, low, high):
    return pa.array([bytes(rng.integers(0, 256, rng.integers(low, high + 1)).astype(np.uint8)) for _ in range(n)],
                    pa.large_binary())


def _reference(*parts):
    return pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary())).to_pylist()


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_join_matches_arrow_for_fixed_ragged_empty_and_constant_parts(n):
    rng = np.random.default_rng(n)
    fixed = col.fixed(rng.integers(0, 256, (n, 5)).astype(np.uint8))
    ragged = _ragged(rng, n, 0, 11)
    empty = pa.array([b""] * n, pa.large_binary())
    parts = [col.const(b"*3\r\n"), fixed, ragged, col.const(b""), empty, col.const(b"\r\n"), ragged.slice(0, n)]
    assert col.join(*parts).to_pylist() == _reference(*parts)
    assert col.join(fixed, col.const(b"x")).to_pylist() == _reference(fixed, col.const(b"x"))


@pytest.mark.parametrize("widths", [[1, 4, 1, 8] * 5, [2, 64, 2, 64], [9, 11] * 300], ids=["narrow", "wide-parts", "wide-rows"])
def test_join_of_fixed_parts_matches_arrow_on_both_layouts(widths):
    """Fixed-width parts are joined transposed (many narrow parts) or row-major (wide rows or parts)."""
    rng = np.random.default_rng(len(widths))
    n = 300
    parts = [col.const(bytes(rng.integers(0, 256, w).astype(np.uint8))) if i % 3 == 0 else
             col.fixed(rng.integers(0, 256, (n, w)).astype(np.uint8)).slice(0, n) for i, w in enumerate(widths)]
    assert col.join(*parts).to_pylist() == _reference(*parts)
    sliced = [p if isinstance(p, pa.Scalar) else p.slice(5, 100) for p in parts]
    assert col.join(*sliced).to_pylist() == _reference(*sliced)


def test_join_of_a_sliced_array_uses_its_own_rows():
    rng = np.random.default_rng(3)
    base = _ragged(rng, 50, 1, 4)
    part = base.slice(10, 20)
    assert col.join(part, col.const(b"|")).to_pylist() == [v + b"|" for v in base.to_pylist()[10:30]]


def test_join_falls_back_for_nulls_and_other_types():
    with_null = pa.array([b"a", None, b"ccc"], pa.large_binary())
    assert col.join(with_null, col.const(b"!")).to_pylist() == _reference(with_null, col.const(b"!"))
    assert col.join(pa.array([], pa.large_binary()), col.const(b"!")).to_pylist() == []


def _crc64_reference(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x95AC9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc


def test_crc64_is_redis_crc64_for_every_row():
    """Redis' check value (crc64 of "123456789" is 0xe9c6d914c4b8d9ca), and a bit-by-bit reference
    on rows of different lengths, empty ones included, and on rows of one length."""
    rng = np.random.default_rng(5)
    ragged = [b"123456789", b"", *(bytes(rng.integers(0, 256, rng.integers(0, 40)).astype(np.uint8))
                                    for _ in range(200))]
    got = col.crc64(pa.array(ragged, pa.large_binary())).tolist()
    assert got[0] == 0xE9C6D914C4B8D9CA and got[1] == 0
    assert got == [_crc64_reference(b) for b in ragged]
    same = [bytes(rng.integers(0, 256, 16).astype(np.uint8)) for _ in range(50)]
    assert col.crc64(pa.array(same, pa.large_binary())).tolist() == [_crc64_reference(b) for b in same]
