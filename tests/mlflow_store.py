"""A real local MLflow tracking store for tests: SQLite under a temp dir, no server.

A fresh MLflow SQLite store runs its migrations on first use (10-15 s here), so :func:`template` makes
one per session, with model ``card`` (the pyfunc of tests/integration/mlflow_scorecard.py, logged as
model from code) in two versions: 1 (``scale`` 1, alias ``champion``) and 2 (``scale`` 1000).  Each
test gets a copy of the database file (:func:`copy`); the template's artifacts are shared, read-only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT

MODEL_CODE = ROOT / "tests" / "integration" / "mlflow_scorecard.py"
CARD = "card"
SCALES = {1: 1.0, 2: 1000.0}


def template(root: Path) -> Path:
    """The migrated store's database file, under ``root``."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tests.integration.mlflow_scorecard import FEATURES

    db = root / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = mlflow.MlflowClient(uri, uri)
    exp = client.create_experiment("models", artifact_location=(root / "artifacts").as_uri())
    signature = ModelSignature(inputs=Schema([ColSpec("double", f) for f in FEATURES]))
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # log_model has no explicit URI; set back below
    try:
        for version, scale in SCALES.items():
            with mlflow.start_run(experiment_id=exp):
                mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), model_config={"scale": scale},
                                        registered_model_name=CARD, pip_requirements=[], signature=signature)
    finally:
        mlflow.set_tracking_uri(old)
    client.set_registered_model_alias(CARD, "champion", 1)
    return db


def copy(db: Path, dest: Path) -> str:
    """A private copy of the store at ``dest`` (a directory); returns its tracking URI."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(db, dest / "mlflow.db")
    return f"sqlite:///{dest / 'mlflow.db'}"
