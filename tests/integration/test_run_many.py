"""``skyfeast run`` over many jobs: runs at once up to ``--parallel``, a job after its upstream, one
summary line that counts what never started, and a SIGTERM that leaves the rest unstarted."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime

import pytest

from tests.integration.conftest import AT, BIN, make_project, skyfeast, skyfeast_json, watch_exit

pytestmark = pytest.mark.integration

BAD = '''
def explode(events, window):
    raise RuntimeError("this transform always fails")
'''


SLOW = '''

def slow_user_features(events, window):  # appended by test_run_many: a run that lasts a second at least
    import time

    time.sleep(1.0)
    return user_features(events, window)
'''


def _many(n: int, *, broken: bool, transform: str | None = None):
    def edit(data):
        base = next(j for j in data["jobs"] if j["name"] == "user_features")
        model = next(j for j in data["jobs"] if j["name"] == "risk_score")
        jobs = [{**base, "name": f"f{i}", "retries": 0, **({"transform": transform} if transform else {})}
                for i in range(n)]
        if broken:
            jobs.append({**base, "name": "broken", "transform": "bad:explode", "retries": 0, "providers": ["aws"]})
            jobs.append({**model, "name": "scored_broken", "source": {"type": "job", "job": "broken"}})
        data["jobs"] = jobs
    return edit


def _intervals(project, cfg):
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--limit", "100", cwd=project)
    assert code == 0
    return [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
            for r in runs["runs"] if r["status"] == "succeeded"]


def test_run_runs_jobs_at_once_and_counts_what_never_started(tmp_path):
    project = tmp_path / "p"
    cfg = make_project(project, edit=_many(6, broken=True))
    (project / "bad.py").write_text(BAD)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, "--parallel", "4", cwd=project)
    assert code == 1, report
    status = {r["job"]: r["status"] for r in report["runs"]}
    assert status == {**{f"f{i}": "succeeded" for i in range(6)}, "broken": "failed",
                      "scored_broken": "upstream_failed"}, status
    held = next(r for r in report["runs"] if r["job"] == "scored_broken")
    assert held["attempts"] == 0 and held["reason"].startswith("upstream 'broken' failed (run "), held
    assert report["not_started"] == []
    # at least two runs were executing at the same time
    spans = sorted(_intervals(project, cfg))
    assert len(spans) == 6
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans

    # the ledger holds the downstream back, with no attempt spent; a fixed upstream requeues it
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--job", "scored_broken", cwd=project)
    (row,) = runs["runs"]
    assert row["status"] == "upstream_failed" and row["attempts"] == 0 and row["attempt_log"] == [], row
    (project / "bad.py").write_text("from transforms import user_features as explode\n")
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, "--job", "broken", cwd=project)
    assert code == 0 and report["runs"][0]["status"] == "succeeded", report
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--job", "scored_broken", cwd=project)
    assert [r["status"] for r in runs["runs"]] == ["queued"], runs  # a daemon would pick it up now
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, "--job", "scored_broken", cwd=project)
    assert code == 0 and report["runs"][0]["status"] == "succeeded", report


def test_run_summary_line_and_interrupt(tmp_path):
    project = tmp_path / "p"
    # a small window runs in a fraction of a second once the clusters are up, so seven of them could
    # all end before the SIGTERM lands (CI, 2026-12-07): each run here lasts a second at least
    cfg = make_project(project, edit=_many(8, broken=False, transform="transforms:slow_user_features"))
    with open(project / "transforms.py", "a") as fh:
        fh.write(SLOW)
    # one at a time, then SIGTERM once the first run ended: the summary counts the rest
    log = (tmp_path / "err.txt").open("w")
    proc = subprocess.Popen([str(BIN / "skyfeast"), "run", "-c", str(cfg), "--at", AT, "--parallel", "1"],
                            cwd=project, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and "[1/8]" not in (tmp_path / "err.txt").read_text():
        time.sleep(0.2)
    assert "[1/8]" in (tmp_path / "err.txt").read_text(), (tmp_path / "err.txt").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout
    summary = stdout.strip().splitlines()[-1]
    ran = int(summary.split(" succeeded")[0].rsplit(" ", 1)[-1])
    assert summary.startswith("8 job(s): ") and "never started" in summary, summary
    never = int(summary.split(" never started")[0].rsplit(" ", 1)[-1])
    assert 1 <= ran and never >= 1 and ran + never <= 8, summary
    # the rest runs afterwards; the runs that finished are skipped as already done
    proc = skyfeast("run", "-c", str(cfg), "--at", AT, "--parallel", "4", "--json", cwd=project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert {r["status"] for r in report["runs"]} <= {"succeeded", "skipped"} and not report["not_started"]
    assert sum(r["status"] == "skipped" for r in report["runs"]) >= ran


def test_run_prints_its_result_then_exits_without_tearing_its_local_clusters_down(tmp_path):
    """The result is out before any teardown, and the process then ends at once: the local clusters it
    started are killed, not shut down gracefully (about 2 s), and none of their processes outlives it."""
    project = tmp_path / "p"
    cfg = make_project(project)
    got = watch_exit(["run", "-c", str(cfg), "--at", AT, "--job", "user_features", "--json"], project,
                     tmp_path / "stderr")
    assert got.returncode == 0 and got.report["runs"][0]["status"] == "succeeded", got.report
    assert got.started >= 3, got.started  # a scheduler and workers ran under it
    assert got.result_to_exit_s < 1.0, f"{got.result_to_exit_s:.2f} s from the result to the exit"
    assert not got.outlived, f"cluster processes outlived skyfeast run: {got.outlived}"
    # the health monitor's probe processes ended before the exit: multiprocessing's resource
    # tracker finds none of their semaphores left to clean up (it warned on stderr when it did)
    assert "leaked" not in got.stderr, got.stderr[-2000:]
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--job", "user_features", cwd=project)
    assert [r["status"] for r in runs["runs"]] == ["succeeded"], runs  # recorded before the exit
