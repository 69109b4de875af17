"""``skyfeast drill --mode kill`` on the quickstart: the preferred provider's scheduler is SIGKILLed."""

from __future__ import annotations

import pytest

from tests.chaos.conftest import future_end
from tests.integration.conftest import make_project, skyfeast_json

pytestmark = pytest.mark.chaos

SLOW = '''

import time as _time


def slow_features(events, window):
    _time.sleep(0.6)
    return user_features(events, window)
'''


def test_kill_drill_fails_over_and_fails_back(tmp_path):
    def edit(cfg):
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        cfg["health"] = {"interval": "0.5s", "timeout": "2s", "miss_budget": 3, "blocklist_ttl": "3s",
                         "failback_after": "2s"}
        cfg["jobs"][0]["transform"] = "transforms:slow_features"
        cfg["jobs"][0]["partitions"] = 8

    cfg = make_project(tmp_path / "p", end=future_end(), days=8, users=300, per_day=2000, edit=edit)
    with open(cfg.parent / "transforms.py", "a") as fh:
        fh.write(SLOW)
    for mode, max_detect in (("kill", 2.0),):  # hang detection is covered by tests/chaos/test_health.py
        code, rep = skyfeast_json("drill", "-c", str(cfg), "--provider", "aws", "--mode", mode, cwd=cfg.parent,
                                  timeout=400)
        assert code == 0, rep
        assert rep["ok"] and rep["completed"] and rep["completed_on"] == "gcp"
        assert rep["detection_s"] <= max_detect
        assert rep["duplicate_windows"] == 0 and rep["lost_windows"] == 0
        assert rep["chunks"] == rep["partitions"] == 8
        assert rep["restore_s"] is not None and rep["failback_s"] is not None
