"""``skyfeast drill``: break a provider mid-run and measure the recovery (:mod:`skyfeast.scheduler.drills`)."""

from __future__ import annotations

import argparse

from skyfeast.scheduler.cli.common import add_config, add_json, print_json


def register(sub) -> None:
    p = sub.add_parser("drill", help="failover drill: break a provider mid-run and measure the recovery")
    add_config(p)
    add_json(p)
    p.add_argument("--provider", required=True, help="provider to break (must be the job's preferred one)")
    p.add_argument("--mode", choices=["kill", "hang", "partition", "storage-outage"], default=None,
                   help="kill: SIGKILL its scheduler; hang: SIGSTOP it (default: the scenario's, else kill)")
    p.add_argument("--job", help="job to run during the drill (default: the first feature job that can fail over)")
    p.add_argument("--scenario", help="YAML scenario with mode and SLOs (see ops/drills/)")
    p.set_defaults(func=cmd_drill)


def cmd_drill(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.cli.console import out
    from skyfeast.scheduler.drills.drill import run_drill

    report = run_drill(args.config, args.provider, args.mode, job=args.job, scenario=args.scenario)
    if args.json:
        print_json(report)
    else:
        for k, v in report.items():
            out.print(f"{k:>30}: {v}")
    return 0 if report["ok"] else 1
