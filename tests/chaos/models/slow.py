"""A scikit-learn-style logistic model that sleeps on every call, so that a fault lands mid-run.

Pickled by value (``cloudpickle.register_pickle_by_value``): the workers load it with joblib
without this module being importable there, as a user's own estimator class would be shipped.
"""

from __future__ import annotations

import time

import numpy as np


class SlowLogistic:
    def __init__(self, coef: list[float], intercept: float, sleep: float):
        self.coef, self.intercept, self.sleep = np.asarray(coef, dtype=float), float(intercept), sleep

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.sleep)
        p = 1 / (1 + np.exp(-(x @ self.coef + self.intercept)))
        return np.column_stack([1 - p, p])


def artifact(coef: list[float], intercept: float, sleep: float) -> bytes:
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return cloudpickle.dumps(SlowLogistic(coef, intercept, sleep))
