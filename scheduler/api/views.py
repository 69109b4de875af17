"""Read models shared by the CLI's ``--json`` output and the daemon's ``GET /api/...``.

Each function takes open resources (config, ledger, provider pool, Feast repo, model registry)
and returns plain dicts and lists ready for JSON; none opens or closes anything. Each makes a
fixed, small number of ledger queries (no query per row).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from skyfeast.scheduler.errors import NotFound

UTC = timezone.utc
# query parameters of a database URL whose value is masked like the password
SECRET_PARAMS = ("password", "passwd", "secret", "token", "sslpassword", "key")


def safe_url(url: str) -> str:
    """``url`` with its password, and query parameters that look secret (``?password=``,
    ``?sslpassword=``, ...), masked as ``***``: for output and logs."""
    import sqlalchemy as sa

    try:
        u = sa.engine.make_url(url)
    except Exception:  # not a URL: show nothing of it, it may hold anything
        return "<url>"
    if u.query:
        masked = {k: ("***" if any(s in k.lower() for s in SECRET_PARAMS) else v) for k, v in u.query.items()}
        u = u.set(query=masked)
    return u.render_as_string(hide_password=True)


def _recorded(probe: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """A provider's state fields from its last recorded probe (``unknown`` and no time if never probed)."""
    if probe is None:
        return {"state": "unknown", "checked_at": None, "probe_age_s": None, "probed_by": None, "probe_error": None}
    return {"state": probe["state"], "checked_at": probe["checked_at"].isoformat(),
            "probe_age_s": round(max(0.0, (now - probe["checked_at"]).total_seconds()), 1),
            "probed_by": probe["by"], "probe_error": probe["error"], "workers": probe["workers"]}


def status_view(cfg, ledger, pool, repo, *, limit: int = 10, check_storage: bool = True,
                probe: bool = False) -> dict[str, Any]:
    """``skyfeast status --json``: providers (their last recorded probe, cordons, last success),
    the latest production runs, the leader lease and each feature view's freshness.

    ``check_storage``: list each provider's storage now (``storage_ok``; None when not checked).
    ``probe``: connect to every cluster and count its workers now (may start local clusters).
    Six ledger queries, and one read of the Feast registry."""
    from skyfeast.scheduler.drills.records import list_runs

    last = ledger.last_success_by_provider()
    probes = ledger.probes()
    now = datetime.now(UTC)
    providers = []
    for name, p in sorted(cfg.providers.items(), key=lambda kv: (kv[1].priority, kv[0])):
        store = pool.store(name)
        entry: dict[str, Any] = {
            "name": name, "priority": p.priority, "cluster": p.cluster.type, "storage": store.url(),
            "storage_ok": True if check_storage else None, "storage_error": None, "workers": None,
            "state": "unknown", "last_success": last[name].isoformat() if name in last else None,
            **_recorded(probes.get(name), now),
        }
        if check_storage:
            try:
                store.check()
            except Exception as exc:
                entry["storage_ok"], entry["storage_error"] = False, str(exc)
        if probe:
            entry.update(checked_at=now.isoformat(), probe_age_s=0.0, probed_by="status --probe", probe_error=None)
            try:
                client = pool.client(name)
                entry["workers"] = len(client.scheduler_info(n_workers=-1)["workers"])
                entry["state"] = "healthy" if entry["workers"] and entry["storage_ok"] else "degraded"
            except Exception as exc:
                entry["state"], entry["probe_error"] = "down", str(exc)
        providers.append(entry)
    runs = [r.as_dict() for r in list_runs(ledger, limit=limit)]  # production runs: drills apart
    leader = ledger.leader()
    if leader is not None:  # an expired lease names the last leader, not a current one
        leader["active"] = datetime.fromisoformat(leader["lease_until"]) > datetime.now(UTC)
    cordons = ledger.cordons()
    for entry in providers:
        entry["cordoned"] = entry["name"] in cordons
        entry["cordon"] = cordons.get(entry["name"])
    freshness = repo.freshness()
    return {"project": cfg.project, "at": datetime.now(UTC).isoformat(), "ledger": safe_url(cfg.state_url),
            "leader": leader, "providers": providers, "runs": runs, "feature_views": freshness}


def runs_view(cfg, ledger, *, job: str | None = None, status: str | None = None, limit: int = 50,
              drills: bool = False) -> dict[str, Any]:
    """``skyfeast runs --json``: the latest runs, newest window first, each with its attempts.
    :class:`NotFound` for a job the config does not define. Two ledger queries (a few more when
    drills hide production runs)."""
    from skyfeast.scheduler.api.checks import job_named
    from skyfeast.scheduler.drills.records import list_runs

    if job is not None:
        job_named(cfg, job)  # an unknown job is an error, not an empty list
    runs = list_runs(ledger, job=job, status=status, limit=limit, drills=drills)
    attempts = ledger.attempts_of([r.id for r in runs])
    models = ledger.model_runs([r.id for r in runs])  # a model group's pinned versions and their outcomes
    return {"runs": [dict(r.as_dict(), attempt_log=attempts[r.id], **({"models": models[r.id]} if r.id in models
                                                                     else {})) for r in runs]}


def plan_view(cfg, at: datetime, count: int = 3) -> dict[str, Any]:
    """``skyfeast plan --json``: each job's next ``count`` fires after ``at``, their windows, and
    the providers it would be placed on by priority (no I/O)."""
    from skyfeast.scheduler.control.policy import ProviderView, place
    from skyfeast.scheduler.timing.windows import next_fires, window_for_fire

    views = {n: ProviderView(priority=p.priority) for n, p in cfg.providers.items()}
    jobs = []
    for job in cfg.jobs:
        cands = place(cfg.allowed_providers(job), views)
        fires = next_fires(job.schedule, at, count)
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
    return {"project": cfg.project, "at": at.isoformat(), "jobs": jobs}


def models_view(registry) -> list[dict[str, Any]]:
    """``skyfeast models list --json``: every model with its latest version and aliases (two queries)."""
    return [m.as_dict() for m in registry.list_models()]


def model_view(registry, name: str, version: int | None = None) -> dict[str, Any]:
    """``skyfeast models show --json``: one version (default the latest) and the model's aliases."""
    with registry_errors():
        v = registry.get(name, version)
        aliases = {a: m.to_version for a, m in registry.aliases(name).items()}
    return {**v.as_dict(), "aliases": aliases}


def history_view(registry, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """``skyfeast models history --json``: every alias move of ``name``, oldest first."""
    with registry_errors():
        return [m.as_dict() for m in registry.history(name, alias)]


class registry_errors:
    """Translate the model registry's errors to the operator API's: unknown model, version or
    alias → :class:`NotFound`; an invalid name → :class:`UsageError`; nothing to roll back →
    :class:`Conflict`; any other registry error → :class:`UsageError`."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        from skyfeast.featurestore.models.errors import NothingToRollBack, RegistryError
        from skyfeast.scheduler.errors import Conflict, UsageError

        if exc is None or not isinstance(exc, RegistryError):
            return False
        if isinstance(exc, LookupError):
            raise NotFound(str(exc)) from None
        if isinstance(exc, NothingToRollBack):
            raise Conflict(str(exc)) from None
        raise UsageError(str(exc)) from None


__all__ = ["history_view", "model_view", "models_view", "plan_view", "registry_errors", "runs_view", "safe_url",
           "status_view"]
