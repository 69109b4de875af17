"""Operator commands: ``trigger``, ``backfill``, ``cancel``, ``cordon``/``uncordon``, ``reconcile``."""

from __future__ import annotations

import argparse
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from skyfeast.adapters.waiting import waiting
from skyfeast.scheduler.cli.common import (
    MAX_ID,
    add_config,
    add_json,
    install_signal_handlers,
    int_arg,
    job_named,
    parse_time_arg,
    print_json,
    progress_bar,
    seconds_arg,
)
from skyfeast.scheduler.errors import UsageError

if TYPE_CHECKING:
    from skyfeast.scheduler.timing.windows import Window

TERMINAL = ("succeeded", "partial", "failed", "cancelled", "upstream_failed")
EXIT_WAIT_TIMED_OUT = 3  # trigger --wait: the run did not finish in time (it goes on; see `skyfeast runs`)
BACKFILL_CONFIRM = 1000  # a backfill over more windows than this asks for --yes
BACKFILL_MAX = 100_000  # and one over more than this is refused: split it


def load_config(*args, **kwargs):
    """:func:`skyfeast.scheduler.config.load_config`, imported when a command runs: every command
    module loads for ``build_parser``, and the config models cost ~1 s of each start on a loaded host."""
    from skyfeast.scheduler.config import load_config as load

    return load(*args, **kwargs)


def register(sub) -> None:
    p = sub.add_parser("trigger", help="ask the daemon to run one window of a job (queued in the ledger)")
    add_config(p)
    add_json(p)
    p.add_argument("job")
    p.add_argument("--window", metavar="START/END", help="ISO-8601 bounds (default: the job's latest complete window)")
    p.add_argument("--wait", type=seconds_arg(0, 7 * 86400), metavar="SECONDS",
                   help=f"wait up to this long for the run to finish (exit {EXIT_WAIT_TIMED_OUT} if it has not)")
    p.add_argument("--allow-off-grid", action="store_true",
                   help="accept a --window that is not one of the job's scheduled windows")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("backfill", help="run every window of a job between two times (resumable)")
    add_config(p)
    add_json(p)
    p.add_argument("job")
    p.add_argument("--start", required=True, help="ISO-8601; windows starting at or after this")
    p.add_argument("--end", required=True, help="ISO-8601; windows ending at or before this")
    p.add_argument("--parallel", type=int, default=1, help="windows at once (default 1)")
    p.add_argument("--force", action="store_true", help="re-run windows that already succeeded")
    p.add_argument("--yes", action="store_true",
                   help=f"run a backfill of more than {BACKFILL_CONFIRM:,} windows (refused without it)")
    p.set_defaults(func=cmd_backfill, starts_clusters=True)

    p = sub.add_parser("cancel", help="cancel a queued or running run")
    add_config(p)
    p.add_argument("run_id", type=int_arg(1, MAX_ID))
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("cordon", help="keep new runs off a provider (persisted in the ledger)")
    add_config(p)
    p.add_argument("provider")
    p.add_argument("--reason", help="shown in `skyfeast status`")
    p.set_defaults(func=cmd_cordon)

    p = sub.add_parser("uncordon", help="let new runs use a cordoned provider again")
    add_config(p)
    p.add_argument("provider")
    p.set_defaults(func=cmd_cordon)

    p = sub.add_parser("reconcile", help="copy offline outputs written during failovers to the primary storage",
                       description="Copies every part file that a failed-over run wrote outside the primary "
                                   "provider's storage (offline.primary) to the same key there, removes stale "
                                   "parts, and writes the primary's manifest, so that Feast historical retrieval "
                                   "sees every window. The daemon's leader also does this every "
                                   "offline.reconcile_every. Exit 1 when something is still pending.")
    add_config(p)
    add_json(p)
    p.add_argument("--limit", type=int, default=None, help="runs per pass (default: offline.reconcile_batch)")
    p.add_argument("--all", action="store_true", help="repeat passes until nothing is pending or a pass fails")
    p.set_defaults(func=cmd_reconcile)


