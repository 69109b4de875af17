"""The quickstart with its model groups (issue 15, must-show 6): ``scores`` (churn, fraud, spend over
``user_features``) feeds ``blend`` (one model over the three scores). Everything is read back by the
shipped ``read_online.py`` (plain Feast SDK) and compared with scores computed here in NumPy from
features recomputed from the raw events.

``blend`` joins its two upstreams by the shuffle join here, in three chunks (``join: shuffle``; the
quickstart's small outputs would be broadcast, which the group failover chaos test runs)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import AT, make_project, skyfeast_json
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.integration
END = pd.Timestamp("2026-03-02T12:00:00Z")


def _models(project) -> dict:
    spec = importlib.util.spec_from_file_location("qs_register", project / "register_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODELS


def _logistic(frame: pd.DataFrame, feats, coef, b) -> np.ndarray:
    return 1 / (1 + np.exp(-(frame[feats].astype(float).to_numpy() @ np.asarray(coef) + b)))


def _shuffle_blend(data: dict) -> None:
    (blend,) = [j for j in data["jobs"] if j["name"] == "blend"]
    blend["source"]["join"], blend["partitions"] = "shuffle", 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project = tmp_path_factory.mktemp("qsg") / "quickstart"
    cfg = make_project(project, users=300, per_day=2000, groups=True, edit=_shuffle_blend)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=project)
    return {"dir": project, "cfg": cfg, "code": code, "report": report}


def test_four_jobs_succeed_with_the_blend_after_the_scores_it_reads(run):
    assert run["code"] == 0, run["report"]
    runs = {r["job"]: r for r in run["report"]["runs"]}
    assert {j: r["status"] for j, r in runs.items()} == dict.fromkeys(
        ["user_features", "risk_score", "scores", "blend"], "succeeded")
    # scores' one small part would make one broadcast chunk: three say the shuffle join ran
    assert (runs["scores"]["partitions"], runs["blend"]["partitions"]) == (1, 3), runs
    code, listed = skyfeast_json("runs", "-c", str(run["cfg"]), cwd=run["dir"])
    assert code == 0, listed
    joins = {r["job"]: r["join_way"] for r in listed["runs"]}
    # a model job on upstream jobs records its way (one upstream reads as a broadcast); a feature job none
    assert joins == {"user_features": None, "risk_score": "broadcast", "scores": "broadcast", "blend": "shuffle"}, joins
    at = {r["job"]: (pd.Timestamp(r["started_at"]), pd.Timestamp(r["ended_at"])) for r in listed["runs"]}
    assert at["scores"][0] >= at["user_features"][1] and at["risk_score"][0] >= at["user_features"][1]
    assert at["blend"][0] >= max(at["scores"][1], at["user_features"][1])  # both of its upstreams


def test_read_online_shows_group_scores_equal_to_numpy(run):
    project = run["dir"]
    models = _models(project)
    feats = expected_features(load_events(project / "data" / "aws"), END)
    users = [int(u) for u in feats.index[:40]]
    proc = subprocess.run([sys.executable, "read_online.py", "--json", *map(str, users)], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = pd.DataFrame(json.loads(proc.stdout)).set_index("user_id")
    frame = feats.loc[users].copy()
    for name in ("churn", "fraud", "spend"):
        frame[name] = _logistic(frame, *models[name])
        np.testing.assert_allclose(got.loc[users, name].to_numpy(float), frame[name].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(got.loc[users, "blend"].to_numpy(float), _logistic(frame, *models["blend"]), rtol=1e-9)
    want = "ms-" + hashlib.sha256(b"blend@1").hexdigest()[:16]
    assert set(got["model_set"]) == {want}


def test_a_second_register_is_a_no_op_and_runs_lists_the_pinned_versions(run):
    proc = subprocess.run([sys.executable, "register_models.py"], cwd=run["dir"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stderr.count("is champion already") == 4, proc.stderr
    code, runs = skyfeast_json("runs", "-c", str(run["cfg"]), "--job", "scores", cwd=run["dir"])
    (latest,) = runs["runs"]
    assert {(m["model"], m["version"], m["outcome"]) for m in latest["models"]} == {
        ("churn", 1, "written"), ("fraud", 1, "written"), ("spend", 1, "written")}
