"""Provider A's Dask scheduler is SIGKILLed mid-run: the run completes on provider B,
redoing only the chunks A had not finished, and the online store is complete."""

from __future__ import annotations

import os
import signal
import time

import pandas as pd
import psutil
import pytest

from skyfeast.scheduler.ledger import Ledger
from tests.chaos.conftest import add_slow_transform, slow_job, wait_for
from tests.chaos.test_daemon_crash import _assert_online_equals_fresh_computation
from tests.integration.conftest import AT, BIN, Spawned, make_project, skyfeast_json

pytestmark = pytest.mark.chaos

def _schedulers_of(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return sorted((p for p in kids if "dask_scheduler" in " ".join(p.cmdline())), key=lambda p: p.create_time())


def test_scheduler_sigkill_mid_run_fails_over_and_resumes_chunks(tmp_path):
    def edit(cfg):
        slow_job(cfg, partitions=8)
        cfg["jobs"][0]["retries"] = 0

    cfg = make_project(tmp_path / "p", users=600, per_day=4000, edit=edit)
    add_slow_transform(cfg.parent, seconds=0.7)
    ledger = Ledger(f"sqlite:///{cfg.parent / '.skyfeast' / 'state.db'}")
    proc = Spawned([str(BIN / "skyfeast"), "run", "-c", str(cfg), "--job", "user_features", "--at", AT,
                             "--json"], cfg.parent)
    try:
        def mid_run():
            runs = ledger.runs(status="running")
            if runs and runs[0].partitions and 1 <= len(ledger.chunks(runs[0].id)) <= 4:
                return runs[0]
            return None

        run = wait_for(mid_run, 120, "the run to be part-way through on aws")
        done_before = ledger.chunks(run.id)
        (aws_scheduler,) = _schedulers_of(proc.pid)
        os.kill(aws_scheduler.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    final = ledger.get_run(run.id)
    attempts = ledger.attempts(run.id)
    assert final.status == "succeeded" and final.provider == "gcp"
    assert [(a["provider"], a["outcome"], a["failure_class"]) for a in attempts] == [
        ("aws", "failed", "infrastructure"), ("gcp", "succeeded", None)]
    detected = pd.Timestamp(attempts[0]["ended_at"]) - pd.Timestamp(attempts[0]["started_at"])
    assert detected.total_seconds() < 120
    after = ledger.chunks(run.id)
    assert len(after) == final.partitions == 8
    # the online store is SQLite: chunks are key ranges, fixed by aws' attempt and reused by gcp's
    assert ledger.key_ranges(run.id) is not None
    for chunk, stats in done_before.items():
        assert after[chunk]["attempt_id"] == stats["attempt_id"], "a finished chunk was recomputed"
    aws_attempt = {a["id"] for a in attempts if a["provider"] == "aws"}
    gcp_attempt = {a["id"] for a in attempts if a["provider"] == "gcp"}
    kept = {c for c, s in after.items() if s["attempt_id"] in aws_attempt}
    redone = {c for c, s in after.items() if s["attempt_id"] in gcp_attempt}
    # a chunk may also finish on aws between the snapshot above and the kill (CI, 2026-12-06):
    # it is kept like the others; gcp redoes exactly the chunks aws had not finished
    assert set(done_before) <= kept and redone == set(range(8)) - kept and redone, (done_before, kept, redone)
    assert time.monotonic() - killed_at < 170
    # chunks done before the kill were staged on aws and published by gcp from there (not
    # recomputed, above): every published part is on gcp's storage, and aws's staging is empty
    parts = [c["file"] for c in after.values() if c["file"]]
    assert parts and all("/data/gcp/offline/" in f for f in parts), parts
    # aws's staging holds no part of a chunk that counts: the kept chunks' parts were published
    # from there and removed. A task that aws's workers were still running when its scheduler was
    # killed can finish its staging write after that clean-up (CI, 2026-12-07: part 2 of a chunk
    # gcp redid); such an orphan is only ever a part of a chunk gcp redid, no reader sees it, and
    # the next reconcile pass removes it
    staging = cfg.parent / "data" / "aws" / "staging"
    left = {int(p.stem.rsplit("-part", 1)[1]) for p in staging.rglob("*.parquet")}
    assert left <= redone, (left, redone)
    code, rec = skyfeast_json("reconcile", "-c", str(cfg), cwd=cfg.parent)
    assert code == 0 and rec["staged_removed"] == len(left) and rec["reconciled"] == 1, rec
    assert not list(staging.rglob("*.parquet"))
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "risk_score", "--at", AT, cwd=cfg.parent)
    assert code == 0, report
    assert report["runs"][0]["rows"] == final.rows_written
    ledger.close()
    _assert_online_equals_fresh_computation(cfg.parent, pd.Timestamp("2026-03-02T12:00:00Z"))
