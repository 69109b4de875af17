"""A kill drill started over HTTP (``POST /api/drills``) in a live quickstart daemon: real local Dask
clusters (separate processes), a real SQLite ledger, the real uvicorn server.

The request answers 202 with the drill's report id at once; a second one while it runs is refused
(409); the daemon keeps dispatching (its dispatch thread keeps beating, per ``/healthz``); the drill
kills aws's scheduler, its run fails over to gcp, and the report (``GET /api/drills/{id}``) turns
``passed`` with its detection and recovery times, which ``/metrics`` then exports and the status
page shows, with the drill's attempts drawn in the timeline as a drill's. A second (hang) drill is
interrupted by the daemon's shutdown: cancelled, its fault lifted, reported failed.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skyfeast.scheduler.ledger import Ledger
from tests.chaos.conftest import future_end, wait_for
from tests.chaos.test_ops_http import HttpDaemon, _get
from tests.integration.conftest import make_project

pytestmark = pytest.mark.chaos

SLOW = '''

import time as _time


def slow_features(events, window):
    _time.sleep(0.6)
    return user_features(events, window)
'''


def _post(url: str, body: dict, timeout: float = 10) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _json(url: str) -> dict:
    code, raw = _get(url, timeout=5)
    assert code == 200, (url, code, raw[:500])
    return json.loads(raw)


def _drill_samples(base: str) -> dict:
    _, raw = _get(base + "/metrics", timeout=5)
    return {(s.name, s.labels.get("provider"), s.labels.get("mode")): s.value
            for fam in text_string_to_metric_families(raw.decode()) for s in fam.samples if "drill" in s.name}


def test_a_kill_drill_started_over_http_fails_over_and_is_reported(tmp_path):
    def edit(cfg):
        cfg["daemon"] = {"http": "127.0.0.1:0", "run_lease": "10s", "leader_lease": "6s", "poll": "0.5s",
                         "grace": "5s"}
        cfg["health"] = {"interval": "0.5s", "timeout": "2s", "miss_budget": 3, "blocklist_ttl": "3s",
                         "failback_after": "2s"}
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        for job in cfg["jobs"]:
            job["catchup"] = "none"  # an idle daemon: only the drill runs (and a top-of-hour fire, if one falls)
        cfg["jobs"][0]["transform"] = "transforms:slow_features"
        cfg["jobs"][0]["partitions"] = 8

    cfg = make_project(tmp_path / "p", end=future_end(), days=8, users=300, per_day=2000, edit=edit)
    with open(cfg.parent / "transforms.py", "a") as fh:
        fh.write(SLOW)
    d = HttpDaemon(cfg, tmp_path / "d.log")
    ledger = Ledger(f"sqlite:///{cfg.parent / '.skyfeast' / 'state.db'}")
    try:
        base = d.base_url()
        wait_for(lambda: _get(base + "/readyz")[0] == 200, 60, "the daemon to be ready")

        t0 = time.monotonic()
        code, started = _post(base + "/api/drills", {"provider": "aws", "mode": "kill", "job": "user_features"})
        assert code == 202, started
        assert time.monotonic() - t0 < 5  # answered at once: the drill runs in the background
        drill_id = started["drill_id"]
        assert (started["status"], started["provider"], started["mode"], started["job"]) == \
            ("running", "aws", "kill", "user_features")
        code, second = _post(base + "/api/drills", {"provider": "aws"})
        assert code == 409 and f"drill {drill_id} is running" in second["error"], second
        assert _json(base + f"/api/drills/{drill_id}")["outcome"] == "running"
        assert _json(base + "/api/drills")["running_here"] == drill_id

        # while it runs, the dispatch loop keeps beating (poll 0.5 s); the drill's run is its own thread
        worst_dispatch_age = 0.0

        def finished():
            nonlocal worst_dispatch_age
            health = json.loads(_get(base + "/healthz", timeout=5)[1])
            worst_dispatch_age = max(worst_dispatch_age, health["threads"].get("dispatch", 0.0))
            row = _json(base + f"/api/drills/{drill_id}")
            return row if row["outcome"] != "running" else None

        row = wait_for(finished, 150, "the drill's report", interval=0.5)
        took = time.monotonic() - t0
        report = row["report"]
        assert row["outcome"] == "passed", (report, d.text()[-3000:])
        assert worst_dispatch_age < 5, worst_dispatch_age
        assert report["completed"] and report["completed_on"] == "gcp" and report["chunks"] == 8
        assert report["drill_id"] == drill_id and report["recorded_as"] == "drill:user_features"
        assert row["run_id"] == report["run_id"] and row["detection_s"] == report["detection_s"] <= 2.0
        assert row["recovery_s"] == report["first_task_on_new_provider_s"] is not None
        assert report["restore_s"] is not None and report["failback_s"] is not None
        attempts = ledger.attempts(row["run_id"])
        assert [(a["provider"], a["outcome"]) for a in attempts][:1] == [("aws", "failed")]
        assert attempts[-1]["provider"] == "gcp" and attempts[-1]["outcome"] == "succeeded"
        assert _json(base + "/api/drills")["drills"][0]["id"] == drill_id
        audit = _json(base + "/api/actions")["actions"]
        assert [(a["action"], a["target"], a["outcome"]) for a in audit][-1:] == [("drill", "aws", "accepted")]
        assert ("drill", "aws", "refused") in [(a["action"], a["target"], a["outcome"]) for a in audit]

        # the daemon's metrics export it at the next scrape (the drill ended in this process)
        got = _drill_samples(base)
        assert got[("skyfeast_drill_detection_seconds", "aws", "kill")] == row["detection_s"]
        assert got[("skyfeast_drill_recovery_seconds", "aws", "kill")] == row["recovery_s"]
        assert got[("skyfeast_drill_passed", "aws", "kill")] == 1.0

        # the page: the drill's row with its times, and its attempts in the timeline, marked as a drill's
        code, page = _get(base + "/")
        html = page.decode()
        assert code == 200 and f'data-drill="{drill_id}"' in html
        assert f"{row['detection_s']:.1f} s" in html and f"{row['recovery_s']:.1f} s" in html
        drill_bars = re.findall(r'<rect class="bar (\w+) drill" data-outcome="\w+" data-run="(\d+)"', html)
        assert ("failed", str(row["run_id"])) in drill_bars and ("succeeded", str(row["run_id"])) in drill_bars
        print(f"drill over HTTP: {took:.1f} s to its report; detection {row['detection_s']} s, "
              f"recovery {row['recovery_s']} s")

        # a hang drill the daemon's shutdown interrupts: it is cancelled, lifts its fault (SIGCONT),
        # and reports failed (cancelled) before the daemon exits; nothing is left running
        code, hang = _post(base + "/api/drills", {"provider": "aws", "mode": "hang", "job": "user_features"})
        assert code == 202, hang
        wait_for(lambda: _json(base + f"/api/drills/{hang['drill_id']}")["run_id"], 90, "the hang drill's run")
        assert d.terminate(timeout=120) == 0, d.text()[-3000:]
        stopped = ledger.drill_report(hang["drill_id"])
        assert stopped["outcome"] == "failed" and stopped["report"]["cancelled"], stopped
        assert "cancelled: lifting the fault" in d.text() and "SIGSTOP" in stopped["report"]["fault"]
    finally:
        d.cleanup()
        ledger.close()
