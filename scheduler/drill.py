"""``skyfeast drill``: break the preferred provider of a job mid-run and measure recovery.

Against a cluster this process manages (``type: local``) the fault is real:
``kill`` SIGKILLs the Dask scheduler process, ``hang`` SIGSTOPs it (and
SIGCONTs it to restore). Against a remote cluster the provider is fenced
inside this process (its circuit is forced open), which exercises the same
failover path without touching the remote cluster. ``partition`` and
``storage-outage`` are not implemented yet and are refused.

The report holds: time to detection, time to the first finished chunk on the
new provider, run completion, rows, duplicate and lost windows, restore and
failback times, and each SLO of the scenario with pass/fail. Exit status 1
when an SLO is breached or the run did not complete.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from scheduler.cli import _print_json
from scheduler.config import load_config
from scheduler.errors import UsageError
from scheduler.policy import ProviderState, place
from scheduler.windows import latest_window, parse_time

DEFAULT_SLO = {"kill": {"max_detection_s": 2.0, "max_first_task_s": 30.0},
               "hang": {"max_detection_s": 10.0, "max_first_task_s": 40.0}}


def _scenario(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--scenario {path}: {exc}") from None
    if not isinstance(data, dict) or not set(data) <= {"mode", "job", "slo", "description"}:
        raise UsageError(f"--scenario {path}: expected a mapping with mode, job, slo, description")
    return data


def _wait(pred, timeout: float, step: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def cmd_drill(args: argparse.Namespace) -> int:
    from scheduler.commands import _runtime
    from scheduler.console import ProgressReporter, out

    scen = _scenario(args.scenario)
    mode = args.mode or scen.get("mode", "kill")
    if mode not in ("kill", "hang"):
        raise UsageError(f"--mode {mode}: not implemented yet (kill and hang are)")
    cfg = load_config(args.config)
    if args.provider not in cfg.providers:
        raise UsageError(f"unknown provider {args.provider!r}; defined: {sorted(cfg.providers)}")
    job_name = args.job or scen.get("job")
    jobs = [j for j in cfg.jobs if j.kind == "feature" and args.provider in cfg.allowed_providers(j)
            and len(cfg.allowed_providers(j)) > 1]
    if job_name:
        jobs = [j for j in jobs if j.name == job_name]
    if not jobs:
        raise UsageError(f"no feature job{' ' + repr(job_name) if job_name else ''} may run on {args.provider!r} "
                         "and fail over to another provider")
    job = jobs[0]
    slo = {**DEFAULT_SLO[mode], **(scen.get("slo") or {})}
    window = latest_window(job.schedule, parse_time("now"))

    with ProgressReporter(quiet=True) as reporter, _runtime(cfg, reporter) as runner:
        pool, ledger = runner.pool, runner.ledger
        cands = place(cfg.allowed_providers(job), pool.views())
        if not cands or cands[0] != args.provider:
            raise UsageError(f"{args.provider!r} is not {job.name!r}'s preferred provider now (order: {cands}); "
                             "the drill would not exercise failover")
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(o=runner.run_window(job, window, trigger="drill",
                                                                                force=True)), daemon=True)
        t.start()

        def mid_run():
            r = ledger.find_run(job.name, window.start, window.end)
            return r if r and r.status == "running" and r.partitions and ledger.chunks(r.id) else None

        run = _wait(mid_run, 180)
        if run is None:
            raise UsageError(f"{job.name} never got part-way on {args.provider}; is its window too small to drill?")
        conn = pool._clusters.get(args.provider)
        pid = getattr(conn, "scheduler_pid", None)
        t_fault = time.monotonic()
        if pid is not None:
            os.kill(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            how = f"{'SIGKILL' if mode == 'kill' else 'SIGSTOP'} of scheduler pid {pid}"
        else:
            pool.set_breaker(args.provider, pool.breaker(args.provider).__class__(ProviderState.DOWN, 99, t_fault))
            how = "fenced inside this process (remote cluster)"

        def detected():
            a = ledger.attempts(run.id)
            return (pool.breaker(args.provider).state is ProviderState.DOWN
                    or any(x["provider"] == args.provider and x["outcome"] == "failed" for x in a))

        _wait(detected, 120, 0.05)
        t_detect = time.monotonic()

        def first_task_elsewhere():
            attempts = {a["id"]: a["provider"] for a in ledger.attempts(run.id)}
            return any(attempts.get(c["attempt_id"]) not in (None, args.provider)
                       for c in ledger.chunks(run.id).values())

        _wait(first_task_elsewhere, 300, 0.05)
        t_first = time.monotonic()
        t.join(timeout=600)
        outcome = result.get("o")
        if mode == "hang" and pid is not None:
            os.kill(pid, signal.SIGCONT)
        t_restore0 = time.monotonic()
        restored = _wait(lambda: pool.breaker(args.provider).state is ProviderState.HEALTHY,
                         cfg.health.blocklist_ttl.total_seconds() + 120, 0.2)
        t_restored = time.monotonic()
        back = _wait(lambda: (place(cfg.allowed_providers(job), pool.views()) or [None])[0] == args.provider,
                     cfg.health.failback_after.total_seconds() + 30, 0.2)
        t_back = time.monotonic()
        rows = ledger.runs(job=job.name, limit=100_000)
        same = [r for r in rows if (r.window_start, r.window_end) == (window.start, window.end)]
        final = ledger.get_run(run.id)
        report = {
            "provider": args.provider, "mode": mode, "fault": how, "job": job.name,
            "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
            "detection_s": round(t_detect - t_fault, 3),
            "first_task_on_new_provider_s": round(t_first - t_fault, 3),
            "completed": bool(outcome and outcome.status == "succeeded"),
            "completed_on": outcome.provider if outcome else None,
            "rows_written": final.rows_written if final else None,
            "chunks": len(ledger.chunks(run.id)), "partitions": final.partitions if final else None,
            "duplicate_windows": max(0, len(same) - 1), "lost_windows": 0 if same else 1,
            "restore_s": round(t_restored - t_restore0, 3) if restored else None,
            "failback_s": round(t_back - t_restored, 3) if back else None,
        }
    checks = {
        "max_detection_s": report["detection_s"] <= slo["max_detection_s"],
        "max_first_task_s": report["first_task_on_new_provider_s"] <= slo["max_first_task_s"],
    }
    report["slo"] = {k: {"limit": slo[k], "ok": v} for k, v in checks.items()}
    ok = report["completed"] and all(checks.values()) and report["duplicate_windows"] == 0
    report["ok"] = ok
    if args.json:
        _print_json(report)
    else:
        for k, v in report.items():
            out.print(f"{k:>30}: {v}")
    return 0 if ok else 1
