"""An MLflow pyfunc for the MLflow bridge's tests, logged as "model from code" (MLflow copies this file
into the model, so a Dask worker loads it without importing the tests).  Not a test module.

Its score is :func:`expected`, which the tests use to check what vanilla Feast reads back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ["events_24h", "amount_sum_24h", "purchases_24h"]


def expected(frame: pd.DataFrame, scale: float = 1.0) -> np.ndarray:
    """The score, computed without MLflow: a non-linear scorecard over :data:`FEATURES` (times ``scale``,
    the model's ``model_config``, so two MLflow versions of it score differently)."""
    x = frame[FEATURES].astype("float64")
    return scale * (np.tanh(0.05 * x["events_24h"].to_numpy()) + 0.1 * np.log1p(np.abs(x["amount_sum_24h"].to_numpy()))
                    - 0.25 * x["purchases_24h"].to_numpy())


try:  # only when MLflow loads (or logs) this file as a model
    import mlflow.models
    import mlflow.pyfunc

    class Scorecard(mlflow.pyfunc.PythonModel):
        """Two output columns: the bridge scores the first."""

        def load_context(self, context):
            self.scale = float((context.model_config or {}).get("scale", 1.0))

        def predict(self, context, model_input, params=None):
            score = expected(model_input, self.scale)
            return pd.DataFrame({"score": score, "twice": 2 * score})

    mlflow.models.set_model(Scorecard())
except ImportError:  # pragma: no cover
    pass