def cmd_trigger(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.api.actions import queue, trigger_window
    from skyfeast.scheduler.cli.console import err, out
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    job, window = trigger_window(cfg, args.job, args.window, allow_off_grid=args.allow_off_grid)
    ledger = open_ledger(cfg)
    try:
        queued = queue(ledger, job, window)
        run_id, status = queued["run_id"], queued["status"]
        leader = ledger.leader()
        leading = leader is not None and datetime.fromisoformat(leader["lease_until"]) > datetime.now(timezone.utc)
        if not leading and status == "queued":
            err.print("skyfeast: warning: no daemon leads this ledger now; the run waits in the queue until one "
                      "does (start `skyfeast daemon`, or use `skyfeast run` to run it here)", markup=False)
        deadline = time.monotonic() + (args.wait or 0)
        with waiting(f"run {run_id} ({job.name} {window}) to finish", args.wait):  # no --wait: over at once
            while args.wait and status not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.5)
                status = ledger.get_run(run_id).status
        row = ledger.get_run(run_id)
    finally:
        ledger.close()
    if args.json:
        print_json({"run_id": run_id, "job": job.name, "window": {"start": window.start.isoformat(),
                     "end": window.end.isoformat()}, "status": status, "error": row.error if row else None})
    else:
        out.print(f"run {run_id}: {job.name} {window} is {status}" + (f": {row.error}" if row and row.error else ""))
    if args.wait and status not in TERMINAL:
        err.print(f"skyfeast: --wait: run {run_id} is still {status} after {args.wait:g}s; it goes on "
                  f"(exit {EXIT_WAIT_TIMED_OUT})", markup=False)
        return EXIT_WAIT_TIMED_OUT
    if args.wait:
        return 0 if status == "succeeded" else 3 if status == "partial" else 1
    return 0


def backfill_windows(job, start, end, limit: int = 100_000) -> list[Window]:
    """Windows of ``job``'s schedule that lie inside [start, end]; at most ``limit`` + 1 are listed
    (enough to tell that there are more than ``limit``)."""
    from skyfeast.scheduler.timing.windows import next_fires, window_for_fire

    if end <= start:
        raise UsageError("--end must be after --start")
    out: list[Window] = []
    t = start
    while True:
        fires = next_fires(job.schedule, t, 500)
        if not fires:
            break
        for f in fires:
            if f > end:
                return out
            w = window_for_fire(job.schedule, f)
            if w.start >= start:
                out.append(w)
            if len(out) > limit:
                return out
        t = fires[-1]
    return out


