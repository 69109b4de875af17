"""``skyfeast run``: run jobs now for their latest complete window, wait, summarise."""

from __future__ import annotations

import argparse
import contextlib

from skyfeast.scheduler.cli.common import (
    add_config,
    add_json,
    failed_status,
    install_signal_handlers,
    parse_at,
    print_json,
    require_closed,
)
from skyfeast.scheduler.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("run", help="run jobs now for their latest complete window, wait, summarise",
                       description="Run jobs now for their latest complete window, wait, and summarise.",
                       epilog="exit status: 0 every run succeeded; 1 a run failed, or some never started; "
                              "2 bad config or arguments, or every run that failed failed on its input (a data or "
                              "config failure); 3 no run failed, but a model group's run is partial "
                              "(some of its models failed and their fields were not written); 130 interrupted")
    add_config(p)
    add_json(p)
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="job to run (repeatable; default: all). Upstream jobs are not added implicitly")
    p.add_argument("--once", action="store_true",
                   help="run one window per job and exit (the default; accepted for scripts)")
    p.add_argument("--at", help="run the window that is latest at this ISO-8601 instant (default: now)")
    p.add_argument("--force", action="store_true", help="re-run windows that already succeeded")
    p.add_argument("--parallel", type=_positive, metavar="N",
                   help="runs at once (default: the config's daemon.max_parallel); a job still waits for "
                        "its upstream when both are selected")
    p.set_defaults(func=cmd_run, starts_clusters=True)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1024, got {text!r}")
    return n


def _select_jobs(cfg, names: list[str]):
    if not names:
        return list(cfg.jobs)
    known = {j.name for j in cfg.jobs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--job: unknown job(s) {unknown}; defined: {sorted(known)}")
    return [j for j in cfg.jobs if j.name in names]


def cmd_run(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.app import open_runtime
    from skyfeast.scheduler.cli.console import ProgressReporter
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.run.runner import order_jobs
    from skyfeast.scheduler.timing.windows import job_window

    at = parse_at(args.at)  # arguments before files: a bad --at fails fast
    from skyfeast.scheduler.ledger import reach_ledger

    cfg = load_config(args.config, meanwhile=reach_ledger)  # reach the ledger while the slow checks run
    jobs = order_jobs(_select_jobs(cfg, args.job))
    if not jobs:
        from skyfeast.scheduler.cli.console import err

        err.print(f"nothing to run: {args.config} defines no jobs", markup=False)
        if args.json:
            print_json({"ok": True, "at": at.isoformat(), "runs": [], "not_started": []})
        return 0
    windows = {job.name: job_window(job, at) for job in jobs}
    for window in windows.values():  # before anything starts: a window in the future is a usage error
        require_closed(window, "--at")
    from skyfeast.scheduler.errors import ConfigError
    from skyfeast.scheduler.run.preflight import group_problems

    problems = group_problems(cfg, jobs)  # a model group that cannot score: exit 2 before any cluster starts
    if problems:
        raise ConfigError(problems)
    parallel = args.parallel or cfg.daemon.max_parallel
    with contextlib.ExitStack() as stack:
        reporter = stack.enter_context(ProgressReporter(quiet=args.json, total=len(jobs) if len(jobs) > 1 else None))
        rt = stack.enter_context(open_runtime(cfg, reporter))
        runner = rt.runner
        install_signal_handlers(lambda sig: runner.stop.set())
        outcomes, not_started = run_concurrently(runner, jobs, windows, parallel=parallel, force=args.force)
        reporter.close()  # the bars end before the summary
        code = _report(args, at, outcomes, not_started, runner.stop.is_set())
        if getattr(args, "process_exit", False) and rt.leave_to_exit():
            # This is the process's own command line, every run is recorded in the ledger and the
            # result is out: the local clusters' processes were killed without a graceful shutdown,
            # and main() ends the process at once instead of closing the runtime (the same as
            # ``skyfeast materialize``; clusters elsewhere are always closed gracefully)
            stack.pop_all()
            args.exit_at_once = True
    return code


def _report(args: argparse.Namespace, at, outcomes: list, not_started: list, interrupted: bool) -> int:
    """Print the runs' outcome (a table and a summary line, or ``--json``); the exit status."""
    from skyfeast.scheduler.cli.console import out, outcomes_table

    ok = all(o.status in ("succeeded", "skipped") for o in outcomes) and not interrupted and not not_started
    # only some models of a group written, nothing else wrong: exit 3, not 1
    partial = not ok and not interrupted and not not_started and \
        all(o.status in ("succeeded", "skipped", "partial") for o in outcomes)
    if args.json:
        print_json({"ok": ok, "at": at.isoformat(), "runs": [o.as_dict() for o in outcomes],
                    "not_started": [{"job": j.name, "reason": why} for j, why in not_started]})
    else:
        shown = outcomes if len(outcomes) <= SHOW_ALL else [o for o in outcomes if o.status != "succeeded"]
        if shown:
            out.print(outcomes_table(shown))
        out.print(summary(outcomes, not_started), markup=False)
    if interrupted:
        return 130  # interrupted (SIGINT/SIGTERM): unfinished windows were released for resume
    if ok or partial:
        return 0 if ok else 3
    # every failure the input's (a missing column, a null key, a file from the future...): 2, as for
    # any bad input; runs whose upstream failed do not count, and a partial group run counts as a
    # failure a retry may mend (its models' own errors)
    return failed_status(["partial" if o.status == "partial" else o.failure_class for o in outcomes
                          if o.status not in ("succeeded", "skipped", "upstream_failed")])


SHOW_ALL = 50  # above this many runs the table lists only those that did not succeed


def run_concurrently(runner, jobs: list, windows: dict, *, parallel: int, force: bool):
    """Run each job's window, up to ``parallel`` at once; a job starts after its upstreams (those
    selected) ended, and independent branches run at once; one whose upstream failed is recorded ``upstream_failed`` without an
    attempt.  Returns (outcomes in ``jobs`` order, [(job, why)] never started: interrupted)."""
    from concurrent.futures import ThreadPoolExecutor

    from skyfeast.scheduler.app.dag import WindowDags

    results: dict[str, object] = {}
    skipped: dict[str, str] = {}

    def run_one(item) -> bool:
        job, window, _ = item
        if runner.stop.is_set():
            skipped[job.name] = "interrupted before it started"
            return False
        results[job.name] = runner.run_window(job, window, trigger="manual", force=force)
        return True

    def release(items) -> None:
        for job, _, _ in items:
            skipped[job.name] = "interrupted before it started"

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="skyfeast-run") as pool:
        futures = []
        dags = WindowDags([(j, windows[j.name], None) for j in jobs], submit=lambda task: futures.append(
            pool.submit(task)), run_one=run_one, release=release)
        dags.start()
        dags.done.wait()
        for fut in list(futures):
            fut.result()
    outcomes = [results[j.name] for j in jobs if j.name in results]
    return outcomes, [(j, skipped[j.name]) for j in jobs if j.name in skipped]


def summary(outcomes: list, not_started: list) -> str:
    """One line: how many runs ended how, and how many never started."""
    from collections import Counter

    counts = Counter(o.status for o in outcomes)
    parts = [f"{n:,} {status}" for status, n in sorted(counts.items())]
    if not_started:
        parts.append(f"{len(not_started):,} never started")
    return f"{len(outcomes) + len(not_started):,} job(s): " + ", ".join(parts or ["none ran"])
