"""What the status page (``GET /``, see docs/http.md) shows, as plain data: built from the JSON API's
read models (:mod:`skyfeast.scheduler.api.views`), so the page and ``/api/status`` never disagree.

:func:`page_view` makes a fixed number of ledger queries (the status view's, one for runs and drills,
one for their attempts, one for models, one for drill reports, and one per running run for its
chunks, at most :data:`MAX_PROGRESS`). :func:`freshness_rows` and :func:`timeline` are pure.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
AMBER_AT = 0.75  # of the SLO: a view older than this is amber, older than the SLO red
MAX_PROGRESS = 10  # running runs whose chunk progress is read (one query each)
TIMELINE_HOURS = 6
RUNS_READ = 300  # latest runs (production and drills) the page reads
DRILLS_SHOWN = 10


def freshness_rows(feature_views: list[dict[str, Any]], slo: dict[str, timedelta]) -> list[dict[str, Any]]:
    """Each feature view's age against its SLO: ``level`` is ``ok`` (under :data:`AMBER_AT` of it),
    ``warn`` (under it), ``late`` (over it, or never materialised), or ``none`` (no SLO).
    Views with an SLO the Feast registry does not list yet are included, never materialised."""
    rows = []
    seen = set()
    for fv in feature_views:
        name = fv["feature_view"]
        seen.add(name)
        rows.append(_level(name, fv.get("age_seconds"), fv.get("materialized_until"), slo.get(name)))
    rows += [_level(name, None, None, limit) for name, limit in sorted(slo.items()) if name not in seen]
    return rows


def _level(name: str, age: float | None, until: str | None, limit: timedelta | None) -> dict[str, Any]:
    slo_s = limit.total_seconds() if limit is not None else None
    if slo_s is None:
        level = "none"
    elif age is None or age > slo_s:
        level = "late"
    elif age > AMBER_AT * slo_s:
        level = "warn"
    else:
        level = "ok"
    return {"feature_view": name, "age_seconds": age, "materialized_until": until, "slo_seconds": slo_s,
            "level": level}


def timeline(runs: list[dict[str, Any]], providers: list[str], now: datetime, *,
             hours: float = TIMELINE_HOURS, width: float = 1000.0) -> dict[str, Any]:
    """Where attempts ran over the last ``hours``: one lane per provider (in ``providers``' order,
    then any other provider an attempt names), one bar per attempt overlapping the span, ``x`` and
    ``w`` in ``[0, width]``. An attempt without an end is still running (drawn up to ``now``).
    ``runs`` are the runs view's entries (with ``attempt_log``); a drill's run (job ``drill:<job>``)
    gives bars with ``drill`` true, so a drill's failover is drawn, marked apart from production's."""
    from skyfeast.scheduler.drills.records import is_drill

    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    lanes: dict[str, list[dict[str, Any]]] = {p: [] for p in providers}
    for run in runs:
        for a in run.get("attempt_log", []):
            began = _time(a.get("started_at"))
            if began is None:
                continue
            ended = _time(a.get("ended_at")) or now
            if ended < start or began > now:
                continue
            x0 = max(0.0, (began - start).total_seconds()) / span * width
            x1 = min(span, (ended - start).total_seconds()) / span * width
            lanes.setdefault(a["provider"], []).append({
                "x": round(x0, 1), "w": round(max(x1 - x0, 2.0), 1), "outcome": a.get("outcome") or "running",
                "run_id": run["id"], "job": run["job"], "attempt": a.get("number"), "drill": is_drill(run["job"]),
                "started_at": a.get("started_at"), "ended_at": a.get("ended_at"), "error": a.get("error")})
    ticks = [{"x": round(h / hours * width, 1), "label": (start + timedelta(hours=h)).strftime("%H:%M")}
             for h in range(0, int(hours) + 1)]
    return {"start": start.isoformat(), "end": now.isoformat(), "hours": hours, "width": width,
            "lanes": [{"provider": p, "bars": bars} for p, bars in lanes.items()], "ticks": ticks}


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def page_view(api, *, now: datetime | None = None, hours: float = TIMELINE_HOURS) -> dict[str, Any]:
    """Everything the status page shows, for one :class:`~skyfeast.scheduler.app.routes.Api`."""
    from skyfeast.scheduler.api import views
    from skyfeast.scheduler.drills.records import is_drill

    now = now or datetime.now(UTC)
    status = views.status_view(api.cfg, api.ledger, api.pool, api.repo, limit=10, check_storage=False)
    everything = views.runs_view(api.cfg, api.ledger, limit=RUNS_READ, drills=True)["runs"]
    production = [r for r in everything if not is_drill(r["job"])]
    running = [r for r in production if r["status"] == "running"]
    for r in running[:MAX_PROGRESS]:
        r["chunks_done"] = len(api.ledger.chunks(r["id"]))
    failures = [r for r in production if r["status"] == "failed"][:10]
    for r in failures:  # the run's error, else its last failed attempt's
        r["error"] = r["error"] or next((a["error"] for a in reversed(r["attempt_log"]) if a.get("error")), None)
    return {
        "project": status["project"], "at": status["at"], "leader": status["leader"],
        "providers": status["providers"], "running": running, "failures": failures,
        "freshness": freshness_rows(status["feature_views"], dict(api.cfg.feast.freshness_slo)),
        "models": views.models_view(api.registry),
        "drills": api.ledger.drill_reports(DRILLS_SHOWN),
        "timeline": timeline(everything, [p["name"] for p in status["providers"]], now, hours=hours),
        "jobs": [j.name for j in api.cfg.jobs],
        "drillable": _drillable(api.cfg),
    }


def _drillable(cfg) -> list[str]:
    """Providers some feature job may fail over from (the drill form offers these)."""
    out: list[str] = []
    for job in cfg.jobs:
        allowed = cfg.allowed_providers(job)
        if job.kind == "feature" and len(allowed) > 1:
            out += [p for p in allowed if p not in out]
    return out


__all__ = ["freshness_rows", "page_view", "timeline"]
