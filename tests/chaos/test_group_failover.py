"""Provider aws's Dask scheduler is SIGKILLed while a model-group run scores (issue 15, must-show 1):
by hand in a production run, then by ``skyfeast drill --job scores``.

The group ``scores`` (churn, fraud, spend) runs over six upstream parts; ``spend`` is a slow
joblib model, so the kill lands after some chunks are staged on aws. Meanwhile ``churn``'s
champion moves to version 2. The run fails over to gcp, which scores the remaining chunks with
the versions pinned at the first attempt (churn 1, not 2), publishes all six, and the ledger
lists those versions. Every row read back through vanilla Feast equals churn version 1's score.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skyfeast.featurestore.models import ModelRegistry
from skyfeast.scheduler.ledger import Ledger
from tests.chaos.conftest import DRILL_HEALTH, wait_for
from tests.chaos.models.slow import artifact
from tests.chaos.test_provider_failover import _schedulers_of
from tests.integration.conftest import AT, BIN, Spawned, make_project, skyfeast, skyfeast_json
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.chaos
CHURN_V1 = (["events_7d", "repayments_7d"], [-0.08, 0.6], -0.5)  # examples/quickstart/register_models.py
SPEND = (["amount_sum_7d", "events_24h"], [0.002, 0.1], -1.0)


def _register(project, cfg, name: str, path, flavour: str, features: list[str], promote: bool = True) -> int:
    proc = skyfeast("models", "register", name, str(path), "--flavour", flavour, "--features", ",".join(features),
                    "-c", str(cfg), "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    version = json.loads(proc.stdout)["version"]
    if promote:
        skyfeast("models", "promote", name, str(version), "-c", str(cfg), cwd=project, check=True)
    return version


def _slow_group_project(tmp_path, **overrides):
    """The quickstart with its group: one worker a provider, user_features in 6 parts, and ``spend``
    version 2 (the champion) a joblib model that sleeps 2 s a chunk, so a fault lands mid-run.
    ``overrides`` are top-level config keys (e.g. ``health``). Returns (config path, project)."""
    def edit(cfg):
        cfg.update(overrides)
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        cfg["jobs"][0]["partitions"] = 6

    cfg = make_project(tmp_path / "p", users=300, per_day=2000, edit=edit, groups=True)
    project = cfg.parent
    (project / "slow_spend.pkl").write_bytes(artifact(SPEND[1], SPEND[2], sleep=2.0))
    assert _register(project, cfg, "spend", project / "slow_spend.pkl", "joblib", SPEND[0]) == 2
    return cfg, project


def test_a_group_run_that_fails_over_scores_every_row_with_the_versions_pinned_first(tmp_path):
    cfg, project = _slow_group_project(tmp_path)
    (project / "churn2.json").write_text(json.dumps({"coef": [0.5, -0.5], "intercept": 3.0, "link": "logistic"}))
    assert _register(project, cfg, "churn", project / "churn2.json", "linear", CHURN_V1[0], promote=False) == 2
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=project)
    assert code == 0, report
    ledger = Ledger(f"sqlite:///{project / '.skyfeast' / 'state.db'}")
    proc = Spawned([str(BIN / "skyfeast"), "run", "-c", str(cfg), "--job", "scores", "--at", AT, "--json"], project)
    try:
        def mid_run():
            runs = ledger.runs(job="scores", status="running")
            return runs[0] if runs and 1 <= len(ledger.chunks(runs[0].id)) <= 3 else None

        run = wait_for(mid_run, 120, "the group run to be part-way through on aws")
        # the champion moves mid-run (in this process: milliseconds): the run keeps the version it pinned
        ModelRegistry(ledger.engine).promote("churn", 2, reason="mid-run", actor="test")
        (aws_scheduler,) = _schedulers_of(proc.pid)
        os.kill(aws_scheduler.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    final = ledger.get_run(run.id)
    attempts = ledger.attempts(run.id)
    assert final.status == "succeeded" and final.provider == "gcp", (final, attempts)
    assert [(a["provider"], a["outcome"]) for a in attempts] == [("aws", "failed"), ("gcp", "succeeded")]
    chunks = ledger.chunks(run.id)
    by_attempt = {a["id"]: a["provider"] for a in attempts}
    assert len(chunks) == 6 and {by_attempt[c["attempt_id"]] for c in chunks.values()} == {"aws", "gcp"}, chunks
    pinned = {(m, v, o) for m, v, _, o, _ in ledger.run_models(run.id)}
    assert pinned == {("churn", 1, "written"), ("fraud", 1, "written"), ("spend", 2, "written")}
    ledger.close()
    # vanilla Feast, in its own process: every row scored by churn version 1, and says so
    feats = expected_features(load_events(project / "data" / "aws"), pd.Timestamp("2026-03-02T12:00:00Z"))
    users = [int(u) for u in feats.index]
    code = ("import json, sys\nfrom feast import FeatureStore\n"
            "rows = [{'user_id': u} for u in json.loads(sys.argv[1])]\n"
            "print(json.dumps(FeatureStore(repo_path='feature_repo').get_online_features(features=["
            "'user_scores:churn', 'user_scores:spend', 'user_scores:model_set'], entity_rows=rows).to_dict()))\n")
    read = subprocess.run([sys.executable, "-c", code, json.dumps(users)], cwd=project, capture_output=True,
                          text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    got = pd.DataFrame(json.loads(read.stdout)).set_index("user_id")

    def logistic(feats_, coef, b):
        return 1 / (1 + np.exp(-(feats.loc[users, feats_].astype(float).to_numpy() @ np.asarray(coef) + b)))

    np.testing.assert_allclose(got.loc[users, "churn"].to_numpy(float), logistic(*CHURN_V1), rtol=1e-9)
    np.testing.assert_allclose(got.loc[users, "spend"].to_numpy(float), logistic(*SPEND), rtol=1e-9)
    want = "ms-" + hashlib.sha256(b"churn@1\nfraud@1\nspend@2").hexdigest()[:16]
    assert set(got["model_set"]) == {want}


def test_a_drill_of_a_group_job_scores_on_both_providers_with_the_versions_the_ledger_pinned(tmp_path):
    cfg, project = _slow_group_project(tmp_path, health=DRILL_HEALTH)
    drill = ("drill", "-c", str(cfg), "--provider", "aws", "--mode", "kill", "--job", "scores", "--at", AT)
    # the group reads user_features' output of the window: no drill before that exists
    refused = skyfeast(*drill, cwd=project)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "run it first: skyfeast run --job user_features --at 2026-03-02T12:00:00Z" in refused.stderr, refused.stderr
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=project)
    assert code == 0, report
    code, rep = skyfeast_json(*drill, cwd=project, timeout=400)
    assert code == 0, json.dumps(rep, indent=1)
    assert rep["ok"] and rep["completed"] and rep["completed_on"] == "gcp", rep
    assert rep["chunks"] == rep["partitions"] == 6 and set(rep["chunks_by_provider"]) == {"aws", "gcp"}, rep
    want = "ms-" + hashlib.sha256(b"churn@1\nfraud@1\nspend@2").hexdigest()[:16]
    assert [(m["model"], m["version"]) for m in rep["models"]] == [("churn", 1), ("fraud", 1), ("spend", 2)]
    assert rep["model_set"] == want and rep["same_model_versions"] is True
    # every staged row, on both providers' storages, carries that set
    assert rep["model_sets_staged"] == {"aws": [want], "gcp": [want]}, rep
    ledger = Ledger(f"sqlite:///{project / '.skyfeast' / 'state.db'}")
    try:
        assert [(m, v) for m, v, *_ in ledger.run_models(rep["run_id"])] == [("churn", 1), ("fraud", 1), ("spend", 2)]
        assert ledger.runs(job="scores") == []  # the drill recorded nothing as the production job
    finally:
        ledger.close()
