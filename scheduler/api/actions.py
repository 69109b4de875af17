"""Operator actions shared by the CLI and the daemon's ``POST /api/...``: each checks its input
as the CLI does and changes the ledger (or the model registry in it).

Every function raises :class:`~skyfeast.scheduler.errors.NotFound` for an unknown job, run,
provider or model, :class:`~skyfeast.scheduler.errors.UsageError` for bad input, and
:class:`~skyfeast.scheduler.errors.Conflict` for a request the state refuses. ``actor`` names
who acted (``cli:<user>``, ``http:token``, ``http:loopback``) where the ledger keeps it.
"""

from __future__ import annotations

import logging
from typing import Any

from skyfeast.scheduler.api.checks import job_named, parse_window, require_closed, require_on_grid
from skyfeast.scheduler.api.views import registry_errors
from skyfeast.scheduler.errors import NotFound

log = logging.getLogger(__name__)


def trigger_window(cfg, job_name: str, window: str | None, *, allow_off_grid: bool = False, flag: str = "--window"):
    """(job, window) that ``skyfeast trigger`` would queue: the given ``START/END``, which must have
    closed and be on the job's schedule (unless ``allow_off_grid``), or the latest complete window."""
    from skyfeast.scheduler.timing.windows import job_window, parse_time

    job = job_named(cfg, job_name)
    if window is None:
        return job, job_window(job, parse_time("now"))
    w = parse_window(window, flag)
    require_closed(w, flag)
    if not allow_off_grid:
        require_on_grid(job.schedule, w, flag)
    return job, w


def trigger(cfg, ledger, job_name: str, window: str | None, *, allow_off_grid: bool = False,
            flag: str = "--window") -> dict[str, Any]:
    """Queue one window of a job for the daemon (``skyfeast trigger --json``'s fields)."""
    job, w = trigger_window(cfg, job_name, window, allow_off_grid=allow_off_grid, flag=flag)
    return queue(ledger, job, w)


def queue(ledger, job, window) -> dict[str, Any]:
    """Queue (job, window), already checked; the run's id, status (``queued`` or its current one) and error."""
    run_id, status = ledger.enqueue(job.name, window.start, window.end)
    row = ledger.get_run(run_id)
    return {"run_id": run_id, "job": job.name,
            "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
            "status": status, "error": row.error if row else None}


def cancel(ledger, run_id: int) -> dict[str, Any]:
    """Cancel a queued run now, or ask the daemon running it to stop (``cancelling``)."""
    status = ledger.request_cancel(run_id)
    if status is None:
        raise NotFound(f"no run with id {run_id}")
    return {"run_id": run_id, "status": status}


def _provider(cfg, name: str) -> str:
    if name not in cfg.providers:
        raise NotFound(f"unknown provider {name!r}; defined: {sorted(cfg.providers)}")
    return name


def cordon(cfg, ledger, provider: str, *, reason: str | None, actor: str | None = None) -> dict[str, Any]:
    """Keep new runs off ``provider`` until :func:`uncordon` (running ones finish)."""
    ledger.cordon(_provider(cfg, provider), reason=reason, by=actor)
    return {"provider": provider, "cordoned": True, "reason": reason}


def uncordon(cfg, ledger, provider: str) -> dict[str, Any]:
    """Let new runs use ``provider`` again; ``was_cordoned`` says whether it was."""
    was = ledger.uncordon(_provider(cfg, provider))
    return {"provider": provider, "cordoned": False, "was_cordoned": was}


def promote(registry, name: str, version: int, alias: str, *, reason: str | None, actor: str,
            mlflow_uri: str | None = None) -> dict[str, Any]:
    """Point ``alias`` of model ``name`` at ``version`` (``skyfeast models promote --json``), then the
    same alias in MLflow when ``mlflow_uri`` is set (:func:`mirror_alias`: key ``mlflow``)."""
    with registry_errors():
        move = registry.promote(name, version, alias, reason=reason, actor=actor)
    return _with_mirror(move, mirror_alias(mlflow_uri, registry, move))


def rollback(registry, name: str, alias: str, *, reason: str | None, actor: str,
             mlflow_uri: str | None = None) -> dict[str, Any]:
    """Move ``alias`` back to its previous version (``skyfeast models rollback --json``), in MLflow too
    when ``mlflow_uri`` is set."""
    with registry_errors():
        move = registry.rollback(name, alias, reason=reason, actor=actor)
    return _with_mirror(move, mirror_alias(mlflow_uri, registry, move))


def mirror_alias(mlflow_uri: str | None, registry, move) -> dict[str, Any] | None:
    """Point the same alias at the same version in MLflow (``models.mlflow_tracking_uri``) after skyfeast
    moved it: ``{"alias", "version"}``; ``{"error": why}`` when MLflow refused or could not be reached
    (skyfeast's move stands: it is the registry of record, and ``skyfeast models publish`` repairs
    MLflow); None without a tracking URI or for a model that is itself an MLflow reference."""
    if not mlflow_uri:
        return None
    from skyfeast.featurestore.models.mlflow_bridge import MlflowError
    from skyfeast.featurestore.models.mlflow_bridge import mirror_alias as mirror

    try:
        return mirror(registry, move, mlflow_uri)
    except MlflowError as exc:
        return {"error": f"alias {move.alias!r} of {move.model} moved in skyfeast but not in MLflow ({exc}); "
                         f"`skyfeast models publish {move.model}` retries"}


def _with_mirror(move, mlflow: dict[str, Any] | None) -> dict[str, Any]:
    if mlflow and "error" in mlflow:
        log.warning("%s", mlflow["error"])
    return {**move.as_dict(), **({"mlflow": mlflow} if mlflow else {})}


__all__ = ["cancel", "cordon", "mirror_alias", "promote", "queue", "rollback", "trigger", "trigger_window", "uncordon"]
