"""Feast compute-engine plugin: ``feast materialize`` on Dask, through skyfeast's materialisation.

In ``feature_store.yaml``::

    batch_engine:
      type: skyfeast.featurestore.engine.DaskComputeEngine
      # at most one of these two; with neither, a LocalCluster of `workers` × `threads`:
      skyfeast_config: ../skyfeast.yaml   # its providers, highest priority first, with failover
      address: tcp://scheduler:8786       # an existing Dask scheduler
      tls: {ca_file: ca.pem, cert: client.pem, key: client-key.pem}   # with a tls:// address
      workers: 2
      threads: 1

``feast materialize`` and ``feast materialize-incremental`` then run every
feature view's range with :func:`skyfeast.featurestore.materialize.run_with_failover`:
one Dask task per partition writes Feast's own online format from the workers,
all views at once (``supports_batch``).  Feast itself still computes the ranges
(``materialize-incremental``: from the last recorded end, or ``now - ttl`` the
first time), records the intervals, and moves each view through its lifecycle
states; that includes ``MATERIALIZING`` while the command runs, which blocks
readers unless ``registry.serve_features_while_materializing`` is set (Feast
issue #6780).  ``skyfeast materialize`` never changes the state.

What Feast calls on a batch engine, and what this one does:

* ``update`` / ``teardown_infra`` (``feast apply`` / ``feast teardown``): nothing;
  the online store's tables are the provider's business.
* ``materialize`` (both materialise commands, one call with every task).
* ``get_historical_features``: never called by Feast for a batch engine (the
  provider sends historical retrieval to the offline store); raises
  ``NotImplementedError`` saying so.

Construction is cheap and connects to nothing: ``feast apply`` builds the
engine too.  A LocalCluster lives for one ``materialize`` call.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.base import ComputeEngine
from feast.repo_config import FeastConfigBaseModel
from pydantic import Field, StrictStr, model_validator

from skyfeast.featurestore.materialize import MaterializeError, ViewResult, plan_view, run_with_failover

log = logging.getLogger("skyfeast.engine")
ENGINE_TYPE = "skyfeast.featurestore.engine.DaskComputeEngine"


class DaskComputeEngineConfig(FeastConfigBaseModel):
    """``batch_engine`` settings; Feast finds this class by the engine's name + ``Config``."""

    type: Literal["skyfeast.featurestore.engine.DaskComputeEngine"] = ENGINE_TYPE
    skyfeast_config: StrictStr | None = None
    """Path of a skyfeast.yaml (relative to the Feast repo) whose providers run the work."""
    address: StrictStr | None = None
    """Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786`` or ``tls://10.0.0.5:8786``."""
    tls: dict[str, Any] | None = None
    """Mutual TLS for ``address``: ``ca_file``, ``cert``, ``key``, ``require_encryption``, as for a
    skyfeast ``address`` cluster (paths relative to the Feast repo)."""
    workers: int = Field(2, ge=1, le=256)
    """Worker processes of the LocalCluster used when neither of the above is set."""
    threads: int = Field(1, ge=1, le=64)
    """Threads per LocalCluster worker."""

    @model_validator(mode="after")
    def _one_cluster_source(self):
        if self.skyfeast_config and self.address:
            raise ValueError("batch_engine: set skyfeast_config or address, not both")
        if self.tls is not None:
            if not self.address:
                raise ValueError("batch_engine: tls applies to address only")
            from skyfeast.adapters.clusters._tls import ClusterTLS

            ClusterTLS.model_validate(self.tls)  # unknown or missing keys are named here, at feast apply
        return self


class DaskMaterializationJob(MaterializationJob):
    """A finished materialisation of one feature view (the engine runs synchronously)."""

    def __init__(self, task: MaterializationTask, status: MaterializationJobStatus,
                 error: BaseException | None = None, result: ViewResult | None = None):
        super().__init__()
        self.task = task
        self._status = status
        self._error = error
        self.result = result

    def status(self) -> MaterializationJobStatus:
        return self._status

    def error(self) -> BaseException | None:
        return self._error

    def should_be_retried(self) -> bool:
        return False  # infrastructure failures were already failed over inside the run

    def job_id(self) -> str:
        t = self.task
        return f"{t.feature_view.name}-{t.start_time}-{t.end_time}"

    def url(self) -> str | None:
        return None


Providers = Sequence[tuple[str, Callable[[], Any]]]
PROVIDER_SOURCES = "skyfeast.provider_sources"
"""Entry-point group of the callables that turn a ``skyfeast_config`` path into providers.

The scheduler registers ``skyfeast.scheduler.app:engine_providers`` there (see
pyproject.toml): this layer states the contract and never imports the scheduler.
A source is called as ``source(path)`` and returns a context manager yielding
``(name, connect)`` pairs, best first, that closes the providers on exit; it raises
a :class:`ValueError` subclass with a readable message for an invalid file."""


def skyfeast_providers(config_path: str | Path):
    """``(name, connect)`` for the providers of a skyfeast.yaml, best first, as a context manager."""
    from importlib.metadata import entry_points

    sources = entry_points(group=PROVIDER_SOURCES)
    if not sources:
        raise MaterializeError(f"batch_engine: skyfeast_config needs skyfeast's scheduler installed "
                               f"(no entry point in group {PROVIDER_SOURCES!r})")
    return next(iter(sources)).load()(config_path)


