"""The daemon's HTTP surface under faults, on a real quickstart daemon (real Dask, SQLite ledger):

* a thread dies: /healthz turns 503 naming it within 5 s, while the process still runs;
* aws's Dask scheduler is SIGKILLed mid-run: /metrics counts the failover aws -> gcp and
  shows aws degraded or down at some scrape.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skyfeast.scheduler.control.liveness import INJECT
from skyfeast.scheduler.ledger import Ledger
from tests.chaos.conftest import DaemonProc, future_end, wait_for
from tests.chaos.test_provider_failover import _schedulers_of
from tests.integration.conftest import BIN, make_project

pytestmark = pytest.mark.chaos
SERVING = re.compile(r"on http://127\.0\.0\.1:(\d+)")


class HttpDaemon(DaemonProc):
    """``skyfeast -v daemon -c CFG ARGS...`` in its own process group, its output in ``log``."""

    def __init__(self, cfg: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(BIN / "skyfeast"), "-v", "daemon", "-c", str(cfg), *args], cwd=cfg.parent,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    def text(self) -> str:
        return self.path.read_text()

    def base_url(self, timeout: float = 120) -> str:
        m = wait_for(lambda: self.proc.poll() is None and SERVING.search(self.text()), timeout, "the HTTP server")
        return f"http://127.0.0.1:{m.group(1)}"


def _get(url: str | urllib.request.Request, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: dict, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return _get(req, timeout)


def _try_get(url: str) -> tuple[int, bytes] | None:
    try:
        return _get(url, timeout=2)
    except OSError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fast(every: str):
    def edit(cfg):
        cfg["daemon"] = {"run_lease": "4s", "leader_lease": "3s", "poll": "0.5s", "grace": "5s"}
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        for job in cfg["jobs"]:
            job["schedule"] = {"type": "interval", "every": every}
    return edit


def test_healthz_turns_503_naming_a_dead_thread_before_the_daemon_exits(tmp_path):
    # no scheduled fire for half an hour: the first run (and with it the heartbeat thread, which
    # the fault kills at its first beat) starts only when the test queues one, after it has seen
    # /healthz answer 200. A 3 s schedule raced the test's first request (CI, 2026-12-06).
    anchor = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=30)

    def edit(cfg):
        _fast("1h")(cfg)
        for job in cfg["jobs"]:
            job["schedule"]["anchor"] = anchor.strftime("%Y-%m-%dT%H:%M:%SZ")

    cfg = make_project(tmp_path / "p", end=future_end(), users=200, per_day=1000, edit=edit)
    port = _free_port()
    d = HttpDaemon(cfg, tmp_path / "d.log", "--http", f"127.0.0.1:{port}", env={INJECT: "heartbeat"})
    try:
        base = d.base_url()
        assert base.endswith(f":{port}")
        code, raw = wait_for(lambda: _try_get(base + "/healthz"), 30, "/healthz to answer")
        assert code == 200 and json.loads(raw)["dead"] == {}, (code, raw)
        start, end = anchor - timedelta(hours=2), anchor - timedelta(hours=1)  # closed; before the grid starts
        window = f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}"
        code, raw = _post(base + "/api/trigger", {"job": "user_features", "window": window, "allow_off_grid": True})
        assert code == 200 and json.loads(raw)["status"] == "queued", (code, raw)
        died_at = failing_at = None
        body = {}
        deadline = time.monotonic() + 180
        while d.proc.poll() is None and time.monotonic() < deadline:
            if died_at is None and "thread heartbeat died" in d.text():
                died_at = time.monotonic()
            try:
                code, raw = _get(base + "/healthz", timeout=2)
            except OSError:
                code, raw = None, b""
            if code == 503 and failing_at is None:
                failing_at, body = time.monotonic(), json.loads(raw)
            if failing_at is not None and died_at is not None:
                break
            time.sleep(0.1)
        assert failing_at is not None and died_at is not None, d.text()[-3000:]
        assert "heartbeat" in body["dead"] and "InjectedFault" in body["dead"]["heartbeat"], body
        # the death is logged before it is served or after: either way within 5 s of each other
        assert abs(failing_at - died_at) < 5, (failing_at - died_at, body)
        assert d.proc.wait(timeout=120) == 70
    finally:
        d.cleanup()


SLOW = '''

import time as _time


def slow_features(events, window):
    _time.sleep(0.7)
    return user_features(events, window)
'''


class Scraper(threading.Thread):
    """Scrapes /metrics every 0.3 s; keeps the largest value seen of each series."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.stop, self.peak = base, threading.Event(), {}

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                _, raw = _get(self.base + "/metrics", timeout=3)
            except OSError:
                continue
            for fam in text_string_to_metric_families(raw.decode()):
                for s in fam.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    self.peak[key] = max(self.peak.get(key, 0.0), s.value)

    def value(self, name: str, **labels) -> float:
        want = set(labels.items())
        return max((v for (n, lab), v in self.peak.items() if n == name and want <= set(lab)), default=0.0)


