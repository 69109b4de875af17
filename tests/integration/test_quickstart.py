"""The quickstart end to end on real local Dask clusters, read back with vanilla Feast."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import AT, skyfeast, skyfeast_json
from tests.integration.reference import expected_features, expected_risk, load_events

pytestmark = pytest.mark.integration
END = pd.Timestamp("2026-03-02T12:00:00Z")
FEATURES = ["events_1h", "amount_sum_1h", "amount_mean_1h", "events_24h", "amount_sum_24h", "amount_mean_24h",
            "events_7d", "amount_sum_7d", "amount_mean_7d", "purchases_24h", "repayments_7d"]


def _same(a, b) -> bool:
    a_null = a is None or (isinstance(a, float) and math.isnan(a))
    b_null = b is None or (isinstance(b, float) and math.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def expected(quickstart_run):
    events = load_events(quickstart_run["dir"] / "data" / "aws")
    return expected_features(events, END)


def test_run_reports_two_successful_runs(quickstart_run):
    assert quickstart_run["exit"] == 0, quickstart_run["report"]
    runs = {r["job"]: r for r in quickstart_run["report"]["runs"]}
    assert set(runs) == {"user_features", "risk_score"}
    for r in runs.values():
        assert r["status"] == "succeeded"
        assert r["provider"] == "aws"
        assert r["window"] == {"start": "2026-03-02T11:00:00+00:00", "end": "2026-03-02T12:00:00+00:00"}
        assert r["rows"] > 1000


def test_online_values_equal_independent_pandas(quickstart_run, expected):
    from feast import FeatureStore

    rng = np.random.default_rng(2024)
    users = sorted(int(u) for u in rng.choice(expected.index.to_numpy(), size=150, replace=False))
    warnings.simplefilter("ignore")
    store = FeatureStore(repo_path=str(quickstart_run["dir"] / "feature_repo"))
    refs = [f"user_features:{f}" for f in FEATURES] + ["user_risk:risk_score", "user_risk:model_version"]
    got = store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in users]).to_dict()
    model = joblib.load(quickstart_run["dir"] / "models" / "risk_model.joblib")
    risk = expected_risk(expected, model)
    assert got["user_id"] == users
    mismatches = []
    for i, u in enumerate(users):
        for f in FEATURES:
            if not _same(got[f][i], expected.at[u, f]):
                mismatches.append((u, f, got[f][i], expected.at[u, f]))
        if not _same(got["risk_score"][i], risk.at[u]):
            mismatches.append((u, "risk_score", got["risk_score"][i], risk.at[u]))
        assert got["model_version"][i] == "risk-v1"
    assert not mismatches, mismatches[:10]
    # some users had no event in the last hour: their 1h mean must be null, not 0
    assert any(got["amount_mean_1h"][i] is None for i in range(len(users)))


def test_unknown_entity_reads_as_null(quickstart_run):
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(quickstart_run["dir"] / "feature_repo"))
    got = store.get_online_features(features=["user_features:events_7d"], entity_rows=[{"user_id": -5}]).to_dict()
    assert got["events_7d"] == [None]


def test_offline_copy_holds_every_user(quickstart_run, expected):
    root = quickstart_run["dir"] / "data" / "aws" / "offline" / "user_features"
    files = sorted(root.glob("20260302T110000-20260302T120000-part*.parquet"))
    assert files, list(root.iterdir())
    offline = pd.concat([pd.read_parquet(f) for f in files]).set_index("user_id").sort_index()
    assert offline.index.is_unique
    assert sorted(offline.index) == sorted(expected.index)
    assert (offline["event_timestamp"] == END).all()
    pd.testing.assert_frame_equal(
        offline[FEATURES].astype(float), expected.loc[offline.index, FEATURES].astype(float),
        check_names=False, rtol=1e-9,
    )


def test_feast_registry_records_window_and_keeps_view_servable(quickstart_run):
    from feast import FeatureStore
    from feast.feature_view import FeatureViewState

    store = FeatureStore(repo_path=str(quickstart_run["dir"] / "feature_repo"))
    for name in ("user_features", "user_risk"):
        fv = store.get_feature_view(name)
        intervals = [(s.replace(tzinfo=None), e.replace(tzinfo=None)) for s, e in fv.materialization_intervals]
        assert (pd.Timestamp("2026-03-02T11:00").to_pydatetime(), pd.Timestamp("2026-03-02T12:00").to_pydatetime()) in intervals
        assert getattr(fv, "state", None) != FeatureViewState.MATERIALIZING


def test_separate_process_reads_same_values(quickstart_run, expected):
    """The shipped reader (plain Feast SDK, no skyfeast import) sees what this process sees."""
    from feast import FeatureStore

    users = [int(u) for u in expected.index[:3]]
    proc = subprocess.run([sys.executable, "read_online.py", "--json", *map(str, users)], cwd=quickstart_run["dir"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    reader = (quickstart_run["dir"] / "read_online.py").read_text()
    assert "scheduler" not in reader and "featurestore" not in reader
    store = FeatureStore(repo_path=str(quickstart_run["dir"] / "feature_repo"))
    ours = store.get_online_features(
        features=["user_features:events_24h", "user_features:amount_mean_7d", "user_risk:risk_score"],
        entity_rows=[{"user_id": u} for u in users]).to_dict()
    for key in ("events_24h", "amount_mean_7d", "risk_score"):
        assert all(_same(a, b) for a, b in zip(theirs[key], ours[key])), key
    assert any(v is not None for v in theirs["risk_score"])


def test_second_run_skips_succeeded_windows(quickstart_run):
    code, report = skyfeast_json("run", "-c", str(quickstart_run["config"]), "--at", AT, cwd=quickstart_run["dir"])
    assert code == 0
    assert [(r["job"], r["status"], r["reason"]) for r in report["runs"]] == [
        ("user_features", "skipped", "already succeeded"), ("risk_score", "skipped", "already succeeded")]


def test_plan_json_fields(quickstart_run):
    code, plan = skyfeast_json("plan", "-c", str(quickstart_run["config"]), "--at", AT, cwd=quickstart_run["dir"])
    assert code == 0
    assert plan["project"] == "quickstart"
    assert [j["name"] for j in plan["jobs"]] == ["user_features", "risk_score"]
    for job in plan["jobs"]:
        assert set(job) >= {"name", "kind", "schedule", "feature_view", "provider", "candidates", "next_fires"}
        assert job["provider"] == "aws" and job["candidates"] == ["aws", "gcp"]
        assert [f["fire"] for f in job["next_fires"]] == [
            "2026-03-02T13:00:00+00:00", "2026-03-02T14:00:00+00:00", "2026-03-02T15:00:00+00:00"]
        assert job["next_fires"][0]["window"] == {"start": "2026-03-02T12:00:00+00:00", "end": "2026-03-02T13:00:00+00:00"}


def test_status_json_fields(quickstart_run):
    code, status = skyfeast_json("status", "-c", str(quickstart_run["config"]), cwd=quickstart_run["dir"])
    assert code == 0
    assert set(status) >= {"project", "at", "ledger", "providers", "runs", "feature_views"}
    provs = {p["name"]: p for p in status["providers"]}
    assert set(provs) == {"aws", "gcp"}
    assert provs["aws"]["last_success"] is not None and provs["gcp"]["last_success"] is None
    assert all(p["storage_ok"] for p in provs.values())
    assert {r["job"] for r in status["runs"]} == {"user_features", "risk_score"}
    assert all(r["status"] == "succeeded" for r in status["runs"])
    fvs = {f["feature_view"]: f for f in status["feature_views"]}
    assert fvs["user_features"]["materialized_until"].startswith("2026-03-02T12:00:00")
    assert fvs["user_risk"]["age_seconds"] > 0


def test_human_output_has_summary_table(quickstart_run):
    proc = skyfeast("status", "-c", str(quickstart_run["config"]), cwd=quickstart_run["dir"])
    assert proc.returncode == 0
    assert "providers" in proc.stdout and "user_features" in proc.stdout and "Traceback" not in proc.stderr


IMPORTED = """
import sys
from skyfeast.scheduler.cli.main import main
code = main(sys.argv[1:])
print("DISTRIBUTED" if "distributed" in sys.modules else "NO-DISTRIBUTED", code)
"""


def test_commands_that_start_no_cluster_never_import_distributed(quickstart_run):
    """`runs`, `plan`, `status` and `validate` start no cluster, so they skip distributed's import
    (about 0.4 s of a command's start: `runs` 0.99 s -> 0.55 s, docs/benchmarks.md); `status --probe`
    starts clusters and imports it, which shows the check can see it."""
    cfg = str(quickstart_run["config"])
    cases = {"runs": (["runs", "-c", cfg, "--json"], False), "plan": (["plan", "-c", cfg, "--at", AT], False),
             "status": (["status", "-c", cfg], False), "validate": (["validate", "-c", cfg], False),
             "status --probe": (["status", "-c", cfg, "--probe"], True)}
    for name, (argv, imports) in cases.items():
        proc = subprocess.run([sys.executable, "-c", IMPORTED, *argv], cwd=quickstart_run["dir"], capture_output=True,
                              text=True, timeout=300)
        last = proc.stdout.strip().splitlines()[-1]
        assert last == f"{'DISTRIBUTED' if imports else 'NO-DISTRIBUTED'} 0", (name, proc.stdout[-1000:],
                                                                              proc.stderr[-2000:])
