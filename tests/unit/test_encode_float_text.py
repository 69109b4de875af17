"""``float_text`` is Python's ``repr(float(v))``, vectorised: compared value by value."""

import numpy as np
import pyarrow as pa
import pytest

from skyfeast.featurestore.writers._encode import FeatureColumn, float_text


def _values() -> np.ndarray:
    rng = np.random.default_rng(7)
    n = 200_000
    with np.errstate(over="ignore"):  # float32 overflow to inf is one of the cases
        small = (rng.standard_normal(n) * 10.0 ** rng.integers(-40, 40, n)).astype(np.float32).astype(np.float64)
    return np.concatenate([
        rng.random(n).astype(np.float32).astype(np.float64),  # typical features
        rng.random(n),
        small,
        rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n),
        rng.random(n) * 10.0 ** rng.integers(5, 16, n),  # large, not integral
        rng.integers(-(2**40), 2**40, n) / 1024.0,  # binary fractions
        np.arange(-200_000, 200_000, dtype=np.float64),  # integral
        2.0 ** np.arange(-1074, 1024), -(2.0 ** np.arange(0, 64)), 10.0 ** np.arange(-20, 23),
        [0.0, -0.0, 1e-4, 9.999999e-5, 1e9, 999_999_999.0, 999_999_999.5, 1e10, 1e16, 5e-324,
         1.7976931348623157e308, np.inf, -np.inf],
    ])


def test_float_text_equals_python_repr_for_every_value():
    values = _values()
    got = float_text(values).to_pylist()
    expected = [repr(v) for v in values.tolist()]
    bad = [(e, g) for e, g in zip(expected, got) if e != g]
    assert not bad, f"{len(bad)} of {len(values)} differ from repr, e.g. {bad[:5]}"


def test_float_text_nan_is_repr_too():
    assert float_text(np.array([np.nan, 1.5])).to_pylist() == ["nan", "1.5"]


@pytest.mark.parametrize("arrow_type", [pa.float32(), pa.float64()])
def test_sql_text_of_a_float_feature_matches_feast(arrow_type):
    """value_text as Feast's ``extract_text_and_num`` computes it, nulls and NaN included."""
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    vtype = ValueType.FLOAT if arrow_type == pa.float32() else ValueType.DOUBLE
    raw = [0.1, None, 3.0, float("nan"), -2.5e-7, 1e12, 123.456, 0.0]
    arr = pa.array(raw, arrow_type)
    column = FeatureColumn("f", arr, vtype)
    feast_values = [None if v is None else float(np.asarray(v, arrow_type.to_pandas_dtype())) for v in raw]
    protos = python_values_to_proto_values(feast_values, vtype)
    expected = [extract_text_and_num(p, False)[0] for p in protos]
    assert column.sql_text == expected
    assert column.sql_text_array().to_pylist() == expected
