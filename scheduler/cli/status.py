"""``skyfeast status`` and ``skyfeast runs``: providers, runs and freshness from the ledger."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from skyfeast.scheduler.cli.common import add_config, add_json, job_named, print_json, safe_url, window_text, yes_no

UTC = timezone.utc


def register(sub) -> None:
    p = sub.add_parser("status", help="providers, latest runs and feature view freshness")
    add_config(p)
    add_json(p)
    p.add_argument("--limit", type=int, default=10, help="latest runs to show (default 10)")
    p.add_argument("--probe", action="store_true", help="connect to every cluster and count workers now "
                   "(starts local clusters); default: the state a daemon's last probe recorded")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("runs", help="list runs from the ledger")
    add_config(p)
    add_json(p)
    p.add_argument("--job")
    p.add_argument("--status", choices=["queued", "running", "interrupted", "succeeded", "failed", "cancelled",
                                        "upstream_failed"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--drills", action="store_true",
                   help="also list drill runs (job drill:JOB, see `skyfeast drill`); hidden by default")
    p.set_defaults(func=cmd_runs)


def cmd_status(args: argparse.Namespace) -> int:
    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.drills.records import list_runs
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False)  # status runs no user code: do not wait on its imports
    ledger = open_ledger(cfg)
    pool = ProviderPool(cfg)
    try:
        last = ledger.last_success_by_provider()
        probes = ledger.probes()
        now = datetime.now(UTC)
        providers = []
        for name, p in sorted(cfg.providers.items(), key=lambda kv: (kv[1].priority, kv[0])):
            store = pool.store(name)
            entry: dict[str, Any] = {
                "name": name, "priority": p.priority, "cluster": p.cluster.type, "storage": store.url(),
                "storage_ok": True, "storage_error": None, "workers": None, "state": "unknown",
                "last_success": last[name].isoformat() if name in last else None,
                **_recorded(probes.get(name), now),
            }
            try:
                store.check()
            except Exception as exc:
                entry["storage_ok"], entry["storage_error"] = False, str(exc)
            if args.probe:
                entry.update(checked_at=now.isoformat(), probe_age_s=0.0, probed_by="status --probe",
                             probe_error=None)
                try:
                    client = pool.client(name)
                    entry["workers"] = len(client.scheduler_info(n_workers=-1)["workers"])
                    entry["state"] = "healthy" if entry["workers"] and entry["storage_ok"] else "degraded"
                except Exception as exc:
                    entry["state"], entry["probe_error"] = "down", str(exc)
            providers.append(entry)
        runs = [r.as_dict() for r in list_runs(ledger, limit=args.limit)]  # production runs: drills apart
        leader = ledger.leader()
        if leader is not None:  # an expired lease names the last leader, not a current one
            leader["active"] = datetime.fromisoformat(leader["lease_until"]) > datetime.now(UTC)
        cordons = ledger.cordons()
        for entry in providers:
            entry["cordoned"] = entry["name"] in cordons
            entry["cordon"] = cordons.get(entry["name"])
        freshness = FeastRepo(cfg.feast_repo).freshness()
    finally:
        pool.close()
        ledger.close()
    status = {"project": cfg.project, "at": datetime.now(UTC).isoformat(), "ledger": safe_url(cfg.state_url),
              "leader": leader, "providers": providers, "runs": runs, "feature_views": freshness}
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


def _recorded(probe: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """A provider's state fields from its last recorded probe (``unknown`` and no time if never probed)."""
    if probe is None:
        return {"state": "unknown", "checked_at": None, "probe_age_s": None, "probed_by": None, "probe_error": None}
    return {"state": probe["state"], "checked_at": probe["checked_at"].isoformat(),
            "probe_age_s": round(max(0.0, (now - probe["checked_at"]).total_seconds()), 1),
            "probed_by": probe["by"], "probe_error": probe["error"], "workers": probe["workers"]}


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
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.drills.records import list_runs
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    if args.job is not None:
        job_named(cfg, args.job)  # an unknown job is a usage error, not an empty table
    ledger = open_ledger(cfg)
    try:
        runs = list_runs(ledger, job=args.job, status=args.status, limit=args.limit, drills=args.drills)
        if args.json:
            print_json({"runs": [dict(r.as_dict(), attempt_log=ledger.attempts(r.id)) for r in runs]})
            return 0
    finally:
        ledger.close()
    from skyfeast.scheduler.cli.console import out, table

    out.print(table("runs", ["id", "job", "window", "status", "provider", "attempts", "rows", "failure", "error"],
                    [[r.id, r.job, window_text(r.window_start, r.window_end), r.status,
                      r.provider, r.attempts, r.rows_written, r.failure_class, r.error] for r in runs]))
    return 0
