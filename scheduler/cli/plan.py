"""``skyfeast plan``: next fire times, windows and placement of each job."""

from __future__ import annotations

import argparse

from skyfeast.scheduler.cli.common import add_config, add_json, parse_at, print_json, window_text
from skyfeast.scheduler.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("plan", help="next fire times, windows and placement of each job")
    add_config(p)
    add_json(p)
    p.add_argument("-n", "--count", type=int, default=3, help="fire times per job (default 3)")
    p.add_argument("--at", help="pretend the time is this ISO-8601 instant (default: now)")
    p.set_defaults(func=cmd_plan)


def _schedule_text(s) -> str:
    return f"cron {s.expr} ({s.timezone})" if s.type == "cron" else f"every {s.every}"


def cmd_plan(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.api.views import plan_view
    from skyfeast.scheduler.config import load_config

    at = parse_at(args.at)  # arguments before files: a bad --at fails fast
    cfg = load_config(args.config)
    if not 1 <= args.count <= 1000:
        raise UsageError("--count must be between 1 and 1000")
    if not cfg.jobs and not args.json:
        from skyfeast.scheduler.cli.console import err

        err.print(f"nothing to plan: {args.config} defines no jobs", markup=False)
    plan = plan_view(cfg, at, args.count)
    jobs = plan["jobs"]
    if args.json:
        print_json(plan)
        return 0
    from skyfeast.scheduler.cli.console import out, table

    rows = [[j["name"], j["kind"], _schedule_text(job.schedule), j["provider"],
             "\n".join(f"{f['fire']}  window {window_text(f['window']['start'], f['window']['end'])}"
                       for f in j["next_fires"])]
            for j, job in zip(jobs, cfg.jobs)]
    out.print(table(f"plan for {cfg.project} at {at.isoformat()}", ["job", "kind", "schedule", "provider", "next fires"], rows))
    return 0
