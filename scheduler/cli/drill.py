"""``skyfeast drill``: break a provider mid-run and measure the recovery (:mod:`skyfeast.scheduler.drills`)."""

from __future__ import annotations

import argparse
from typing import Any

from skyfeast.scheduler.cli.common import add_config, add_json, print_json

DESCRIPTION = """\
Runs one window of a feature job on PROVIDER (the job's preferred provider), breaks PROVIDER
once chunks are recorded, and reports detection, time to the first chunk on another provider,
completion, restore and failback, and the scenario's SLOs (exit 1 on a breach).

Production is left alone. The drill's run is recorded as job drill:JOB (trigger drill), apart
from the window's production run, whose record it never claims or rewrites; `skyfeast runs`
lists drill runs only with --drills. The drill computes and stages every chunk on the workers
as a production run does, under drills/ on each provider's storage, but publishes nothing:
no online store write, no offline part, no Feast registry interval; its staged parts are
removed at the end. Readers (Feast online and historical reads) see nothing of it.

Progress goes to stderr, one line per step; the report to stdout (--json: the full report).
The report is also kept in the ledger's drill reports (a daemon's GET /api/drills, its status
page and its drill metrics show it). See ops/drills/README.md."""


def register(sub) -> None:
    p = sub.add_parser("drill", help="failover drill: break a provider mid-run and measure the recovery",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p)
    add_json(p)
    p.add_argument("--provider", required=True, help="provider to break (must be the job's preferred one)")
    p.add_argument("--mode", choices=["kill", "hang", "partition", "storage-outage"], default=None,
                   help="kill: SIGKILL its scheduler; hang: SIGSTOP it (default: the scenario's, else kill)")
    p.add_argument("--job", help="job to run during the drill (default: the first feature job that can fail over)")
    p.add_argument("--scenario", help="YAML scenario with mode and SLOs (see ops/drills/)")
    p.add_argument("--at", default="now", metavar="TIME",
                   help="drill the job's latest complete window at this ISO-8601 time (default: now)")
    p.set_defaults(func=cmd_drill, starts_clusters=True)


def cmd_drill(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.cli.common import parse_time_arg
    from skyfeast.scheduler.cli.console import err, out
    from skyfeast.scheduler.drills.drill import run_drill

    if args.at != "now":
        parse_time_arg(args.at, "--at")  # a usage error naming the flag, before any cluster starts
    # as the process's own command line, the clusters it started go with the process once the drill
    # is recorded: main() ends it at once after the report (teardown took seconds)
    left = (lambda: setattr(args, "exit_at_once", True)) if getattr(args, "process_exit", False) else None
    report = run_drill(args.config, args.provider, args.mode, job=args.job, scenario=args.scenario, at=args.at,
                       progress=lambda line: err.print(f"drill: {line}", markup=False), left=left)
    if args.json:
        print_json(report)
    else:
        out.print(report_text(report), markup=False)
    return 0 if report["ok"] else 1


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def report_text(r: dict[str, Any]) -> str:
    """The drill report for people: verdict, fault, timings against their SLOs, the run, recovery."""
    from skyfeast.scheduler.cli.common import window_text

    slo = r.get("slo", {})

    def against(key: str) -> str:
        s = slo.get(key)
        return "" if s is None else f"  (SLO <= {s['limit']:g} s: {'ok' if s['ok'] else 'BREACHED'})"

    def one_line(text: str, limit: int = 160) -> str:
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 3] + "..."

    by = ", ".join(f"{p} {n}" for p, n in r["chunks_by_provider"].items()) or "-"
    run = (f"{'completed' if r['completed'] else 'NOT completed'} on {r['completed_on'] or '-'} in "
           f"{_s(r['run_seconds'])}; {r['chunks']}/{r['partitions']} chunks ({by}); "
           f"{r['chunks_done_at_fault']} done at the fault")
    attempts = "; ".join(f"{i}. {a['provider']} {a['outcome'] or 'unfinished'}"
                         + (f" ({a['failure_class']}: {one_line(a['error'])})" if a["error"] else "")
                         for i, a in enumerate(r["attempts"], 1)) or "-"
    lines = [
        f"drill {r['mode']} of {r['provider']}: {'PASSED' if r['ok'] else 'FAILED'}",
        f"  job          {r['job']}, window {window_text(r['window']['start'], r['window']['end'])}",
        f"  recorded as  run {r['run_id']} of {r['recorded_as']} (production runs untouched; "
        f"`skyfeast runs --drills`)",
        "  published    nothing (staged under drills/, then removed)",
        f"  fault        {r['fault']}",
        f"  detection    {_s(r['detection_s'])} after the fault{against('max_detection_s')}",
        f"  first task   on another provider {_s(r['first_task_on_new_provider_s'])} after the fault"
        f"{against('max_first_task_s')}",
        f"  run          {run}",
        f"  rows         {r['rows_written'] if r['rows_written'] is not None else '-'} computed",
        f"  attempts     {attempts}",
        f"  windows      {r['duplicate_windows']} duplicate, {r['lost_windows']} lost",
        f"  recovery     restored after {_s(r['restore_s'])}, failback after {_s(r['failback_s'])}",
    ]
    if "models" in r:
        pinned = ", ".join(f"{m['model']}@{m['version']}" for m in r["models"]) or "-"
        staged = "; ".join(f"{p} {', '.join(v) or '-'}" for p, v in r["model_sets_staged"].items()) or "nothing read"
        lines.append(f"  models       pinned {pinned} = {r['model_set']}; staged rows carry: {staged} "
                     f"({'the same versions on every provider' if r['same_model_versions'] else 'NOT the pinned set'})")
    if r.get("drill_id") is not None:
        lines.append(f"  report       drill {r['drill_id']} in the ledger (GET /api/drills/{r['drill_id']} on a daemon)")
    if r.get("cancelled"):
        lines.append("  note         the drill was cancelled (its daemon stopped); the fault was lifted early")
    if r["run_blocked_until_restore"]:
        lines.append("  note         the run stayed blocked on the faulty provider until the fault was lifted")
    if not r["completed"] and r.get("error"):
        lines.append(f"  error        {one_line(r['error'], 400)}")
    return "\n".join(lines)
