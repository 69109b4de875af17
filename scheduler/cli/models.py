"""``skyfeast models``: the model registry (list, show, history, register, promote, rollback).

The registry itself is :mod:`skyfeast.featurestore.models`; this module only parses
arguments, copies an artifact into the primary provider's storage, and prints.
Every registry error (unknown model, version or alias, ...) ends in one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skyfeast.scheduler.cli.common import MAX_VERSION, add_config, add_json, int_arg, print_json
from skyfeast.scheduler.errors import UsageError, UserError

CHAMPION = "champion"  # skyfeast.featurestore.models.CHAMPION (not imported here: --help stays light)


def register(sub) -> None:
    p = sub.add_parser("models", help="the model registry: versions, aliases (champion, ...) and their history",
                       description="Versioned models in the ledger's database; artifacts in the primary provider's "
                                   "storage under models/<name>/v<N>/. See docs/models.md.")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = _verb(verbs, "list", "every model with its latest version and aliases", cmd_list)
    v = _verb(verbs, "show", "one version of a model (default: the latest) and the model's aliases", cmd_show)
    v.add_argument("name")
    v.add_argument("--version", type=int_arg(1, MAX_VERSION), help="version number (default: the latest)")
    v = _verb(verbs, "history", "every alias move of a model, oldest first", cmd_history)
    v.add_argument("name")
    v.add_argument("--alias", help="only this alias's moves")
    v = _verb(verbs, "register", "copy an artifact into the primary provider's storage and record it as the "
                                 "model's next version", cmd_register)
    v.add_argument("name")
    v.add_argument("artifact", help="path of the model file, or an MLflow model: models:/NAME@ALIAS or "
                                    "models:/NAME/VERSION (flavour mlflow; the alias is resolved now)")
    v.add_argument("--flavour", help="how the artifact is loaded: joblib (default for a file), linear (JSON "
                                     "coef/intercept/link), lightgbm (booster text; extra skyfeast[lightgbm]) or "
                                     "mlflow (default for models:/...; extra skyfeast[mlflow])")
    v.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI of a models:/ artifact (default: "
                                                         "models.mlflow_tracking_uri, then $MLFLOW_TRACKING_URI)")
    v.add_argument("--features", default="", metavar="A,B,...", help="input feature names, in order")
    v.add_argument("--outputs", default="", metavar="X,Y,...", help="output field names")
    v.add_argument("--metric", action="append", default=[], metavar="KEY=NUMBER", help="a metric (repeatable)")
    v.add_argument("--parent", type=int_arg(1, MAX_VERSION), metavar="N", help="the version this one was trained from")
    v.add_argument("--description", help="the model's description (kept from its first version)")
    v = _verb(verbs, "promote", "point an alias (default champion) at a version", cmd_promote)
    v.add_argument("name")
    v.add_argument("version", type=int_arg(1, MAX_VERSION))
    v.add_argument("--alias", default=CHAMPION)
    v.add_argument("--reason", help="why (kept in the alias's history)")
    v = _verb(verbs, "publish", "publish a model's versions and aliases to MLflow (models.mlflow_tracking_uri) "
                                "where they are missing", _cmd_publish)
    v.add_argument("name")
    v.add_argument("--version", type=int_arg(1, MAX_VERSION), help="only this version (and the aliases pointing at it)")
    v = _verb(verbs, "rollback", "move an alias back to the version it pointed at before its last move", cmd_rollback)
    v.add_argument("name")
    v.add_argument("--alias", default=CHAMPION)
    v.add_argument("--reason", help="why (kept in the alias's history)")


def _verb(verbs, name: str, help: str, func) -> argparse.ArgumentParser:
    v = verbs.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    add_config(v)
    add_json(v)
    # `skyfeast models list -v` as well as `skyfeast -v models list` (main adds these one level up)
    v.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    v.set_defaults(func=func)
    return v


@contextmanager
def _registry(args: argparse.Namespace) -> Iterator[tuple[Any, Any]]:
    """``(config, ModelRegistry)`` on the config's ledger; a registry error becomes a :class:`UsageError`."""
    from skyfeast.featurestore.models import ModelRegistry, RegistryError
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    cfg = load_config(args.config, check_imports=False, check_feast=False)  # no user code, no Feast
    ledger = open_ledger(cfg)
    try:
        yield cfg, ModelRegistry(ledger.engine)
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    finally:
        ledger.close()


