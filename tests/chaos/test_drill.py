"""``skyfeast drill --mode kill`` on the quickstart: the preferred provider's scheduler is SIGKILLed."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import drill_project
from tests.integration.conftest import skyfeast_json

pytestmark = pytest.mark.chaos


def test_kill_drill_fails_over_and_fails_back(tmp_path):
    cfg = drill_project(tmp_path / "p")
    for mode, max_detect in (("kill", 2.0),):  # hang detection is covered by tests/chaos/test_health.py
        code, rep = skyfeast_json("drill", "-c", str(cfg), "--provider", "aws", "--mode", mode, cwd=cfg.parent,
                                  timeout=400)
        assert code == 0, rep
        assert rep["ok"] and rep["completed"] and rep["completed_on"] == "gcp"
        assert rep["detection_s"] <= max_detect
        assert rep["duplicate_windows"] == 0 and rep["lost_windows"] == 0
        assert rep["chunks"] == rep["partitions"] == 8
        assert rep["restore_s"] is not None and rep["failback_s"] is not None