def test_metrics_count_a_failover_and_show_the_provider_down(tmp_path):
    def edit(cfg):
        _fast("20s")(cfg)
        cfg["daemon"]["http"] = "127.0.0.1:0"  # the config key; port 0: the daemon prints the one it got
        cfg["daemon"]["run_lease"] = "10s"
        cfg["daemon"]["leader_lease"] = "6s"
        cfg["jobs"] = cfg["jobs"][:1]
        cfg["jobs"][0].update(transform="transforms:slow_features", partitions=8, retries=0)

    cfg = make_project(tmp_path / "p", end=future_end(), users=600, per_day=4000, edit=edit)
    with open(cfg.parent / "transforms.py", "a") as fh:
        fh.write(SLOW)
    ledger = Ledger(f"sqlite:///{cfg.parent / '.skyfeast' / 'state.db'}")
    d = HttpDaemon(cfg, tmp_path / "d.log")
    scraper = None
    try:
        scraper = Scraper(d.base_url())
        scraper.start()

        def mid_run():
            runs = ledger.runs(status="running")
            if runs and runs[0].partitions and 1 <= len(ledger.chunks(runs[0].id)) <= 4:
                return runs[0]
            return None

        run = wait_for(mid_run, 150, "a run part-way through on aws")
        aws_scheduler = _schedulers_of(d.pid)[0]
        os.kill(aws_scheduler.pid, signal.SIGKILL)
        wait_for(lambda: ledger.get_run(run.id).status == "succeeded", 150, "the run to finish on gcp")
        assert ledger.get_run(run.id).provider == "gcp"
        wait_for(lambda: scraper.value("skyfeast_failovers_total", from_provider="aws", to_provider="gcp") >= 1,
                 10, "the failover in /metrics")
        assert scraper.value("skyfeast_failovers_total", from_provider="aws", to_provider="gcp",
                             cause="infrastructure") >= 1
        wait_for(lambda: scraper.value("skyfeast_runs_total", skyfeast_job="user_features", status="succeeded") >= 1, 10,
                 "the run in /metrics")
        assert max(scraper.value("skyfeast_provider_state", provider="aws", state=s) for s in ("down", "degraded")) == 1
        assert scraper.value("skyfeast_attempts_total", provider="aws", outcome="failed") >= 1
        assert scraper.value("skyfeast_leader") == 1
        assert scraper.value("feast_materialization_result_total", feature_view="user_features",
                             status="success") >= 1
        assert scraper.value("skyfeast_ledger_query_duration_seconds_count", op="claim") >= 1
        assert scraper.value("skyfeast_ledger_query_duration_seconds_count", op="heartbeat") >= 1
        assert d.terminate(timeout=120) == 0
    finally:
        if scraper is not None:
            scraper.stop.set()
        d.cleanup()
        ledger.close()
