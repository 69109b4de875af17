"""``skyfeast status`` and ``skyfeast runs``: providers, runs and freshness from the ledger."""

from __future__ import annotations

import argparse
from typing import Any

from skyfeast.scheduler.cli.common import (
    MAX_LIMIT,
    add_config,
    add_json,
    int_arg,
    job_named,
    print_json,
    window_text,
    yes_no,
)


def register(sub) -> None:
    p = sub.add_parser("status", help="providers, latest runs and feature view freshness")
    add_config(p)
    add_json(p)
    p.add_argument("--limit", type=int_arg(1, MAX_LIMIT), default=10, help="latest runs to show (default 10)")
    p.add_argument("--probe", action="store_true", help="connect to every cluster and count workers now "
                   "(starts local clusters); default: the state a daemon's last probe recorded")
    p.set_defaults(func=cmd_status, starts_clusters=lambda args: args.probe)  # --probe starts them
    p = sub.add_parser("runs", help="list runs from the ledger")
    add_config(p)
    add_json(p)
    p.add_argument("--job")
    p.add_argument("--status", choices=["queued", "running", "interrupted", "succeeded", "partial", "failed", "cancelled",
                                        "upstream_failed"])
    p.add_argument("--limit", type=int_arg(1, MAX_LIMIT), default=50, help="latest runs to list (default 50)")
    p.add_argument("--drills", action="store_true",
                   help="also list drill runs (job drill:JOB, see `skyfeast drill`); hidden by default")
    p.set_defaults(func=cmd_runs)


def cmd_status(args: argparse.Namespace) -> int:
    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.scheduler.api.views import status_view
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import open_ledger, reach_ledger

    # status runs no user code: do not wait on its imports; reach the ledger while Feast's repo loads
    cfg = load_config(args.config, check_imports=False, meanwhile=reach_ledger)
    ledger = open_ledger(cfg)
    pool = ProviderPool(cfg)
    try:
        status = status_view(cfg, ledger, pool, FeastRepo(cfg.feast_repo), limit=args.limit, probe=args.probe)
    finally:
        pool.close()
        ledger.close()
    leader, providers, runs, freshness = status["leader"], status["providers"], status["runs"], status["feature_views"]
    if args.json:
        print_json(status)
        return 0
    from skyfeast.scheduler.cli.console import out, table

    if leader is None:
        out.print("leader: none (no daemon has run against this ledger)")
    elif leader["active"]:
        out.print(f"leader: {leader['holder']} (token {leader['token']}, lease until {leader['lease_until']})")
    else:
        out.print(f"leader: none now (last: {leader['holder']}, token {leader['token']}, "
                  f"lease expired {leader['lease_until']})")
    out.print(table("providers", ["name", "priority", "cluster", "state", "cordoned", "workers", "storage", "storage ok",
                                  "last success"],
                    [[p["name"], p["priority"], p["cluster"], state_text(p), yes_no(p["cordoned"]), p["workers"],
                      p["storage"], yes_no(p["storage_ok"]), p["last_success"]] for p in providers]))
    out.print(table("latest runs", ["id", "job", "window", "status", "provider", "attempts", "rows", "error"],
                    [[r["id"], r["job"], window_text(r["window_start"], r["window_end"]), r["status"], r["provider"],
                      r["attempts"], r["rows_written"], (r["error"] or "")[:80]] for r in runs]))
    out.print(table("feature views", ["feature view", "materialized until", "age (s)", "intervals"],
                    [[f["feature_view"], f["materialized_until"], f["age_seconds"], f["intervals"]] for f in freshness]))
    return 0


def age_text(seconds: float) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def state_text(p: dict[str, Any]) -> str:
    """A provider's state with its age: ``healthy (checked 12s ago)``, ``unknown (never probed)``."""
    if p["probe_age_s"] is None:
        return f"{p['state']} (never probed)"
    return f"{p['state']} (checked {age_text(p['probe_age_s'])} ago)"


def cmd_runs(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.api.views import runs_view
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    if args.job is not None:
        job_named(cfg, args.job)  # an unknown job is a usage error, not an empty table (before the ledger opens)
    ledger = open_ledger(cfg)
    try:
        view = runs_view(cfg, ledger, job=args.job, status=args.status, limit=args.limit, drills=args.drills)
    finally:
        ledger.close()
    if args.json:
        print_json(view)
        return 0
    runs = view["runs"]
    from skyfeast.scheduler.cli.console import out, table

    out.print(table("runs", ["id", "job", "window", "status", "provider", "attempts", "rows", "failure", "error"],
                    [[r["id"], r["job"], window_text(r["window_start"], r["window_end"]), r["status"],
                      r["provider"], r["attempts"], r["rows_written"], r["failure_class"], r["error"]] for r in runs]))
    return 0