def cmd_backfill(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.app import open_runtime
    from skyfeast.scheduler.cli.console import ProgressReporter, err

    # the arguments first (a 10-year backfill is refused at once), then the whole config as `run` checks it
    cfg = load_config(args.config, check_imports=False, check_feast=False)
    job = job_named(cfg, args.job)
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    end = parse_time_arg(args.end, "--end")
    if end > datetime.now(timezone.utc):
        raise UsageError(f"--end: {args.end!r} is after now; a window runs once it has closed")
    limit = BACKFILL_MAX if args.yes else BACKFILL_CONFIRM
    windows = backfill_windows(job, parse_time_arg(args.start, "--start"), end, limit=limit)
    if not windows:
        raise UsageError(f"no window of {job.name!r} lies inside {args.start} .. {args.end}")
    if len(windows) > limit:
        if args.yes:
            raise UsageError(f"the backfill spans more than {BACKFILL_MAX:,} windows of {job.name!r}; split it")
        raise UsageError(f"the backfill spans more than {BACKFILL_CONFIRM:,} windows of {job.name!r} "
                         f"(from {args.start} to {args.end}); add --yes to run them all")
    from skyfeast.scheduler.ledger import reach_ledger

    cfg = load_config(args.config, meanwhile=reach_ledger)  # the ledger reached while the slow checks run
    job = job_named(cfg, args.job)
    results = {}
    lease_wait = cfg.daemon.run_lease.total_seconds() * 2 + 5
    bar = progress_bar(f"backfill {job.name}", quiet=args.json)
    with ProgressReporter(quiet=True) as reporter, contextlib.ExitStack() as stack:
        rt = stack.enter_context(open_runtime(cfg, reporter))
        runner = rt.runner
        stop = runner.stop
        install_signal_handlers(lambda sig: stop.set())
        with bar:
            task = bar.add_task("", total=len(windows))

            def one(w: Window):
                if stop.is_set():
                    return None
                o = runner.run_window(job, w, trigger="backfill", force=args.force)
                # a window still "running" under a dead process's lease: wait for the lease, then resume it
                give_up = time.monotonic() + lease_wait
                with waiting(f"{job.name} {w}, left running by another process, to be released (its lease to "
                             "expire if that process is gone)", lease_wait):
                    while (o.status == "skipped" and o.reason == "already running" and time.monotonic() < give_up
                           and not stop.is_set()):
                        time.sleep(1)
                        o = runner.run_window(job, w, trigger="backfill", force=args.force)
                results[w] = o
                bar.advance(task)
                if bar.disable and not args.json and o.status != "failed":  # failures: one line each, below
                    err.print(f"{w}: {o.status} {o.reason or ''}".rstrip(), markup=False)
                return o

            with ThreadPoolExecutor(max_workers=args.parallel, thread_name_prefix="skyfeast-backfill") as ex:
                list(ex.map(one, windows))
        code = _backfill_report(args, job, windows, results)  # every run recorded: out before any teardown
        if stop.is_set():
            code = 130  # interrupted: re-running the same command resumes
        if getattr(args, "process_exit", False) and rt.leave_to_exit():
            stack.pop_all()  # the local clusters were killed: main() ends the process at once (as `run`)
            args.exit_at_once = True
    return code


def _backfill_report(args: argparse.Namespace, job, windows: list, results: dict) -> int:
    """Print a backfill's outcome (a table and a summary line, or ``--json``); its exit status."""
    from skyfeast.scheduler.cli.console import err, out, outcomes_table

    outcomes = [results[w] for w in windows if w in results]
    missing = len(windows) - len(outcomes)
    ok = missing == 0 and all(o.status in ("succeeded", "skipped") and o.reason != "already running"
                              for o in outcomes)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    if args.json:
        print_json({"ok": ok, "job": job.name, "windows": len(windows), "counts": counts, "not_started": missing,
                     "runs": [o.as_dict() for o in outcomes]})
    else:
        failed = [o for o in outcomes if o.status == "failed"]
        shown = [o for o in outcomes if o.status != "failed"]
        if shown and len(windows) <= 200:  # a long backfill: the summary, not a table of thousands
            out.print(outcomes_table(shown))
        for o in failed:
            err.print(f"{o.window}: failed ({o.failure_class}): {o.error}", markup=False)
        out.print(f"{len(windows)} window(s): " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                  + (f", {missing} not started (interrupted; re-run the same command to resume)" if missing else ""))
    return 0 if ok else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.api.actions import cancel
    from skyfeast.scheduler.cli.console import out
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    ledger = open_ledger(cfg)
    try:
        status = cancel(ledger, args.run_id)["status"]
    finally:
        ledger.close()
    out.print(f"run {args.run_id}: {status}")
    return 0


def cmd_cordon(args: argparse.Namespace) -> int:
    """``cordon``: new runs avoid the provider until ``uncordon``; running ones finish."""
    from skyfeast.scheduler.api.actions import cordon, uncordon
    from skyfeast.scheduler.cli.console import out
    from skyfeast.scheduler.errors import NotFound
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    if args.provider not in cfg.providers:  # before the ledger opens
        raise NotFound(f"unknown provider {args.provider!r}; defined: {sorted(cfg.providers)}")
    ledger = open_ledger(cfg)
    try:
        if args.command == "cordon":
            cordon(cfg, ledger, args.provider, reason=args.reason)
            out.print(f"provider {args.provider}: cordoned" + (f" ({args.reason})" if args.reason else ""))
        else:
            was = uncordon(cfg, ledger, args.provider)["was_cordoned"]
            out.print(f"provider {args.provider}: " + ("uncordoned" if was else "was not cordoned"))
    finally:
        ledger.close()
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """``reconcile``: bring the primary offline location up to date (see skyfeast.scheduler.run.reconcile)."""
    from skyfeast.adapters import make_store
    from skyfeast.scheduler.cli.console import out
    from skyfeast.scheduler.ledger import open_ledger
    from skyfeast.scheduler.run.reconcile import reconcile

    if args.limit is not None and not 1 <= args.limit <= 100_000:
        raise UsageError(f"--limit {args.limit}: must be between 1 and 100000")
    cfg = load_config(args.config, check_imports=False, check_feast=False)
    stores = {name: make_store(p.storage, cfg.base_dir) for name, p in cfg.providers.items()}
    ledger = open_ledger(cfg)
    try:
        reports = []
        while True:
            rep = reconcile(cfg, ledger, stores, limit=args.limit, sweep=not reports)  # --all: one sweep, not one a pass
            reports.append(rep)
            if not (args.all and rep.ok and rep.runs and rep.pending_left):
                break
    finally:
        ledger.close()
    total = {"primary": cfg.primary_provider, "ok": all(r.ok for r in reports), "passes": len(reports),
             "reconciled": sum(r.as_dict()["reconciled"] for r in reports),
             "failed": sum(r.as_dict()["failed"] for r in reports),
             "copied_files": sum(r.as_dict()["copied_files"] for r in reports),
             "copied_bytes": sum(r.as_dict()["copied_bytes"] for r in reports),
             "pending_left": reports[-1].pending_left, "stopped": reports[-1].stopped,
             "staged_removed": sum(r.staged_removed for r in reports),
             "runs": [run for r in reports for run in r.as_dict()["runs"]]}
    if args.json:
        print_json(total)
    else:
        for run in total["runs"]:
            what = f"error: {run['error']}" if run["error"] else f"{run['copied']} part(s) copied, {run['removed']} stale removed"
            out.print(f"{run['job']} {run['window']}: {what}")
        out.print(f"primary {total['primary']}: {total['reconciled']} run(s) reconciled, {total['failed']} failed, "
                  f"{total['pending_left']} pending" + (f"; stopped: {total['stopped']}" if total["stopped"] else ""))
        if total["staged_removed"]:
            out.print(f"{total['staged_removed']} leftover staged part(s) of succeeded runs removed")
    return 0 if total["ok"] and total["pending_left"] == 0 else 1


__all__ = ["backfill_windows", "cmd_backfill", "cmd_cancel", "cmd_cordon", "cmd_reconcile", "cmd_trigger", "register"]
