"""Checks of model-group jobs against the registry, before anything runs (``validate`` and ``run``).

A group's problems depend on the registry, not only on the file: its selector must match models,
each model needs its field in the job's feature view and its input features in its upstreams' views,
its flavour must be installed, and its artifact must be on the primary provider's storage with the
recorded sha256 (and load, for flavours that need no user code).  Each problem is reported at the
job's ``group`` key, with the file and line, so the command ends with exit 2 and one readable list.
"""

from __future__ import annotations

from typing import Any

from skyfeast.scheduler.errors import Problem


def group_problems(cfg: Any, jobs: list | None = None, *, verify_artifacts: bool = True) -> list[Problem]:
    """Problems of the model-group jobs among ``jobs`` (default: every job); [] when there are none."""
    jobs = [j for j in (cfg.jobs if jobs is None else jobs) if j.kind == "model" and j.group is not None]
    if not jobs:
        return []
    from skyfeast.featurestore.models import ModelRegistry, RegistryError, read_verified
    from skyfeast.featurestore.models.flavours import FlavourError, load
    from skyfeast.featurestore.models.groups import problems, select
    from skyfeast.featurestore.repo import FeastRepo, FeastRepoError
    from skyfeast.scheduler.config.yamlsrc import SourceMap
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import open_ledger

    smap = cfg._smap or SourceMap(cfg.file)  # dropped (a daemon's config): problems without a line
    index = {j.name: i for i, j in enumerate(cfg.jobs)}
    out: list[Problem] = []
    try:
        repo = FeastRepo(cfg.feast_repo)
    except FeastRepoError as exc:
        return [smap.problem(("feast", "repo"), str(exc))]
    ledger = open_ledger(cfg)
    pool = ProviderPool(cfg) if verify_artifacts else None
    try:
        registry = ModelRegistry(ledger.engine)
        for job in jobs:
            at = ("jobs", index[job.name], "group")
            g = job.group
            try:
                versions = select(registry, models=g.models, prefix=g.prefix, tag=g.tag, alias=g.alias)
                target = repo.write_target(job.feature_view)
                ups = [repo.write_target(cfg.job(name).feature_view) for name in job.upstreams]
            except RegistryError as exc:
                out.append(smap.problem(at, str(exc)))
                continue
            except Exception as exc:  # a view missing from the repo is reported by the config checks
                out.append(smap.problem(at, f"cannot check the group: {type(exc).__name__}: {exc}"))
                continue
            columns = {c for up in ups for c in (*up.join_keys, *up.features, up.timestamp_field)}
            found = problems(versions, view=job.feature_view, view_fields=set(target.features),
                             versions_field=g.versions_field, input_columns=columns)
            if pool is not None and not found:
                store = pool.store(cfg.primary_provider)
                for v in versions:
                    try:
                        data = read_verified(store, v)
                        if v.flavour != "joblib":  # a pickle may need the user's modules: the run loads it
                            load(v.flavour, data, features=v.features)
                    except (RegistryError, FlavourError) as exc:
                        found.append(f"model {v.model!r} version {v.version}: {exc}")
                    except Exception as exc:  # the storage itself: a readable message, not a traceback
                        found.append(f"model {v.model!r} version {v.version}: cannot read its artifact from "
                                     f"provider {cfg.primary_provider!r}: {type(exc).__name__}: {exc}")
            out += [smap.problem(at, f"{p}") for p in found[:20]]
            if len(found) > 20:
                out.append(smap.problem(at, f"... and {len(found) - 20} more problem(s) in this group"))
    finally:
        if pool is not None:
            pool.close()
        ledger.close()
    return out
