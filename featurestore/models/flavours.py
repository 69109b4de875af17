"""How a model version's artifact becomes scores: one loader and one predictor per flavour.

=========  ===============================================  =========================
flavour    artifact                                         score of one row
=========  ===============================================  =========================
joblib     a joblib/pickle of a scikit-learn-style          ``predict_proba[:, 1]`` when
           estimator                                        the estimator has it, else ``predict``
linear     JSON ``{"coef": [...], "intercept": b,           ``x·coef + b``, through the link
           "link": "identity" | "logistic"}``
lightgbm   a LightGBM booster's model text                  ``Booster.predict`` (extra ``skyfeast[lightgbm]``)
mlflow     JSON naming one MLflow model version             its pyfunc's ``predict`` over a DataFrame of the
           (:mod:`.mlflow_bridge`)                          features; 1-D, or the first column (extra ``skyfeast[mlflow]``)
=========  ===============================================  =========================

A model's input columns are its version's ``features``, in that order.  Linear members of a
group are **stacked**: one matrix of coefficients over the union of their features, so a group
of them is scored by one matrix product (:func:`score_group`).

A flavour whose library is not installed is :class:`FlavourNotInstalled`, naming the extra.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyfeast.featurestore.models.errors import RegistryError

FLAVOURS: dict[str, tuple[str, str] | None] = {  # flavour → (module it needs, the extra that installs it)
    "joblib": None,
    "linear": None,
    "lightgbm": ("lightgbm", "lightgbm"),
    "mlflow": ("mlflow", "mlflow"),
}
LINKS = ("identity", "logistic")


class FlavourError(RegistryError):
    """A flavour that does not exist, or an artifact its flavour cannot load."""


class FlavourNotInstalled(FlavourError):
    def __init__(self, flavour: str, module: str, extra: str):
        self.flavour, self.extra = flavour, extra
        super().__init__(f"flavour {flavour!r} needs the Python package {module!r}, which is not installed: "
                         f"pip install 'skyfeast[{extra}]'")


def check_flavour(flavour: str) -> None:
    """Raise :class:`FlavourError` for an unknown flavour, :class:`FlavourNotInstalled` for one whose
    library is missing."""
    if flavour not in FLAVOURS:
        raise FlavourError(f"unknown flavour {flavour!r}; known: {', '.join(FLAVOURS)}")
    need = FLAVOURS[flavour]
    if need is not None:
        import importlib

        try:
            importlib.import_module(need[0])
        except ImportError:
            raise FlavourNotInstalled(flavour, *need) from None


@dataclass(frozen=True)
class Linear:
    coef: np.ndarray  # (n_features,)
    intercept: float
    link: str


def linear_artifact(coef: Sequence[float], intercept: float, link: str = "logistic") -> bytes:
    """The bytes of a ``linear`` artifact (what ``skyfeast models register --flavour linear`` takes)."""
    if link not in LINKS:
        raise FlavourError(f"unknown link {link!r}; known: {', '.join(LINKS)}")
    return json.dumps({"coef": [float(c) for c in coef], "intercept": float(intercept), "link": link}).encode()


def load(flavour: str, data: bytes, *, features: Sequence[str] = ()) -> Any:
    """The model in ``data``; :class:`FlavourError` if the bytes are not a model of ``flavour``."""
    check_flavour(flavour)
    try:
        if flavour == "joblib":
            import joblib

            return joblib.load(io.BytesIO(data))
        if flavour == "linear":
            doc = json.loads(data)
            coef = np.asarray(doc["coef"], dtype="float64")
            link = doc.get("link", "identity")
            if coef.ndim != 1 or link not in LINKS or not math.isfinite(float(doc.get("intercept", 0.0))):
                raise ValueError("needs a flat list 'coef', a finite 'intercept' and a 'link' of "
                                 + " or ".join(LINKS))
            if features and len(features) != len(coef):
                raise ValueError(f"{len(coef)} coefficients for {len(features)} features")
            return Linear(coef, float(doc.get("intercept", 0.0)), link)
        if flavour == "mlflow":
            from skyfeast.featurestore.models import mlflow_bridge as bridge

            model = bridge.load_reference(data)  # features: the version's, else its signature's inputs
            return Pyfunc(model, tuple(features) or bridge.read_reference(data).features or bridge.input_names(model))
        import lightgbm

        return lightgbm.Booster(model_str=data.decode())
    except FlavourError:
        raise
    except Exception as exc:
        raise FlavourError(f"not a {flavour} model: {type(exc).__name__}: {str(exc)[:200]}") from None


def predict(flavour: str, model: Any, x: np.ndarray) -> np.ndarray:
    """One score per row of ``x`` (rows × the version's features)."""
    if flavour == "linear":
        with np.errstate(over="ignore", invalid="ignore"):
            z = x @ model.coef + model.intercept
        return _link(z, model.link)
    if flavour == "lightgbm":
        out = np.asarray(model.predict(x))
    elif flavour == "mlflow":
        out = model.scores(x)
    elif hasattr(model, "predict_proba"):
        out = np.asarray(model.predict_proba(x))[:, -1]
    else:
        out = np.asarray(model.predict(x))
    if out.ndim != 1 or len(out) != len(x):
        raise ValueError(f"returned an array of shape {out.shape} for {len(x)} rows; expected one score per row")
    return out.astype("float64", copy=False)


@dataclass(frozen=True)
class Pyfunc:
    """A loaded MLflow pyfunc (``model``) and the columns it is given, in order."""

    model: Any
    features: tuple[str, ...]

    def scores(self, x: np.ndarray) -> np.ndarray:
        import pandas as pd

        out = self.model.predict(pd.DataFrame(x, columns=list(self.features)))
        if isinstance(out, pd.DataFrame):
            out = out.iloc[:, 0]
        elif isinstance(out, dict):
            out = next(iter(out.values()))
        out = np.asarray(out)
        return out[:, 0] if out.ndim == 2 else out


def _link(z: np.ndarray, link: str) -> np.ndarray:
    if link == "logistic":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-z))
    return z


