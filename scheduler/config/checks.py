"""Semantic checks that pydantic cannot do alone.

Each check yields :class:`~skyfeast.scheduler.errors.Problem` located through the
config's :class:`~skyfeast.scheduler.config.yamlsrc.SourceMap`: unknown providers, duplicate
job names, dangling or cyclic job sources, user code that cannot be imported,
a Feast repo or feature view that does not exist.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from skyfeast.scheduler.config.yamlsrc import SourceMap
from skyfeast.scheduler.errors import Problem
from skyfeast.scheduler.run.usercode import ImportProblem, import_callable

if TYPE_CHECKING:
    from skyfeast.scheduler.config import Config


def semantic_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    """The checks that take no time: names, references, paths; :func:`slow_problems` holds the rest."""
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for i, job in enumerate(cfg.jobs):
        if job.name in names:
            problems.append(smap.problem(("jobs", i, "name"), f"duplicate job name {job.name!r} (first at jobs[{names[job.name]}])"))
        names.setdefault(job.name, i)
        for k, prov in enumerate(job.providers or []):
            if prov not in cfg.providers:
                problems.append(
                    smap.problem(("jobs", i, "providers", k), f"unknown provider {prov!r}; defined: {sorted(cfg.providers)}")
                )
    for i, job in enumerate(cfg.jobs):
        src = job.source
        if src.type != "job":
            continue
        for k, up in enumerate(src.jobs):
            loc = ("jobs", i, "source", "job") if isinstance(src.job, str) else ("jobs", i, "source", "job", k)
            if up == job.name:
                problems.append(smap.problem(loc, "a job cannot read its own output"))
            elif up not in names:
                problems.append(smap.problem(loc, f"unknown job {up!r}; defined: {sorted(names)}"))
            elif cfg.jobs[names[up]].schedule != job.schedule:
                # the job reads its upstream's output *for the same window*
                problems.append(smap.problem(("jobs", i, "schedule"),
                                             f"must equal the schedule of job {up!r}, whose output it reads per window"))
    views = {job.feature_view for job in cfg.jobs}
    for view in cfg.feast.freshness_slo:
        if view not in views:  # an SLO nobody can meet, or a typo that silently disables the alert
            problems.append(smap.problem(("feast", "freshness_slo", view),
                                         f"no job writes feature view {view!r}; jobs write: {sorted(views)}"))
    problems += _cycle_problems(cfg, smap, names)
    problems += _sdk_problems(cfg, smap)
    problems += _state_problems(cfg, smap)
    problems += _storage_problems(cfg, smap)
    problems += _cluster_problems(cfg, smap)
    problems += _data_problems(cfg, smap)
    return problems


def slow_problems(cfg: "Config", smap: SourceMap, *, check_imports: bool, check_feast: bool) -> list[Problem]:
    """The checks that take seconds: importing the jobs' code and loading Feast's repo."""
    problems: list[Problem] = []
    if check_imports:
        for i, job in enumerate(cfg.jobs):
            if job.kind == "model" and job.model is None:
                continue  # a model group: registry models, no user code
            spec, key = (job.transform, "transform") if job.kind == "feature" else (job.model.scorer, ("model", "scorer"))
            try:
                import_callable(spec, cfg.base_dir)
            except ImportProblem as exc:
                loc = ("jobs", i, *(key if isinstance(key, tuple) else (key,)))
                problems.append(smap.problem(loc, str(exc)))
    if check_feast:
        problems += _feast_problems(cfg, smap)
    return problems


def _escapes_root(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    return path.startswith(("/", "~")) or ".." in parts or "://" in path


def _pattern_problem(path: str) -> str | None:
    """Why a source path's placeholders cannot be expanded (what every run of the job would fail on), or None."""
    from datetime import datetime, timezone

    from skyfeast.scheduler.errors import DataError
    from skyfeast.scheduler.run.sources import expand

    start = datetime(2026, 3, 1, 23, tzinfo=timezone.utc)  # a window that crosses a day: {date} expands twice
    try:
        expand(path, start, start.replace(day=2, hour=1))
    except DataError as exc:
        return str(exc)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a format spec strftime or format rejects
        return f"source path {path!r} cannot be expanded: {exc}"
    return None


