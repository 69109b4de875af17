"""``skyfeast models``' side of the MLflow bridge (:mod:`skyfeast.featurestore.models.mlflow_bridge`).

* ``register NAME models:/M@ALIAS`` records a reference to the MLflow version the alias names *now*
  (:func:`mlflow_artifact`);
* with ``models.mlflow_tracking_uri`` configured, ``register`` publishes the new version to MLflow
  and ``promote``/``rollback`` move the same alias there (:func:`publish`, :func:`mirror_alias`);
  ``models publish NAME`` catches MLflow up (:func:`cmd_publish`).

skyfeast's registry is the source of truth and commits first: MLflow failing afterwards is a warning
(``--json``: an ``mlflow.error``), never a rollback of skyfeast and never a traceback; ``models
publish`` is idempotent and repairs it.  Nothing here imports ``mlflow``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from skyfeast.scheduler.errors import UsageError


def tracking_uri(args: argparse.Namespace, cfg: Any) -> str | None:
    """Where ``models:/`` references resolve: ``--tracking-uri``, else the config's, else $MLFLOW_TRACKING_URI."""
    return getattr(args, "tracking_uri", None) or cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
        or None


def mlflow_artifact(args: argparse.Namespace, features: list[str]) -> tuple[bytes, list[str]]:
    """The ``mlflow`` artifact for ``args.artifact`` (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``),
    resolved to one MLflow version, loaded once as a check; and its features (``--features``, else the
    model signature's inputs).  :class:`UsageError` for everything that stops it."""
    from dataclasses import replace

    from skyfeast.featurestore.models.flavours import FlavourError, load
    from skyfeast.featurestore.models.mlflow_bridge import MlflowError, reference_artifact, resolve
    from skyfeast.scheduler.config import load_config

    cfg = load_config(args.config, check_imports=False, check_feast=False)
    uri = tracking_uri(args, cfg)
    if not uri:
        raise UsageError("--flavour mlflow needs an MLflow tracking URI: --tracking-uri, models.mlflow_tracking_uri "
                         "in the config, or $MLFLOW_TRACKING_URI")
    import warnings

    try:
        with warnings.catch_warnings():  # MLflow's advice to model authors (type hints, ...) is not for this user
            warnings.simplefilter("ignore")
            ref = resolve(args.artifact, uri)
            model = load("mlflow", reference_artifact(ref), features=features)
    except (MlflowError, FlavourError) as exc:
        raise UsageError(f"{args.artifact}: {exc}") from None
    features = list(features or model.features)
    if not features:
        raise UsageError(f"{args.artifact}: its signature names no inputs; give --features")
    return reference_artifact(replace(ref, features=tuple(features))), features


def publish(cfg: Any, version: Any, data: bytes, filename: str) -> dict[str, Any] | None:
    """Publish ``version`` to the configured MLflow; ``{"version": N}``, ``{"error": why}`` (also printed as
    a warning), or None (no tracking URI, or a version that is itself an MLflow reference)."""
    from skyfeast.featurestore.models.mlflow_bridge import MlflowError, publish_version

    uri = cfg.mlflow_tracking_uri
    if not uri or version.flavour == "mlflow":
        return None
    try:
        n = publish_version(version, data, uri, filename=filename, experiment=cfg.models.mlflow_experiment,
                            artifact_location=cfg.models.mlflow_artifact_location)
    except MlflowError as exc:
        return _warn(f"{version.model} version {version.version} is registered in skyfeast but not published to "
                     f"MLflow ({exc}); `skyfeast models publish {version.model}` retries")
    return {"version": n}


def mirror_alias(cfg: Any, registry: Any, move: Any) -> dict[str, Any] | None:
    """Point the same alias at the same version in the configured MLflow, after skyfeast moved it
    (:func:`skyfeast.scheduler.api.actions.mirror_alias`, as the daemon's API does); a failure warns."""
    from skyfeast.scheduler.api.actions import mirror_alias as mirror

    res = mirror(cfg.mlflow_tracking_uri, registry, move)
    return _warn(res["error"]) if res and "error" in res else res


def _warn(message: str) -> dict[str, Any]:
    from skyfeast.scheduler.cli.console import err

    err.print(f"skyfeast: warning: {message}", markup=False)
    return {"error": message}


def cmd_publish(args: argparse.Namespace) -> int:
    """Every version of NAME (or ``--version``) that MLflow lacks is published, then every alias is set as
    skyfeast has it.  Exit 2 with one line when MLflow cannot be reached."""
    from skyfeast.featurestore.models import read_verified
    from skyfeast.featurestore.models.mlflow_bridge import publish_version, set_alias
    from skyfeast.scheduler.cli.common import print_json
    from skyfeast.scheduler.cli.models import _registry
    from skyfeast.scheduler.control.providers import ProviderPool

    with _registry(args) as (cfg, registry):
        uri = cfg.mlflow_tracking_uri
        if not uri:
            raise UsageError("no MLflow to publish to: set models.mlflow_tracking_uri in the config")
        versions = [registry.get(args.name, args.version)] if args.version else registry.versions(args.name)
        versions = [v for v in versions if v.flavour != "mlflow"]
        aliases = {a: m.to_version for a, m in registry.aliases(args.name).items()}
        pool = ProviderPool(cfg)
        try:
            store = pool.store(cfg.primary_provider)
            published = {}
            for v in versions:
                published[v.version] = publish_version(v, read_verified(store, v), uri, filename=v.artifact_key,
                                                       experiment=cfg.models.mlflow_experiment,
                                                       artifact_location=cfg.models.mlflow_artifact_location)
        finally:
            pool.close()
        by_number = {v.version: v for v in versions}
        moved = {a: set_alias(by_number[n], a, uri) for a, n in aliases.items() if n in by_number}
    if args.json:
        print_json({"model": args.name, "tracking_uri": uri, "versions": published, "aliases": moved})
        return 0
    from skyfeast.scheduler.cli.console import out

    out.print(f"{args.name}: skyfeast versions {sorted(published)} are MLflow versions "
              f"{[published[n] for n in sorted(published)]}; aliases "
              f"{', '.join(f'{a}=v{n}' for a, n in sorted(moved.items())) or '-'}", markup=False)
    return 0
