"""What a drill will do, checked before anything starts: the job, the window, the fault's mode and
the SLOs (:func:`plan_drill`, no I/O but a scenario file), and whether breaking the provider would
exercise failover now (:func:`check_preferred`, from the provider pool's view).

Both the CLI (``skyfeast drill``) and the daemon (``POST /api/drills``) check a drill here, so a
drill that cannot run is refused with the same message, before any row of the ledger is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skyfeast.scheduler.api.checks import require_closed
from skyfeast.scheduler.config import Config
from skyfeast.scheduler.control.policy import place
from skyfeast.scheduler.drills.faults import MODES
from skyfeast.scheduler.errors import Conflict, NotFound, UsageError
from skyfeast.scheduler.timing.windows import Window, job_window, parse_time

DEFAULT_SLO = {"kill": {"max_detection_s": 2.0, "max_first_task_s": 30.0},
               "hang": {"max_detection_s": 10.0, "max_first_task_s": 40.0},
               "partition": {"max_detection_s": 10.0, "max_first_task_s": 40.0},
               "storage-outage": {"max_detection_s": 10.0, "max_first_task_s": 60.0}}


def _scenario(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--scenario {path}: {exc}") from None
    if not isinstance(data, dict) or not set(data) <= {"mode", "job", "slo", "description"}:
        raise UsageError(f"--scenario {path}: expected a mapping with mode, job, slo, description")
    return data


def _pick_job(cfg: Config, provider: str, job_name: str | None):
    if provider not in cfg.providers:
        raise NotFound(f"unknown provider {provider!r}; defined: {sorted(cfg.providers)}")
    if job_name and job_name not in {j.name for j in cfg.jobs}:
        raise NotFound(f"unknown job {job_name!r}; defined: {sorted(j.name for j in cfg.jobs)}")
    # any job named may be drilled (a model job too); unnamed, the first feature job that can fail over
    jobs = [j for j in cfg.jobs if (j.kind == "feature" or job_name) and provider in cfg.allowed_providers(j)
            and len(cfg.allowed_providers(j)) > 1]
    if job_name:
        jobs = [j for j in jobs if j.name == job_name]
    if not jobs:
        kind = "job" if job_name else "feature job"
        raise UsageError(f"no {kind}{' ' + repr(job_name) if job_name else ''} may run on {provider!r} "
                         "and fail over to another provider")
    return jobs[0]


@dataclass(frozen=True)
class DrillPlan:
    """What a drill will do, checked before anything starts (:func:`plan_drill`)."""

    job: Any  # the feature job's config
    provider: str
    mode: str
    slo: dict[str, float]
    window: Window


def plan_drill(cfg: Config, provider: str, mode: str | None = None, *, job: str | None = None,
               scenario: str | None = None, at: str = "now") -> DrillPlan:
    """The drill of ``provider`` that these settings ask for. Raises :class:`NotFound` for an unknown
    provider or job and :class:`UsageError` for a mode, scenario or job that cannot drill failover.
    No I/O beyond reading ``scenario``."""
    scen = _scenario(scenario)
    mode = mode or scen.get("mode", "kill")
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: unknown; known: {', '.join(MODES)}")
    picked = _pick_job(cfg, provider, job or scen.get("job"))
    slo = {**DEFAULT_SLO[mode], **(scen.get("slo") or {})}
    window = job_window(picked, parse_time(at))
    require_closed(window, "at")  # a drill breaks a provider: never for a window that cannot run yet
    return DrillPlan(picked, provider, mode, slo, window)


def check_preferred(cfg: Config, pool, plan: DrillPlan, ledger=None) -> None:
    """:class:`Conflict` unless ``plan``'s provider is its job's preferred provider now (breaking
    another one would not move the run, so the drill would exercise nothing); with ``ledger``, also
    unless every upstream of the job (a job reading other jobs' outputs, e.g. a model group) has
    its output of the drilled window: the drill's run would have no input."""
    cands = place(cfg.allowed_providers(plan.job), pool.views())
    if not cands or cands[0] != plan.provider:
        raise Conflict(f"{plan.provider!r} is not {plan.job.name!r}'s preferred provider now (order: {cands}); "
                       "the drill would not exercise failover")
    if ledger is None:
        return
    from skyfeast.scheduler.ledger.core import DONE

    for name in plan.job.upstreams:
        up = ledger.find_run(name, plan.window.start, plan.window.end)
        if up is None or up.status not in DONE:
            have = f"its run of that window is {up.status} (run {up.id})" if up else "it has no run of that window"
            at = str(plan.window).split("/")[1]
            raise Conflict(f"job {plan.job.name!r} reads the output of job {name!r} for the window {plan.window}, "
                           f"but {have}; run it first: skyfeast run --job {name} --at {at}")


__all__ = ["DEFAULT_SLO", "DrillPlan", "check_preferred", "plan_drill"]