def actor() -> str:
    """``cli:<login name>``: who moved an alias or registered a version from the command line."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in the environment or the password database
        return f"cli:uid{os.getuid()}"


def cmd_list(args: argparse.Namespace) -> int:
    with _registry(args) as (_, registry):
        models = registry.list_models()
    if args.json:
        print_json([m.as_dict() for m in models])
        return 0
    from skyfeast.scheduler.cli.console import out, plain_table, table

    columns = ["name", "latest", "versions", "aliases", "created"]
    rows = [[m.name, m.latest_version, m.versions, _aliases(m.aliases), f"{m.created_at:%Y-%m-%dT%H:%M:%SZ}"]
            for m in models]
    if len(rows) > PLAIN_ABOVE:  # thousands of rows: aligned text, a second faster than a drawn table
        sys.stdout.write(plain_table(f"models ({len(models)})", columns, rows))
    else:
        out.print(table(f"models ({len(models)})", columns, rows))
    return 0


PLAIN_ABOVE = 200


def cmd_show(args: argparse.Namespace) -> int:
    with _registry(args) as (_, registry):
        version = registry.get(args.name, args.version)
        aliases = {a: m.to_version for a, m in registry.aliases(args.name).items()}
    if args.json:
        print_json({**version.as_dict(), "aliases": aliases})
        return 0
    from skyfeast.scheduler.cli.console import out

    here = [a for a, n in aliases.items() if n == version.version]
    out.print(f"{version.model} version {version.version}" + (f" ({', '.join(here)})" if here else ""), markup=False)
    for key, value in version.as_dict().items():
        if key not in ("model", "version") and value not in (None, [], {}):
            out.print(f"  {key}: {value}", markup=False)
    out.print(f"  aliases of the model: {_aliases(aliases)}", markup=False)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _registry(args) as (_, registry):
        moves = registry.history(args.name, args.alias)
    if args.json:
        print_json([m.as_dict() for m in moves])
        return 0
    from skyfeast.scheduler.cli.console import out, table

    out.print(table(f"alias moves of {args.name}", ["at", "alias", "from", "to", "actor", "reason"],
                    [[f"{m.moved_at:%Y-%m-%dT%H:%M:%SZ}", m.alias, m.from_version, m.to_version, m.actor, m.reason]
                     for m in moves]))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from skyfeast.adapters.base import AdapterError
    from skyfeast.featurestore.models import RegistryError, checksum
    from skyfeast.featurestore.models.registry import check_name
    from skyfeast.scheduler.control.providers import ProviderPool

    try:
        check_name(args.name)
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    metrics = _metrics(args.metric)
    from skyfeast.featurestore.models.flavours import FlavourError, check_flavour, load

    features = _names(args.features)
    mlflow_uri = args.artifact.startswith("models:/")
    args.flavour = args.flavour or ("mlflow" if mlflow_uri else "joblib")
    if mlflow_uri != (args.flavour == "mlflow"):
        raise UsageError(f"artifact {args.artifact}: flavour mlflow takes models:/NAME@ALIAS or models:/NAME/VERSION "
                         "and an MLflow model URI takes flavour mlflow")
    if mlflow_uri:  # the reference to the version the alias names now: its JSON is the artifact
        from skyfeast.scheduler.cli.models_mlflow import mlflow_artifact

        try:
            check_flavour("mlflow")
        except FlavourError as exc:
            raise UsageError(f"artifact {args.artifact}: {exc}") from None
        path = Path("mlflow.json")
        data, features = mlflow_artifact(args, features)
    else:
        path = Path(args.artifact)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"artifact {path}: cannot read it: {exc.strerror or exc}") from None
        try:  # an artifact its flavour cannot load is refused here, not found out by a run; a pickle
            check_flavour(args.flavour)  # (joblib) may need the user's own modules: the run loads it
            if args.flavour != "joblib":
                load(args.flavour, data, features=features)
        except FlavourError as exc:
            raise UsageError(f"artifact {path}: {exc}") from None
    sha256, size = checksum(data)
    with _registry(args) as (cfg, registry):
        provider = cfg.primary_provider
        pool = ProviderPool(cfg)
        store = pool.store(provider)

        def key(n: int) -> str:
            return f"models/{args.name}/v{n}/{path.name}"

        try:
            version = registry.register(
                args.name, artifact_key=key, artifact_uri=lambda n: store.url(key(n)), sha256=sha256, size=size,
                created_by=actor(), flavour=args.flavour, features=features,
                outputs=_names(args.outputs), parent_version=args.parent, metrics=metrics or None,
                description=args.description, publish=lambda v: store.write_bytes(v.artifact_key, data))
        except AdapterError as exc:  # nothing was recorded: the publish runs inside the transaction
            pool.close()
            raise UserError(f"cannot write the artifact to provider {provider!r} storage ({store.url()}): {exc}") \
                from None
        except BaseException:
            pool.close()
            raise
        # replicas on every other provider, so a run that fails over finds the same bytes there (a run
        # also copies a missing one from another provider before it scores, checked against the sha256)
        replicas, missing = [provider], {}
        try:
            for name in cfg.providers:
                if name == provider:
                    continue
                try:
                    pool.store(name).write_bytes(version.artifact_key, data)
                    replicas.append(name)
                except Exception as exc:
                    missing[name] = str(exc)[:200]
        finally:
            pool.close()
    from skyfeast.scheduler.cli.console import err, out
    from skyfeast.scheduler.cli.models_mlflow import publish

    for name, why in missing.items():
        err.print(f"skyfeast: warning: no replica on provider {name!r} ({why}); a run there copies it first",
                  markup=False)
    mlflow = publish(cfg, version, data, path.name)  # after skyfeast's commit: a failure only warns
    if args.json:
        print_json({**version.as_dict(), "provider": provider, "replicas": replicas,
                    **({"mlflow": mlflow} if mlflow else {})})
        return 0

    out.print(f"registered {version.model} version {version.version}: {version.artifact_uri} "
              f"(sha256 {version.sha256}, {version.size:,} bytes; on {', '.join(replicas)})"
              + (f"; MLflow version {mlflow['version']}" if mlflow and "version" in mlflow else ""), markup=False)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.cli.models_mlflow import mirror_alias

    with _registry(args) as (cfg, registry):
        move = registry.promote(args.name, args.version, args.alias, reason=args.reason, actor=actor())
        mlflow = mirror_alias(cfg, registry, move)  # after skyfeast's commit: a failure only warns
    return _moved(args, move, mlflow)


def cmd_rollback(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.cli.models_mlflow import mirror_alias

    with _registry(args) as (cfg, registry):
        move = registry.rollback(args.name, args.alias, reason=args.reason, actor=actor())
        mlflow = mirror_alias(cfg, registry, move)
    return _moved(args, move, mlflow)


def _cmd_publish(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.cli.models_mlflow import cmd_publish

    return cmd_publish(args)


def _moved(args: argparse.Namespace, move, mlflow: dict | None = None) -> int:
    if args.json:
        print_json({**move.as_dict(), **({"mlflow": mlflow} if mlflow else {})})
        return 0
    from skyfeast.scheduler.cli.console import out

    if move.from_version == move.to_version:
        out.print(f"{move.model} {move.alias} already points at version {move.to_version}", markup=False)
    else:
        start = "unset" if move.from_version is None else f"version {move.from_version}"
        out.print(f"{move.model} {move.alias}: {start} -> version {move.to_version}", markup=False)
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _metrics(items: list[str]) -> dict[str, float]:
    """``--metric KEY=NUMBER`` flags as a dict; :class:`UsageError` naming a malformed one."""
    metrics = {}
    for item in items:
        k, sep, v = item.partition("=")
        try:
            number = float(v)
            if not sep or not k.strip() or not math.isfinite(number):
                raise ValueError
            metrics[k.strip()] = number
        except ValueError:
            raise UsageError(f"--metric: {item!r} is not KEY=NUMBER (e.g. --metric auc=0.83)") from None
    return metrics


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{a}=v{n}" for a, n in sorted(aliases.items())) or "-"