def _has_date(path: str) -> bool:
    from skyfeast.scheduler.errors import DataError
    from skyfeast.scheduler.run.sources import placeholders

    try:
        return "date" in placeholders(path)
    except DataError:  # reported as the path's own problem
        return True


def _data_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    """Source paths stay inside their provider's storage root, source replicas name real providers,
    every allowed provider can read its source, and the offline primary exists."""
    out = []
    for i, job in enumerate(cfg.jobs):
        src = job.source
        if src.type != "parquet":
            continue
        paths = [(("jobs", i, "source", "path"), src.path)]
        paths += [(("jobs", i, "source", "replicas", prov), p) for prov, p in (src.replicas or {}).items()]
        for loc, path in paths:
            if _escapes_root(path):
                out.append(smap.problem(loc, f"{path!r} must be relative to the provider's storage root, "
                                             "without '..' (absolute paths and URLs are not allowed)"))
            elif (why := _pattern_problem(path)) is not None:
                out.append(smap.problem(loc, why))
        if not src.require_window_days and not any(_has_date(path) for _, path in paths):
            out.append(smap.problem(("jobs", i, "source", "require_window_days"),
                                    "applies only to a path with {date}, and this source's path has none: remove it"))
    if cfg.offline.primary is not None and cfg.offline.primary not in cfg.providers:
        out.append(smap.problem(("offline", "primary"),
                                f"unknown provider {cfg.offline.primary!r}; defined: {sorted(cfg.providers)}"))
    for i, job in enumerate(cfg.jobs):
        src = job.source
        if src.type != "parquet" or src.replicas is None:
            continue
        for prov in src.replicas:
            if prov not in cfg.providers:
                out.append(smap.problem(("jobs", i, "source", "replicas", prov),
                                        f"unknown provider {prov!r}; defined: {sorted(cfg.providers)}"))
        if not src.replicas:
            out.append(smap.problem(("jobs", i, "source", "replicas"), "must name at least one provider"))
        elif not src.cross_cloud:
            lacking = [p for p in (job.providers or cfg.providers) if p in cfg.providers and p not in src.replicas]
            if lacking:
                out.append(smap.problem(("jobs", i, "source", "replicas"),
                                        f"provider(s) {lacking} may run job {job.name!r} but hold no replica of its "
                                        "source; add a replica, narrow `providers`, or set `cross_cloud: true`"))
    return out


def _sdk_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    import importlib.util

    from skyfeast.scheduler.config.models import _SDKS

    out = []
    for name, prov in cfg.providers.items():
        need = _SDKS.get(prov.storage.type)
        if need is None:
            continue
        module, extra = need
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(smap.problem(("providers", name, "storage", "type"),
                                    f"storage type {prov.storage.type!r} needs {module}: pip install 'skyfeast[{extra}]'"))
    return out


_STATE_DRIVERS = {"sqlite": ("sqlite3", None), "postgresql": ("psycopg", "postgres")}


def _state_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    """The ledger URL names a supported database whose driver is installed, and an explicit
    SQLite file's directory exists (the default ``.skyfeast/`` beside the config is created)."""
    if cfg.state is None:
        return []
    url = cfg.state_url
    scheme = url.split("://", 1)[0] if "://" in url else ""
    dialect, _, driver = scheme.partition("+")
    if dialect not in _STATE_DRIVERS:
        return [smap.problem(("state",), f"unsupported ledger database {dialect or scheme!r}: use a file path or "
                                         "sqlite:///PATH (default), or postgresql+psycopg://... for HA")]
    if dialect == "postgresql" and driver not in ("", "psycopg"):
        return [smap.problem(("state",), f"PostgreSQL driver {driver!r} is not supported: use postgresql+psycopg://")]
    module, extra = _STATE_DRIVERS[dialect]
    if not _importable(module):
        return [smap.problem(("state",), f"a {dialect} ledger needs {module}: pip install 'skyfeast[{extra}]'")]
    if dialect == "sqlite":
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            return [smap.problem(("state",), f"directory {Path(path).parent} does not exist; create it first")]
    return []


