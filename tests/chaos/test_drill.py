"""``skyfeast drill --mode kill`` on the quickstart: the preferred provider's scheduler is SIGKILLed."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import drill_project
from tests.integration.conftest import skyfeast_json, watch_exit

pytestmark = pytest.mark.chaos


def test_kill_drill_fails_over_and_fails_back(tmp_path):
    """The drill's report, then the process's exit at once: the two local clusters it ran on are
    killed, not shut down gracefully (seconds each), and none of their processes outlives it."""
    cfg = drill_project(tmp_path / "p")
    got = watch_exit(["drill", "-c", str(cfg), "--provider", "aws", "--mode", "kill", "--json"], cfg.parent,
                     tmp_path / "stderr", timeout=400, mark="  failback: ")
    rep = got.report
    assert got.returncode == 0, rep
    assert rep["ok"] and rep["completed"] and rep["completed_on"] == "gcp"
    assert rep["detection_s"] <= 2.0  # hang detection is covered by tests/chaos/test_health.py
    assert rep["duplicate_windows"] == 0 and rep["lost_windows"] == 0
    assert rep["chunks"] == rep["partitions"] == 8
    assert rep["restore_s"] is not None and rep["failback_s"] is not None
    assert got.started >= 4, got.started  # two schedulers and their workers ran under it
    # the last progress line ("failback") is printed as the drill ends; a graceful teardown of the
    # two clusters after it took 5-7 s on an idle machine
    assert got.mark_to_exit_s is not None and got.mark_to_exit_s < 2.0, \
        f"{got.mark_to_exit_s} s from the last progress line to the exit"
    assert got.result_to_exit_s < 1.0, f"{got.result_to_exit_s:.2f} s from the report to the exit"
    assert not got.outlived, f"cluster processes outlived skyfeast drill: {got.outlived}"
    assert "leaked" not in got.stderr, got.stderr[-2000:]
    # recorded before the exit: the drill's run, finished, in the ledger
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--drills", cwd=cfg.parent)
    assert code == 0 and [(r["id"], r["status"], r["provider"]) for r in runs["runs"]] == \
        [(rep["run_id"], "succeeded", "gcp")], runs
