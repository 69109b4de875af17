"""Flavours and group scoring (skyfeast.featurestore.models.flavours), against scores computed here in NumPy."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pandas as pd
import pytest

from skyfeast.featurestore.models.flavours import (
    FlavourError,
    FlavourNotInstalled,
    Member,
    check_flavour,
    linear_artifact,
    load,
    score_group,
)


class Logistic:
    """A scikit-learn-style estimator (``predict_proba``), as users pickle them with joblib."""

    def __init__(self, coef: list[float]):
        self.coef = np.asarray(coef)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != len(self.coef):
            raise ValueError(f"X has {x.shape[1]} features, but Logistic is expecting {len(self.coef)} features")
        p = 1 / (1 + np.exp(-(x @ self.coef)))
        return np.column_stack([1 - p, p])


class Regressor:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return 2 * x[:, 0]


def _frame(n: int = 200, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.integers(0, 9, n)})


def _linear(name: str, feats: list[str], coef: list[float], b: float, link: str = "logistic") -> Member:
    return Member(name, name, "linear", tuple(feats), load("linear", linear_artifact(coef, b, link), features=feats))


def test_stacked_linear_members_score_as_each_would_alone():
    df = _frame()
    members = [_linear("m1", ["a", "b"], [0.5, -1.0], 0.1), _linear("m2", ["c"], [0.2], -1.0, "identity"),
               _linear("m3", ["b", "c", "a"], [1.0, 0.0, 2.0], 0.0)]
    scores, errors = score_group(members, df)
    assert errors == {}
    a, b, c = (df[k].to_numpy(dtype=float) for k in "abc")
    np.testing.assert_allclose(scores["m1"], 1 / (1 + np.exp(-(0.5 * a - b + 0.1))))
    np.testing.assert_allclose(scores["m2"], 0.2 * c - 1.0)
    np.testing.assert_allclose(scores["m3"], 1 / (1 + np.exp(-(b + 2 * a))))


def test_a_member_that_raises_or_returns_inf_does_not_stop_the_others():
    df = _frame()
    est = Logistic([0.3, -0.7])
    wrong_width = Member("wrong", "wrong", "joblib", ("a", "b", "c"), est)  # trained on two features, given three
    blows_up = Member("inf", "inf", "linear", ("a",), load("linear", linear_artifact([1e308], 0.0, "identity")))
    good = Member("good", "good", "joblib", ("a", "b"), est)
    scores, errors = score_group([wrong_width, blows_up, good, _linear("ok", ["b"], [1.0], 0.0)], df)
    assert set(errors) == {"wrong", "inf"} and set(scores) == {"good", "ok"}
    assert "raised ValueError" in errors["wrong"] and "NaN or infinite" in errors["inf"]
    np.testing.assert_allclose(scores["good"], est.predict_proba(df[["a", "b"]].to_numpy())[:, 1])


def test_a_string_column_fails_only_the_linear_members_that_read_it():
    df = _frame().assign(s=["x"] * 200)
    scores, errors = score_group([_linear("reads_s", ["s"], [1.0], 0.0), _linear("fine", ["a"], [1.0], 0.0)], df)
    assert set(errors) == {"reads_s"} and "'s' is not numeric" in errors["reads_s"] and set(scores) == {"fine"}


def test_a_joblib_round_trip_and_bad_bytes_are_flavour_errors():
    buf = io.BytesIO()
    joblib.dump(Regressor(), buf)
    model = load("joblib", buf.getvalue())
    assert model.predict(np.array([[2.0]]))[0] == pytest.approx(4.0)
    with pytest.raises(FlavourError, match="not a joblib model"):
        load("joblib", b"not a pickle")
    with pytest.raises(FlavourError, match="2 coefficients for 3 features"):
        load("linear", linear_artifact([1, 2], 0.0), features=["a", "b", "c"])
    with pytest.raises(FlavourError, match="unknown flavour 'onnx'"):
        check_flavour("onnx")


def test_lightgbm_scores_natively_or_names_its_extra():
    try:
        import lightgbm
    except ImportError:
        with pytest.raises(FlavourNotInstalled, match=r"skyfeast\[lightgbm\]"):
            check_flavour("lightgbm")
        return
    df = _frame(500)
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 4},
                             lightgbm.Dataset(df[["a", "b"]].to_numpy(), label=(df["a"] + df["b"] > 0).astype(int)),
                             num_boost_round=5)
    m = Member("gbm", "gbm", "lightgbm", ("a", "b"), load("lightgbm", booster.model_to_string().encode()))
    scores, errors = score_group([m], df)
    assert errors == {}
    np.testing.assert_allclose(scores["gbm"], booster.predict(df[["a", "b"]].to_numpy()))