@dataclass(frozen=True)
class Member:
    """One model of a group as the scorer sees it: its name, output field, flavour, features and loaded model."""

    name: str
    field: str
    flavour: str
    features: tuple[str, ...]
    model: Any


def score_group(members: Sequence[Member], frame) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Score every member over ``frame`` (a pandas DataFrame holding every member's features).

    Returns (field → scores, for members that scored every row with a finite number;
    model name → error, for the others).  A member that raises, or returns NaN or ±inf for any row,
    is an error: it never stops the others.  Linear members are scored together, by one matrix product.
    """
    matrix, errors = score_matrix(members, frame)
    return {m.field: matrix[j] for j, m in enumerate(members) if m.name not in errors}, errors


def score_matrix(members: Sequence[Member], frame) -> tuple[np.ndarray, dict[str, str]]:
    """:func:`score_group`'s scores as one C-contiguous ``(len(members), len(frame))`` float64 matrix,
    row ``j`` for ``members[j]``; the row of a member that failed (in the returned errors) is NaN.

    One matrix so that a group's output frame can be built on it without copying: 500 models over
    50,000 rows are 200 MB, and each copy (or temporary of the link function) costs as much.
    """
    n = len(frame)
    out = np.empty((len(members), n))
    errors: dict[str, str] = {}
    rows = [j for j, m in enumerate(members) if m.flavour == "linear"]
    if rows:
        _score_linear([members[j] for j in rows], frame, out, rows, errors)
    for j, m in enumerate(members):
        if m.flavour == "linear":
            continue
        try:
            x = np.column_stack([_column(frame, f) for f in m.features]) if m.features else np.zeros((n, 0))
            out[j] = predict(m.flavour, m.model, x)
        except Exception as exc:
            errors[m.name] = f"raised {type(exc).__name__}: {str(exc)[:300]}"
    finite = np.isfinite(out).all(axis=1)
    for j, m in enumerate(members):
        if m.name in errors:
            out[j] = np.nan
        elif not finite[j]:
            bad = int((~np.isfinite(out[j])).sum())
            errors[m.name] = f"returned {bad:,} NaN or infinite score(s) of {n:,}"
            out[j] = np.nan
    return out, errors


def _score_linear(linear: Sequence[Member], frame, out: np.ndarray, rows: list[int], errors: dict) -> None:
    """Rows ``rows`` of ``out``: the linear members, by one product of their stacked coefficients
    ``(members × union of features)`` with the frame's features ``(union × rows)``."""
    union = list(dict.fromkeys(f for m in linear for f in m.features))
    col = {f: i for i, f in enumerate(union)}
    w = np.zeros((len(linear), len(union)))
    b = np.empty((len(linear), 1))
    for j, m in enumerate(linear):
        w[j, [col[f] for f in m.features]] = m.model.coef
        b[j] = m.model.intercept
    xt = np.zeros((len(union), len(frame)))
    unusable: dict[str, str] = {}
    for f, i in col.items():
        try:
            xt[i] = _column(frame, f)
        except Exception as exc:  # only the members reading this column fail
            unusable[f] = f"input {f!r} is not numeric: {type(exc).__name__}: {str(exc)[:200]}"
    contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
    z = out[rows[0]:rows[0] + len(rows)] if contiguous else np.empty((len(rows), len(frame)))
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is that member's inf, reported by the caller
        np.matmul(w, xt, out=z)
        z += b
        logistic = np.array([m.model.link == "logistic" for m in linear])
        if logistic.all():
            _logistic_inplace(z)
        elif logistic.any():
            z[logistic] = _link(z[logistic], "logistic")
    if not contiguous:
        out[rows] = z
    for m in linear:
        bad = next((unusable[f] for f in m.features if f in unusable), None)
        if bad is not None:
            errors[m.name] = bad


def _logistic_inplace(z: np.ndarray) -> None:
    """``z = 1 / (1 + exp(-z))`` without temporaries (the same operations as :func:`_link`)."""
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        np.divide(1.0, z, out=z)


def _column(frame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="float64", na_value=np.nan)
