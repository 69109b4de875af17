"""Drills ``partition`` and ``storage-outage`` (``run_drill``, the code of ``skyfeast drill``, with
the ``ops/drills`` scenarios) on a small quickstart: a real TCP blackhole between this process and
the preferred scheduler; the preferred storage root moved away. The run must complete on the other
provider, once, and the provider recover. Both clusters are started before the run (``warm``), so
that the run time is failover, not two cold starts; bounds are generous (CI is loaded)."""

from __future__ import annotations

import pytest

from skyfeast.scheduler.drills.drill import run_drill
from tests.chaos.conftest import drill_project
from tests.conftest import ROOT

pytestmark = pytest.mark.chaos

# the partition is seen by probes that time out: a longer probe timeout than the kill drill's
HEALTH = {"timeout": "3s", "blocklist_ttl": "2s", "failback_after": "1s"}


def _assert_failed_over(rep: dict, mode: str) -> None:
    assert rep["mode"] == mode
    assert rep["completed"] and rep["completed_on"] == "gcp", rep
    assert rep["detection_s"] is not None and rep["detection_s"] <= 30, rep  # SLO is 10 s; CI is loaded
    assert rep["duplicate_windows"] == 0 and rep["lost_windows"] == 0, rep
    assert rep["chunks"] == rep["partitions"] == 8, rep
    assert rep["chunks_by_provider"].get("gcp", 0) >= 1, rep
    assert rep["attempts"][0]["provider"] == "aws" and rep["attempts"][0]["outcome"] == "failed", rep
    assert rep["attempts"][-1] == {"provider": "gcp", "outcome": "succeeded", "failure_class": None, "error": None}
    assert rep["restore_s"] is not None, "the provider never became healthy again after the restore"


def test_partition_drill_fails_over_and_recovers(tmp_path, monkeypatch):
    cfg = drill_project(tmp_path / "p", **HEALTH)
    monkeypatch.chdir(cfg.parent)  # as `skyfeast drill` is run: schedulers import transforms from here
    rep = run_drill(cfg, "aws", scenario=str(ROOT / "ops" / "drills" / "partition-preferred.yaml"), warm=True)
    _assert_failed_over(rep, "partition")
    assert "drops every byte" in rep["fault"]
    assert rep["attempts"][0]["failure_class"] == "infrastructure"


def test_storage_outage_drill_fails_over_and_recovers(tmp_path, monkeypatch):
    cfg = drill_project(tmp_path / "p", **HEALTH)
    monkeypatch.chdir(cfg.parent)  # as `skyfeast drill` is run: schedulers import transforms from here
    rep = run_drill(cfg, "aws", scenario=str(ROOT / "ops" / "drills" / "storage-outage-preferred.yaml"), warm=True)
    _assert_failed_over(rep, "storage-outage")
    root = cfg.parent / "data" / "aws"
    assert root.is_dir() and (root / "events").is_dir(), "the storage root was not put back"
    assert not (cfg.parent / "data" / "aws.skyfeast-outage").exists()