@contextlib.contextmanager
def _connector(connector, name: str):
    try:
        yield [(name, connector.connect)]
    finally:
        connector.close()


class DaskComputeEngine(ComputeEngine):
    config_class: type[DaskComputeEngineConfig] = DaskComputeEngineConfig

    def __init__(self, *, repo_config, offline_store, online_store, **settings):
        super().__init__(repo_config=repo_config, offline_store=offline_store, online_store=online_store)
        self.config = self.config_class(**settings)

    @property
    def supports_batch(self) -> bool:
        return True  # every view's task arrives in one call, so views run concurrently

    @property
    def applies_materialization(self) -> bool:
        return False  # Feast records the intervals with its own registry object

    def update(self, project, views_to_delete, views_to_keep, entities_to_delete, entities_to_keep):
        pass

    def teardown_infra(self, project, fvs, entities):
        pass

    def get_historical_features(self, registry, task):
        raise NotImplementedError(
            "DaskComputeEngine only materialises: Feast sends get_historical_features to the offline store, "
            "never to the batch engine"
        )

    def _clusters(self):
        cfg = self.config
        if cfg.skyfeast_config:
            path = Path(cfg.skyfeast_config).expanduser()
            if not path.is_absolute() and self.repo_config.repo_path is not None:
                path = Path(self.repo_config.repo_path) / path
            return skyfeast_providers(path)
        if cfg.address:
            from skyfeast.adapters.registry import address_connector

            base = Path(self.repo_config.repo_path) if self.repo_config.repo_path is not None else None
            return _connector(address_connector(cfg.address, tls=cfg.tls, base_dir=base), "address")
        from skyfeast.adapters.clusters.local import LocalConnector, Preload

        # The scheduler imports Feast (with the typechecks filter) at start, not on its event loop
        # when the first graph's task specs arrive; workers only the filter (see Preload).
        preload = Preload(scheduler=("skyfeast.featurestore.writers",), workers=("skyfeast.featurestore._typechecks",))
        return _connector(LocalConnector(workers=cfg.workers, threads=cfg.threads, memory_limit="auto",
                                         name="feast-engine", preload=preload), "local")

    def materialize(self, registry, tasks: MaterializationTask | list[MaterializationTask], *,
                    lineage_parent=None, **kwargs) -> list[MaterializationJob]:
        """Materialise every task's view for its range on Dask; one job per task, in order.

        A view that cannot be planned (not a parquet FileSource, a transformation...)
        gets an ERROR job without stopping the others.
        """
        tasks = [tasks] if isinstance(tasks, MaterializationTask) else list(tasks)
        jobs: list[DaskMaterializationJob | None] = [None] * len(tasks)
        plans: dict[int, Any] = {}
        seen: set[str] = set()
        for i, task in enumerate(tasks):
            name = task.feature_view.name
            if task.end_time <= task.start_time:  # an empty range: nothing to read, like the local engine
                jobs[i] = DaskMaterializationJob(task, MaterializationJobStatus.SUCCEEDED)
                continue
            try:
                if name in seen:
                    raise MaterializeError(f"feature view {name!r} appears twice in one materialisation")
                if not task.only_latest:
                    raise MaterializeError(f"feature view {name!r}: only_latest=False is not supported")
                plans[i] = plan_view(self.repo_config, task.feature_view, task.start_time, task.end_time)
                seen.add(name)
            except MaterializeError as exc:
                jobs[i] = DaskMaterializationJob(task, MaterializationJobStatus.ERROR, exc)
        if plans:
            results = self._run(list(plans.values()), tasks[0].tqdm_builder)
            for i, plan in plans.items():
                res = results[plan.name]
                if res.ok:
                    jobs[i] = DaskMaterializationJob(tasks[i], MaterializationJobStatus.SUCCEEDED, result=res)
                else:
                    jobs[i] = DaskMaterializationJob(tasks[i], MaterializationJobStatus.ERROR,
                                                     MaterializeError(f"{plan.name}: {res.error}"), res)
        return jobs  # type: ignore[return-value]

    def _run(self, plans, tqdm_builder) -> dict[str, ViewResult]:
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if tqdm_builder is None:
                return
            if bar is None:
                bar = tqdm_builder(total)
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        def failover(provider: str, reason: str) -> None:
            log.warning("provider %s failed (%s); trying the next one", provider, reason)

        try:
            with quiet_dask(), self._clusters() as providers:
                results, _ = run_with_failover(plans, providers, progress=progress, on_failover=failover)
        finally:
            if bar is not None:
                bar.close()
        return results


@contextlib.contextmanager
def quiet_dask():
    """Keep a LocalCluster's start/stop chatter off the terminal (``feast materialize``, ``skyfeast materialize``).

    Feast's CLI configures the root logger at INFO when imported, and distributed
    then logs through it, in this process and in the spawned workers (which
    import the ``feast`` script again).  Workers read their level from the
    environment at import; this process gets it set directly.
    """
    import warnings

    import distributed  # noqa: F401  (its import configures its loggers: override them after)

    env_key = "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED"
    env_old = os.environ.get(env_key)
    os.environ[env_key] = "error"
    loggers = [logging.getLogger(name) for name in ("distributed", "dask", "tornado")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if env_old is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = env_old


__all__ = ["DaskComputeEngine", "DaskComputeEngineConfig", "DaskMaterializationJob", "quiet_dask", "skyfeast_providers"]