def _storage_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    """A local storage root that exists must be a directory (one that does not is created by the first run)."""
    out = []
    for name, prov in cfg.providers.items():
        if prov.storage.type == "local":
            root = cfg.resolve(prov.storage.root)
            if root.exists() and not root.is_dir():
                out.append(smap.problem(("providers", name, "storage", "root"), f"{root} is a file, not a directory"))
    return out


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


def _cluster_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    """Cluster SDKs (optional extras) are installed; TLS settings match the address and their files exist."""
    from skyfeast.scheduler.config import CLUSTER_SDKS, TLS_SCHEMES

    out = []
    for name, prov in cfg.providers.items():
        cl, at = prov.cluster, ("providers", name, "cluster")
        key = f"{cl.type}:{cl.backend}" if cl.type == "cloudprovider" else cl.type
        if key in CLUSTER_SDKS:
            modules, extra = CLUSTER_SDKS[key]
            missing = [m for m in modules if not _importable(m)]
            if missing:
                what = f"cluster type {cl.type!r}" + (f" (backend {cl.backend})" if cl.type == "cloudprovider" else "")
                out.append(smap.problem((*at, "type"),
                                        f"{what} needs {', '.join(missing)}: pip install 'skyfeast[{extra}]'"))
        if cl.type != "address":
            continue
        if cl.address.startswith(TLS_SCHEMES) and cl.tls is None:
            out.append(smap.problem((*at, "address"), f"{cl.address.split('://')[0]}:// address needs "
                                    "`tls: {ca_file, cert, key}` (the client certificate the scheduler trusts)"))
        elif cl.tls is not None and not cl.address.startswith(TLS_SCHEMES):
            out.append(smap.problem((*at, "tls"), f"tls is set but address {cl.address!r} is not tls:// or wss://"))
        if cl.tls is not None:
            for field in ("ca_file", "cert", "key"):
                value = getattr(cl.tls, field)
                if value is not None and not cfg.resolve(value).is_file():
                    out.append(smap.problem((*at, "tls", field), f"file not found: {cfg.resolve(value)}"))
    return out


def _cycle_problems(cfg: "Config", smap: SourceMap, names: dict[str, int]) -> list[Problem]:
    """Each cycle of the jobs' upstream graph, reported at every job in it and named as a path from
    that job (self references are reported on their own: "a job cannot read its own output")."""
    deps = {j.name: [u for u in j.upstreams if u != j.name and u in names] for j in cfg.jobs}
    out, state = [], {}  # state: 1 on the current path, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for up in deps.get(name, []):
            if state.get(up) == 1:  # a cycle: from up's place on the path back to up; reported at each job in it
                cycle = path[path.index(up):]
                for k, member in enumerate(cycle):
                    ring = [*cycle[k:], *cycle[:k], member]  # "a -> b": a reads b's output
                    out.append(smap.problem(("jobs", names[member], "source", "job"),
                                            f"job sources form a cycle: {' -> '.join(ring)}"))
            elif up not in state:
                visit(up)
        path.pop()
        state[name] = 2

    for j in cfg.jobs:
        if j.name not in state:
            visit(j.name)
    return out


def _feast_problems(cfg: "Config", smap: SourceMap) -> list[Problem]:
    repo = cfg.feast_repo
    if not (repo / "feature_store.yaml").is_file():
        return [smap.problem(("feast", "repo"), f"no feature_store.yaml in {repo}")]
    from skyfeast.featurestore.repo import FeastRegistryUnreachable, FeastRepoError, feature_view_names

    try:
        fvs = feature_view_names(repo)
    except FeastRepoError as exc:
        problem = smap.problem(("feast", "repo"), str(exc))
        return [replace(problem, unreachable=isinstance(exc, FeastRegistryUnreachable))]
    out = []
    for i, job in enumerate(cfg.jobs):
        if job.feature_view not in fvs:
            hint = f"; known: {sorted(fvs)}" if fvs else "; the registry is empty, did you run `feast apply`?"
            out.append(smap.problem(("jobs", i, "feature_view"), f"feature view {job.feature_view!r} not found in Feast repo {repo}{hint}"))
    return out
