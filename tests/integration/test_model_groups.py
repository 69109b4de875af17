"""Model groups on the quickstart (issue 15): 50 registry models scored in one pass per chunk.

One project serves the module. Its ``scores`` job scores every model named ``m..`` at ``champion``
over ``user_features``' output, into the view ``user_scores``. The window [10:00, 11:00) runs with
50 good models; then two models get a bad champion (a LightGBM booster given the wrong number of
features, which raises; a linear model that overflows to inf for most rows) and [11:00, 12:00) runs.

What vanilla Feast reads afterwards is checked against scores computed here, in NumPy, from features
recomputed from the raw events (tests/integration/reference.py).
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import AT, make_project, skyfeast, skyfeast_json
from tests.integration.model_groups import feast_apply, read_online, register_linear
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.integration

BEFORE = "2026-03-02T11:30:00Z"  # the window [10:00, 11:00)
INPUTS = ["events_24h", "amount_sum_24h", "events_7d", "purchases_24h", "repayments_7d", "events_1h"]
N = 50
RAISES, OVERFLOWS = "m07", "m13"

VIEW = '''

user_scores = FeatureView(
    name="user_scores",
    entities=[user],
    ttl=timedelta(days=8),
    schema=[Field(name="user_id", dtype=Int64)]
    + [Field(name=f"m{i:02d}", dtype=Float64) for i in range(50)]
    + [Field(name="model_set", dtype=String)],
    source=FileSource(name="user_scores_source", path="../data/aws/offline/user_scores",
                      timestamp_field="event_timestamp"),
    online=True,
)
'''


def _coefs(i: int) -> tuple[list[str], np.ndarray, float]:
    rng = np.random.default_rng(i)
    feats = [INPUTS[j] for j in sorted(rng.choice(len(INPUTS), size=int(rng.integers(1, 5)), replace=False))]
    return feats, rng.normal(scale=0.05, size=len(feats)), float(rng.normal(scale=0.5))


def _logistic(features: pd.DataFrame, feats: list[str], coef: np.ndarray, b: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(features[feats].astype(float).to_numpy() @ coef + b)))


def _add_group(data: dict) -> None:
    data["jobs"].append({
        "name": "scores", "kind": "model", "schedule": {"type": "cron", "expr": "0 * * * *"},
        "source": {"type": "job", "job": "user_features"}, "group": {"prefix": "m", "alias": "champion"},
        "feature_view": "user_scores", "providers": ["aws", "gcp"], "retries": 1, "timeout": "10m"})


def _register(project, cfg, name: str, path, flavour: str, features: list[str]) -> None:
    proc = skyfeast("models", "register", name, str(path), "--flavour", flavour, "--features", ",".join(features),
                    "-c", str(cfg), "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    version = pd.read_json(pd.io.common.StringIO(proc.stdout), typ="series")["version"]
    promote = skyfeast("models", "promote", name, str(version), "--reason", "test", "-c", str(cfg), cwd=project)
    assert promote.returncode == 0, promote.stderr


def _register_many(project, cfg) -> None:
    """m00..m49 version 1 in one process (the CLI is exercised by the bad versions below)."""
    register_linear(project, cfg, {f"m{i:02d}": _coefs(i) for i in range(N)})


def _read(project, users: list[int]) -> pd.DataFrame:
    return read_online(project, [f"user_scores:m{i:02d}" for i in range(50)] + ["user_scores:model_set"], users)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    project = tmp_path_factory.mktemp("groups") / "p"
    cfg = make_project(project, users=300, per_day=2000, edit=_add_group)
    defs = project / "feature_repo" / "definitions.py"
    defs.write_text(defs.read_text() + VIEW)
    feast_apply(project)
    _register_many(project, cfg)
    code, first = skyfeast_json("run", "-c", str(cfg), "--at", BEFORE, cwd=project)
    assert code == 0, first
    # the bad champions: a booster trained on 2 features registered with 3 (it raises), and an overflow
    import lightgbm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 4},
                             lightgbm.Dataset(x, label=(x[:, 0] > 0).astype(int)), num_boost_round=3)
    (project / "gbm.txt").write_text(booster.model_to_string())
    _register(project, cfg, RAISES, project / "gbm.txt", "lightgbm", INPUTS[:3])
    from skyfeast.featurestore.models.flavours import linear_artifact

    (project / "huge.json").write_bytes(linear_artifact([1e308], 0.0, "identity"))
    _register(project, cfg, OVERFLOWS, project / "huge.json", "linear", ["amount_sum_24h"])
    code, second = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=project)
    return {"project": project, "cfg": cfg, "first": first, "second": (code, second)}


def test_one_model_raising_and_one_returning_inf_leave_the_other_48_written_and_the_run_partial(group):
    code, report = group["second"]
    by_job = {r["job"]: r for r in report["runs"]}
    assert by_job["user_features"]["status"] == "succeeded"
    run = by_job["scores"]
    assert code == 3 and run["status"] == "partial", run
    assert RAISES in run["error"] and OVERFLOWS in run["error"] and "2 of 50 models failed" in run["error"]
    code, runs = skyfeast_json("runs", "-c", str(group["cfg"]), "--job", "scores", cwd=group["project"])
    latest = max(runs["runs"], key=lambda r: r["id"])
    outcomes = {m["model"]: (m["version"], m["outcome"]) for m in latest["models"]}
    assert outcomes[RAISES] == (2, "failed") and outcomes[OVERFLOWS] == (2, "failed")
    assert sum(o == "written" for _, o in outcomes.values()) == 48
    errors = {m["model"]: m["error"] for m in latest["models"] if m["error"]}
    assert "LightGBMError" in errors[RAISES] or "number of features" in errors[RAISES], errors[RAISES]
    assert "NaN or infinite" in errors[OVERFLOWS]


def test_vanilla_feast_reads_the_new_scores_and_the_failed_models_previous_values(group):
    project = group["project"]
    events = load_events(project / "data" / "aws")
    now = expected_features(events, pd.Timestamp("2026-03-02T12:00:00Z"))
    before = expected_features(events, pd.Timestamp("2026-03-02T11:00:00Z"))
    users = sorted(set(now.index) & set(before.index))[:120]
    assert len(users) >= 100
    read = _read(project, users)
    for i in range(N):
        name = f"m{i:02d}"
        feats, coef, b = _coefs(i)
        source = before if name in (RAISES, OVERFLOWS) else now  # a failed model keeps its previous values
        want = _logistic(source.loc[users], feats, coef, b)
        np.testing.assert_allclose(read.loc[users, name].to_numpy(dtype=float), want, rtol=1e-9, err_msg=name)
    good = sorted((f"m{i:02d}", 1) for i in range(N) if f"m{i:02d}" not in (RAISES, OVERFLOWS))
    want_set = "ms-" + hashlib.sha256("\n".join(f"{m}@{v}" for m, v in good).encode()).hexdigest()[:16]
    assert set(read.loc[users, "model_set"]) == {want_set}


def test_the_first_window_pinned_version_one_of_every_model(group):
    run = next(r for r in group["first"]["runs"] if r["job"] == "scores")
    assert run["status"] == "succeeded"
    code, runs = skyfeast_json("runs", "-c", str(group["cfg"]), "--job", "scores", cwd=group["project"])
    first = min(runs["runs"], key=lambda r: r["id"])
    assert len(first["models"]) == N and {(m["version"], m["outcome"]) for m in first["models"]} == {(1, "written")}


# --------------------------------------------------------------------------- bad input: exit 2, one message
def _exit2(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)
    assert "skyfeast.yaml:" in proc.stderr  # file and line of the job's group key


def test_an_artifact_that_fails_its_checksum_is_exit_2_for_validate_and_run(group):
    from tests.integration.conftest import skyfeast_inprocess

    path = group["project"] / "data" / "aws" / "models" / "m00" / "v1" / "model.json"
    saved = path.read_bytes()
    path.write_bytes(saved.replace(b'"link"', b'"lnk" '))
    try:
        _exit2(skyfeast_inprocess("validate", "-c", str(group["cfg"]), cwd=group["project"]),
               "'m00' version 1", "checksum mismatch")
        _exit2(skyfeast_inprocess("run", "-c", str(group["cfg"]), "--job", "scores", "--at", AT, "--force",
                                  cwd=group["project"]), "'m00' version 1", "checksum mismatch")
    finally:
        path.write_bytes(saved)


@pytest.mark.parametrize("group_edit,needles", [
    ({"prefix": "zz"}, ["prefix 'zz'", "matches no model"]),
    ({"models": ["m01", "nosuch"]}, ["unknown model 'nosuch'"]),
    ({"models": ["wants_missing"]}, ["'wants_missing'", "no_such_column", "input lacks"]),
    ({"models": ["m01", "m02"], "versions_field": "versions"}, ["no field 'versions'"]),
])
def test_a_group_that_cannot_score_is_exit_2_naming_the_problem(group, group_edit, needles):
    import yaml

    from tests.integration.conftest import skyfeast_inprocess

    project, cfg = group["project"], group["cfg"]
    if "wants_missing" in str(group_edit):
        from skyfeast.featurestore.models.flavours import linear_artifact

        art = project / "wants.json"
        art.write_bytes(linear_artifact([1.0], 0.0))
        if skyfeast("models", "show", "wants_missing", "-c", str(cfg), cwd=project).returncode != 0:
            _register(project, cfg, "wants_missing", art, "linear", ["no_such_column"])
    text = cfg.read_text()
    data = yaml.safe_load(text)
    job = next(j for j in data["jobs"] if j["name"] == "scores")
    job["group"] = {**{k: v for k, v in job["group"].items() if k not in ("prefix", "models")}, **group_edit}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        _exit2(skyfeast_inprocess("validate", "-c", str(cfg), cwd=project), *needles)
    finally:
        cfg.write_text(text)


def test_a_flavour_whose_package_is_missing_names_the_extra(group, monkeypatch):
    from tests.integration.conftest import skyfeast_inprocess

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # as if skyfeast[lightgbm] were not installed
    _exit2(skyfeast_inprocess("validate", "-c", str(group["cfg"]), cwd=group["project"]),
           f"'{RAISES}' (version 2)", "pip install 'skyfeast[lightgbm]'")
