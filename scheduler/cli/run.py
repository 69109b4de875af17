"""``skyfeast run``: run jobs now for their latest complete window, wait, summarise."""

from __future__ import annotations

import argparse

from skyfeast.scheduler.cli.common import (
    add_config,
    add_json,
    install_signal_handlers,
    parse_at,
    print_json,
    require_closed,
)
from skyfeast.scheduler.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("run", help="run jobs now for their latest complete window, wait, summarise")
    add_config(p)
    add_json(p)
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="job to run (repeatable; default: all). Upstream jobs are not added implicitly")
    p.add_argument("--once", action="store_true",
                   help="run one window per job and exit (the default; accepted for scripts)")
    p.add_argument("--at", help="run the window that is latest at this ISO-8601 instant (default: now)")
    p.add_argument("--force", action="store_true", help="re-run windows that already succeeded")
    p.set_defaults(func=cmd_run)


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
    from skyfeast.scheduler.cli.console import ProgressReporter, out, outcomes_table
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.run.runner import order_jobs
    from skyfeast.scheduler.timing.windows import latest_window

    at = parse_at(args.at)  # arguments before files: a bad --at fails fast
    cfg = load_config(args.config)
    jobs = order_jobs(_select_jobs(cfg, args.job))
    if not jobs:
        from skyfeast.scheduler.cli.console import err

        err.print(f"nothing to run: {args.config} defines no jobs", markup=False)
        if args.json:
            print_json({"ok": True, "at": at.isoformat(), "runs": []})
        return 0
    windows = {job.name: latest_window(job.schedule, at) for job in jobs}
    for window in windows.values():  # before anything starts: a window in the future is a usage error
        require_closed(window, "--at")
    outcomes = []
    with ProgressReporter(quiet=args.json) as reporter, open_runtime(cfg, reporter) as rt:
        runner = rt.runner
        stop = runner.stop
        install_signal_handlers(lambda sig: stop.set())
        for job in jobs:
            if stop.is_set():
                break
            outcomes.append(runner.run_window(job, windows[job.name], trigger="manual", force=args.force))
    ok = all(o.status in ("succeeded", "skipped") for o in outcomes) and not stop.is_set()
    if args.json:
        print_json({"ok": ok, "at": at.isoformat(), "runs": [o.as_dict() for o in outcomes]})
    else:
        out.print(outcomes_table(outcomes))
    if stop.is_set():
        return 130  # interrupted (SIGINT/SIGTERM): unfinished windows were released for resume
    return 0 if ok else 1
