"""Implementations of the CLI sub-commands (argument parsing lives in :mod:`scheduler.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
from datetime import datetime, timezone
from typing import Any

from scheduler.cli import _parse_at, _print_json, install_signal_handlers
from scheduler.config import Config, json_schema, load_config
from scheduler.errors import UsageError

UTC = timezone.utc
log = logging.getLogger("skyfeast.cli")


def dispatch(args: argparse.Namespace) -> int:
    return {
        "validate": cmd_validate,
        "schema": cmd_schema,
        "plan": cmd_plan,
        "run": cmd_run,
        "daemon": cmd_daemon,
        "status": cmd_status,
        "runs": cmd_runs,
        "trigger": _ops("cmd_trigger"),
        "backfill": _ops("cmd_backfill"),
        "cancel": _ops("cmd_cancel"),
        "drill": _drill,
        "materialize": _materialize,
        "cordon": _ops("cmd_cordon"),
        "uncordon": _ops("cmd_cordon"),
        "reconcile": _ops("cmd_reconcile"),
    }[args.command](args)


def _materialize(args: argparse.Namespace) -> int:
    from scheduler.commands_materialize import cmd_materialize

    return cmd_materialize(args)


def _drill(args: argparse.Namespace) -> int:
    from scheduler.drill import cmd_drill

    return cmd_drill(args)


def _ops(name: str):
    def call(args: argparse.Namespace) -> int:
        from scheduler import commands_ops

        return getattr(commands_ops, name)(args)
    return call


def cmd_schema(args: argparse.Namespace) -> int:
    _print_json(json_schema())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    from scheduler.console import out

    out.print(f"{args.config}: ok ({len(cfg.providers)} provider(s), {len(cfg.jobs)} job(s), "
              f"Feast repo {cfg.feast_repo})")
    return 0


def _schedule_text(s) -> str:
    return f"cron {s.expr} ({s.timezone})" if s.type == "cron" else f"every {s.every}"


def cmd_plan(args: argparse.Namespace) -> int:
    from scheduler.policy import ProviderView, place
    from scheduler.windows import next_fires, window_for_fire

    cfg = load_config(args.config)
    if not 1 <= args.count <= 1000:
        raise UsageError("--count must be between 1 and 1000")
    at = _parse_at(args.at)
    views = {n: ProviderView(priority=p.priority) for n, p in cfg.providers.items()}
    jobs = []
    for job in cfg.jobs:
        cands = place(cfg.allowed_providers(job), views)
        fires = next_fires(job.schedule, at, args.count)
        jobs.append({
            "name": job.name,
            "kind": job.kind,
            "schedule": job.schedule.model_dump(mode="json"),
            "feature_view": job.feature_view,
            "provider": cands[0] if cands else None,
            "candidates": cands,
            "next_fires": [
                {"fire": f.isoformat(), "window": {"start": w.start.isoformat(), "end": w.end.isoformat()}}
                for f in fires for w in [window_for_fire(job.schedule, f)]
            ],
        })
    plan = {"project": cfg.project, "at": at.isoformat(), "jobs": jobs}
    if args.json:
        _print_json(plan)
        return 0
    from scheduler.console import out, table

    rows = [[j["name"], j["kind"], _schedule_text(job.schedule), j["provider"],
             "\n".join(f"{f['fire']}  window {f['window']['start']} → {f['window']['end']}" for f in j["next_fires"])]
            for j, job in zip(jobs, cfg.jobs)]
    out.print(table(f"plan for {cfg.project} at {at.isoformat()}", ["job", "kind", "schedule", "provider", "next fires"], rows))
    return 0


@contextlib.contextmanager
def _runtime(cfg: Config, reporter=None):
    from featurestore.repo import FeastRepo
    from scheduler.ledger import Ledger
    from scheduler.providers import ProviderPool
    from scheduler.runner import Runner

    ledger = Ledger(cfg.state_url)
    repo = FeastRepo(cfg.feast_repo)
    pool = ProviderPool(cfg)
    pool.set_cordons(ledger.cordons())
    runner = Runner(cfg, ledger, repo, pool, reporter=reporter)
    from scheduler.health import HealthMonitor

    runner.monitor = HealthMonitor(pool, ledger, cfg.health)  # a hung provider fails over, not times out
    runner.monitor.start()
    try:
        yield runner
    finally:
        runner.monitor.close()
        runner.close()
        pool.close()
        ledger.close()


def _select_jobs(cfg: Config, names: list[str]):
    if not names:
        return list(cfg.jobs)
    known = {j.name for j in cfg.jobs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--job: unknown job(s) {unknown}; defined: {sorted(known)}")
    return [j for j in cfg.jobs if j.name in names]


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.console import ProgressReporter, outcomes_table, out
    from scheduler.runner import order_jobs
    from scheduler.windows import latest_window

    cfg = load_config(args.config)
    jobs = order_jobs(_select_jobs(cfg, args.job))
    at = _parse_at(args.at)
    outcomes = []
    with ProgressReporter(quiet=args.json) as reporter, _runtime(cfg, reporter) as runner:
        stop = runner.stop
        install_signal_handlers(lambda sig: stop.set())
        for job in jobs:
            if stop.is_set():
                break
            outcomes.append(runner.run_window(job, latest_window(job.schedule, at), trigger="manual", force=args.force))
    ok = all(o.status in ("succeeded", "skipped") for o in outcomes) and not stop.is_set()
    if args.json:
        _print_json({"ok": ok, "at": at.isoformat(), "runs": [o.as_dict() for o in outcomes]})
    else:
        out.print(outcomes_table(outcomes))
    if stop.is_set():
        return 130  # interrupted (SIGINT/SIGTERM): unfinished windows were released for resume
    return 0 if ok else 1


def cmd_daemon(args: argparse.Namespace) -> int:
    from scheduler.console import ProgressReporter, err
    from scheduler.daemon import Daemon

    cfg = load_config(args.config)
    if args.ticks is not None and args.ticks < 1:
        raise UsageError("--ticks must be at least 1")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    if args.grace is not None and args.grace < 0:
        raise UsageError("--grace must be zero or more seconds")
    from scheduler.offline import reconcile
    from scheduler.policy import ProviderState

    with ProgressReporter() as reporter, _runtime(cfg, reporter) as runner:
        last_stop: list[str | None] = [None]

        def reconcile_pass() -> None:
            pool = runner.pool
            rep = reconcile(cfg, runner.ledger, pool.stores(),
                            available=lambda name: pool.breaker(name).state is not ProviderState.DOWN)
            if rep.runs or rep.stopped != last_stop[0]:  # a waiting reconciler logs once, not every pass
                log.info("reconcile: %s", {k: v for k, v in rep.as_dict().items() if k != "runs"})
            last_stop[0] = rep.stopped

        daemon = Daemon(cfg, runner.ledger, runner.execute_claimed, cancel=runner.stop,
                        max_parallel=args.max_parallel, grace=args.grace, maintenance=reconcile_pass)


        def on_stop(sig: str) -> None:
            if daemon.stop.is_set():
                runner.stop.set()  # second signal: cancel running work now
            err.print(f"skyfeast: {sig} received, stopping (again to cancel running work)")
            daemon.stop.set()

        install_signal_handlers(on_stop)
        err.print(f"skyfeast daemon {runner.ledger.owner}: {len(cfg.jobs)} job(s), ledger {_safe_url(cfg.state_url)}")
        daemon.serve(max_ticks=args.ticks)
    failed = [o for o in daemon.outcomes if o.status == "failed"]
    err.print(f"skyfeast daemon stopped after {daemon.ticks} tick(s): {len(daemon.outcomes)} run(s), {len(failed)} failed")
    if daemon.deposed:
        err.print("skyfeast daemon: lost leadership to another daemon; exiting so a supervisor restarts it as standby")
        return 1
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from featurestore.repo import FeastRepo
    from scheduler.ledger import Ledger
    from scheduler.providers import ProviderPool

    cfg = load_config(args.config)
    ledger = Ledger(cfg.state_url)
    pool = ProviderPool(cfg)
    try:
        last = ledger.last_success_by_provider()
        providers = []
        for name, p in sorted(cfg.providers.items(), key=lambda kv: (kv[1].priority, kv[0])):
            store = pool.store(name)
            entry: dict[str, Any] = {
                "name": name, "priority": p.priority, "cluster": p.cluster.type, "storage": store.url(),
                "storage_ok": True, "storage_error": None, "workers": None, "state": "unknown",
                "last_success": last[name].isoformat() if name in last else None,
            }
            try:
                store.check()
            except Exception as exc:
                entry["storage_ok"], entry["storage_error"] = False, str(exc)
            if args.probe:
                try:
                    client = pool.client(name)
                    entry["workers"] = len(client.scheduler_info(n_workers=-1)["workers"])
                    entry["state"] = "healthy" if entry["workers"] and entry["storage_ok"] else "degraded"
                except Exception as exc:
                    entry["state"], entry["probe_error"] = "down", str(exc)
            providers.append(entry)
        runs = [r.as_dict() for r in ledger.runs(limit=args.limit)]
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
    status = {"project": cfg.project, "at": datetime.now(UTC).isoformat(), "ledger": _safe_url(cfg.state_url),
              "leader": leader, "providers": providers, "runs": runs, "feature_views": freshness}
    if args.json:
        _print_json(status)
        return 0
    from scheduler.console import out, table

    if leader is None:
        out.print("leader: none (no daemon has run against this ledger)")
    elif leader["active"]:
        out.print(f"leader: {leader['holder']} (token {leader['token']}, lease until {leader['lease_until']})")
    else:
        out.print(f"leader: none now (last: {leader['holder']}, token {leader['token']}, "
                  f"lease expired {leader['lease_until']})")
    out.print(table("providers", ["name", "priority", "cluster", "state", "cordoned", "workers", "storage", "storage ok",
                                  "last success"],
                    [[p["name"], p["priority"], p["cluster"], p["state"], p["cordoned"], p["workers"], p["storage"],
                      p["storage_ok"], p["last_success"]] for p in providers]))
    out.print(table("latest runs", ["id", "job", "window", "status", "provider", "attempts", "rows", "error"],
                    [[r["id"], r["job"], f"{r['window_start']} → {r['window_end']}", r["status"], r["provider"],
                      r["attempts"], r["rows_written"], (r["error"] or "")[:80]] for r in runs]))
    out.print(table("feature views", ["feature view", "materialized until", "age (s)", "intervals"],
                    [[f["feature_view"], f["materialized_until"], f["age_seconds"], f["intervals"]] for f in freshness]))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from scheduler.ledger import Ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    ledger = Ledger(cfg.state_url)
    try:
        runs = ledger.runs(job=args.job, status=args.status, limit=args.limit)
        if args.json:
            _print_json({"runs": [dict(r.as_dict(), attempt_log=ledger.attempts(r.id)) for r in runs]})
            return 0
    finally:
        ledger.close()
    from scheduler.console import out, table

    out.print(table("runs", ["id", "job", "window", "status", "provider", "attempts", "rows", "failure", "error"],
                    [[r.id, r.job, f"{r.window_start:%Y-%m-%dT%H:%M}Z → {r.window_end:%Y-%m-%dT%H:%M}Z", r.status,
                      r.provider, r.attempts, r.rows_written, r.failure_class, r.error] for r in runs]))
    return 0


def _safe_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
