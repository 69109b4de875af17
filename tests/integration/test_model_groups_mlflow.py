"""The MLflow bridge in a run (issue 15, must-show 5), against a real local MLflow store (SQLite, no server).

One group (prefix ``s``, at ``champion``) holds three linear models registered in-process, one linear
model registered through the CLI (so published to MLflow, with its alias), and ``scard``: a reference to
the MLflow pyfunc ``card`` at alias ``champion`` (version 1; tests/mlflow_store.py).  After skyfeast
registered it, ``champion`` moves to version 2 in MLflow (a model scoring 1000x higher): the run still
scores version 1, since the alias was resolved at registration.  ``skyfeast run`` scores [11:00, 12:00);
what vanilla Feast reads is checked against scores computed here without MLflow.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import AT, make_project, skyfeast, skyfeast_json
from tests.integration.model_groups import feast_apply, read_online, register_linear
from tests.integration.reference import expected_features, load_events
from tests.mlflow_store import CARD, copy

pytestmark = pytest.mark.integration

INPUTS = ["events_24h", "amount_sum_24h", "events_7d", "purchases_24h", "repayments_7d", "events_1h"]
LINEAR = ["s00", "s01", "s02", "slin"]
FIELDS = [*LINEAR, "scard"]

VIEW = '''

user_scores = FeatureView(
    name="user_scores",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[Field(name="user_id", dtype=Int64)]
    + [Field(name=n, dtype=Float64) for n in ("s00", "s01", "s02", "slin", "scard")]
    + [Field(name="model_set", dtype=String)],
    source=FileSource(name="user_scores_source", path="../data/aws/offline/user_scores",
                      timestamp_field="event_timestamp"),
    online=True,
)
'''


def _coefs(i: int) -> tuple[list[str], np.ndarray, float]:
    rng = np.random.default_rng(100 + i)
    feats = [INPUTS[j] for j in sorted(rng.choice(len(INPUTS), size=int(rng.integers(1, 4)), replace=False))]
    return feats, rng.normal(scale=0.05, size=len(feats)), float(rng.normal(scale=0.5))


def _cli_json(project, cfg, *argv) -> dict:
    proc = skyfeast("models", *argv, "-c", str(cfg), "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "skyfeast: warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def bridged(tmp_path_factory, _mlflow_template):
    from skyfeast.featurestore.models.flavours import linear_artifact

    root = tmp_path_factory.mktemp("mlflow-groups")
    uri = copy(_mlflow_template, root / "mlflow")
    project = root / "p"

    def edit(data: dict) -> None:
        data["models"] = {"mlflow_tracking_uri": uri, "mlflow_artifact_location": (root / "mlartifacts").as_uri()}
        data["jobs"].append({
            "name": "scores", "kind": "model", "schedule": {"type": "cron", "expr": "0 * * * *"},
            "source": {"type": "job", "job": "user_features"}, "group": {"prefix": "s", "alias": "champion"},
            "feature_view": "user_scores", "providers": ["aws", "gcp"], "retries": 1, "timeout": "10m"})

    cfg = make_project(project, users=300, per_day=2000, edit=edit)
    defs = project / "feature_repo" / "definitions.py"
    defs.write_text(defs.read_text() + VIEW)
    feast_apply(project)
    register_linear(project, cfg, {name: _coefs(i) for i, name in enumerate(LINEAR[:3])})
    feats, coef, b = _coefs(3)
    (project / "slin.json").write_bytes(linear_artifact(coef, b, "logistic"))
    slin = _cli_json(project, cfg, "register", "slin", str(project / "slin.json"), "--flavour", "linear",
                     "--features", ",".join(feats))
    slin_promoted = _cli_json(project, cfg, "promote", "slin", "1")
    scard = _cli_json(project, cfg, "register", "scard", f"models:/{CARD}@champion")  # the config's tracking URI
    _cli_json(project, cfg, "promote", "scard", "1")
    from mlflow import MlflowClient

    MlflowClient(uri, uri).set_registered_model_alias(CARD, "champion", 2)  # the skyfeast version keeps v1
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=project)
    return {"project": project, "cfg": cfg, "uri": uri, "slin": slin, "slin_promoted": slin_promoted,
            "scard": scard, "run": (code, report)}


def _read(project, users: list[int]) -> pd.DataFrame:
    return read_online(project, [f"user_scores:{n}" for n in FIELDS] + ["user_scores:model_set"], users)


def test_an_mlflow_model_scores_in_a_group_beside_linear_models(bridged):
    from tests.integration.mlflow_scorecard import expected

    code, report = bridged["run"]
    run = next(r for r in report["runs"] if r["job"] == "scores")
    assert code == 0 and run["status"] == "succeeded", run
    project = bridged["project"]
    features = expected_features(load_events(project / "data" / "aws"), pd.Timestamp("2026-03-02T12:00:00Z"))
    users = sorted(features.index)[:120]
    assert len(users) >= 100
    read = _read(project, users)
    for i, name in enumerate(LINEAR):
        feats, coef, b = _coefs(i)
        want = 1 / (1 + np.exp(-(features.loc[users, feats].astype(float).to_numpy() @ coef + b)))
        np.testing.assert_allclose(read.loc[users, name].to_numpy(dtype=float), want, rtol=1e-9, err_msg=name)
    # MLflow version 1 (scale 1), although MLflow's champion is version 2 (scale 1000) by now
    np.testing.assert_allclose(read.loc[users, "scard"].to_numpy(dtype=float), expected(features.loc[users]),
                               rtol=1e-9)
    code, runs = skyfeast_json("runs", "-c", str(bridged["cfg"]), "--job", "scores", cwd=project)
    (latest,) = runs["runs"]
    assert {m["model"]: (m["version"], m["outcome"]) for m in latest["models"]} == {n: (1, "written") for n in FIELDS}


def test_a_version_registered_in_skyfeast_shows_up_in_mlflow_with_its_alias(bridged):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(bridged["uri"], bridged["uri"])
    slin = bridged["slin"]
    assert bridged["slin_promoted"]["mlflow"] == {"alias": "champion", "version": slin["mlflow"]["version"]}
    mv = client.get_model_version_by_alias("slin", "champion")
    assert int(mv.version) == slin["mlflow"]["version"]
    assert (mv.tags["skyfeast.model"], mv.tags["skyfeast.version"], mv.tags["skyfeast.sha256"]) == (
        "slin", "1", slin["sha256"])
    # a reference to an MLflow model is not published back (MLflow already has it)
    assert "mlflow" not in bridged["scard"]
    with pytest.raises(MlflowException):
        client.get_registered_model("scard")
    assert bridged["scard"]["features"] == ["events_24h", "amount_sum_24h", "purchases_24h"]
