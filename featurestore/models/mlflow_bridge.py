"""The MLflow bridge (extra ``skyfeast[mlflow]``): the only module that imports ``mlflow``.

Two directions:

* **MLflow → skyfeast.** :func:`resolve` turns ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``)
  into a :class:`Reference` to one concrete MLflow version, and :func:`reference_artifact` makes it
  the bytes of a skyfeast artifact of flavour ``mlflow`` (small JSON).  The alias is resolved once,
  at registration: the skyfeast version's sha256 checks that JSON, so the version is immutable and a
  run that fails over scores the same MLflow version.  :func:`load_reference` loads it as a pyfunc.
* **skyfeast → MLflow.** :func:`publish_version` records a skyfeast version as a version of the
  registered model of the same name (the artifact logged in a run of experiment ``skyfeast``; tags
  ``skyfeast.model``, ``skyfeast.version``, ``skyfeast.sha256``), and :func:`set_alias` mirrors an
  alias move.  Both are idempotent: a version already published (found by its tags) is reused.
  skyfeast's registry stays the source of truth; these are called *after* its own commit.

Errors::

    MlflowError (RegistryError)       root: every failure of the bridge, with a one-line message
    ├── MlflowNotInstalled            the extra is not installed (names it)
    ├── MlflowUnreachable             the tracking store did not answer (or refused the credentials)
    └── BadReference (ValueError)     a malformed ``models:/`` URI, an unknown model/alias/version,
                                      a tracking URI carrying a password, a malformed reference JSON

No MLflow (or requests, or SQLAlchemy) exception leaves this module; :func:`load_reference` raises
:class:`~skyfeast.featurestore.models.flavours.FlavourError`, as every flavour's loader does.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skyfeast.featurestore.models.errors import RegistryError

FORMAT = "skyfeast.mlflow-reference/1"
EXPERIMENT = "skyfeast"
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))")
# MLflow's HTTP client retries 7 times with exponential backoff by default (minutes against a dead
# server); a CLI command should fail in seconds.  Only defaults: the environment still wins.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
                  "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


class MlflowError(RegistryError):
    """Root of the bridge's errors."""


class MlflowNotInstalled(MlflowError):
    def __init__(self) -> None:
        super().__init__("the MLflow bridge needs the Python package 'mlflow' (or 'mlflow-skinny'), which is not "
                         "installed: pip install 'skyfeast[mlflow]'")


class MlflowUnreachable(MlflowError):
    pass


class BadReference(MlflowError, ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    """One concrete MLflow model version, as a skyfeast ``mlflow`` artifact records it."""

    tracking_uri: str
    name: str
    version: int
    resolved_from: str  # what the user gave: models:/NAME@ALIAS or models:/NAME/VERSION
    source: str | None = None  # the MLflow version's source (audit: where its files came from)
    run_id: str | None = None
    features: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# --------------------------------------------------------------------------- pure helpers
def parse_model_uri(uri: str) -> tuple[str, str | None, int | None]:
    """``(name, alias, version)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (one of the last
    two is None).  Stages (``models:/NAME/Production``) and ``latest`` are refused: they move, and
    MLflow deprecated stages for aliases.  Raises :class:`BadReference`."""
    m = _URI.fullmatch(uri.strip()) if isinstance(uri, str) else None
    if m is None:
        raise BadReference(f"{uri!r} is not an MLflow model URI: give models:/NAME@ALIAS or models:/NAME/VERSION")
    if m["alias"] is not None:
        return m["name"], m["alias"], None
    if not m["version"].isdigit():
        raise BadReference(f"{uri!r}: {m['version']!r} is a stage or 'latest', which moves; give an alias "
                           f"(models:/{m['name']}@champion) or a version number (models:/{m['name']}/3)")
    return m["name"], None, int(m["version"])


def absolute_tracking_uri(uri: str, base: str | os.PathLike | None = None) -> str:
    """``uri`` with a relative SQLite or plain path made absolute (against ``base``, default the current
    directory), since workers and other hosts read it elsewhere.  A URI with a password is refused
    (:class:`BadReference`): it would be copied into artifacts; MLflow reads credentials from
    ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` (a database store from libpq's ``PGPASSWORD``
    or ``~/.pgpass``)."""
    uri = uri.strip()
    if not uri:
        raise BadReference("empty MLflow tracking URI")
    root = Path(base) if base is not None else Path.cwd()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///"):]
        if rest and rest != ":memory:":
            return f"sqlite:///{(root / rest).resolve()}"
        return uri
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return (root / uri).resolve().as_uri()  # a plain directory: MLflow's file store
    if urlsplit(uri).password:
        raise BadReference("the MLflow tracking URI carries a password; put credentials in "
                           "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or the database's own "
                           "password file), not in the URI")
    return uri


def reference_artifact(ref: Reference) -> bytes:
    """The bytes of a skyfeast ``mlflow`` artifact (canonical JSON: its sha256 identifies the reference)."""
    doc = {"format": FORMAT, **asdict(ref), "model_uri": ref.model_uri}
    doc["features"] = list(ref.features)
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def read_reference(data: bytes) -> Reference:
    """The :class:`Reference` in an ``mlflow`` artifact; :class:`BadReference` if it is not one."""
    try:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT!r}")
        return Reference(tracking_uri=str(doc["tracking_uri"]), name=str(doc["name"]), version=int(doc["version"]),
                         resolved_from=str(doc.get("resolved_from", "")), source=doc.get("source"),
                         run_id=doc.get("run_id"), features=tuple(doc.get("features") or ()))
    except Exception as exc:
        raise BadReference(f"not an MLflow reference (JSON written by `skyfeast models register --flavour mlflow`): "
                           f"{type(exc).__name__}: {str(exc)[:200]}") from None


# --------------------------------------------------------------------------- boundary
def _import():
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
    except ImportError:
        raise MlflowNotInstalled() from None
    return MlflowClient


@contextmanager
def map_errors(what: str, tracking_uri: str) -> Iterator[None]:
    """Translate MLflow's (and its transports') exceptions into :class:`MlflowError`s naming ``what``."""
    try:
        yield
    except MlflowError:
        raise
    except Exception as exc:
        try:
            from mlflow.exceptions import MlflowException
        except ImportError:  # pragma: no cover (we only get here after importing mlflow)
            MlflowException = ()  # noqa: N806
        text = " ".join(str(exc).split())[:300]
        code = getattr(exc, "error_code", "") if isinstance(exc, MlflowException) else ""
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise BadReference(f"{what}: {text}") from None
        raise MlflowUnreachable(f"{what}: MLflow at {_masked(tracking_uri)} failed: {type(exc).__name__}: {text}") \
            from None


def _masked(uri: str) -> str:
    u = urlsplit(uri)
    return uri.replace(u.password, "***") if u.password else uri


def client(tracking_uri: str):
    """An ``MlflowClient`` on ``tracking_uri`` (tracking and registry), with bounded HTTP retries."""
    MlflowClient = _import()  # noqa: N806
    for k, v in _HTTP_DEFAULTS.items():
        os.environ.setdefault(k, v)
    with map_errors("connecting", tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve(uri: str, tracking_uri: str, *, features: tuple[str, ...] = ()) -> Reference:
    """The concrete version ``uri`` names now (an alias is resolved here, once).  Raises :class:`BadReference`
    (malformed URI, unknown model, alias or version), :class:`MlflowUnreachable`, :class:`MlflowNotInstalled`."""
    name, alias, version = parse_model_uri(uri)
    tracking_uri = absolute_tracking_uri(tracking_uri)
    c = client(tracking_uri)
    with map_errors(f"resolving {uri}", tracking_uri):
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, str(version))
    return Reference(tracking_uri=tracking_uri, name=name, version=int(mv.version), resolved_from=uri.strip(),
                     source=mv.source, run_id=mv.run_id or None, features=tuple(features))


def load_reference(data: bytes) -> Any:
    """The pyfunc model an ``mlflow`` artifact references, downloaded from its tracking store.
    Raises :class:`~skyfeast.featurestore.models.flavours.FlavourError` (not installed: the subclass naming
    the extra)."""
    from skyfeast.featurestore.models.flavours import FlavourError, FlavourNotInstalled

    ref = read_reference(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        c = client(ref.tracking_uri)
    except MlflowNotInstalled:
        raise FlavourNotInstalled("mlflow", "mlflow", "mlflow") from None
    except MlflowError as exc:
        raise FlavourError(str(exc)) from None
    import mlflow.pyfunc
    from mlflow.artifacts import download_artifacts

    # explicit URIs, never mlflow.set_tracking_uri: workers load several references in threads
    dest = tempfile.mkdtemp(prefix=f"skyfeast-mlflow-{ref.name}-v{ref.version}-")
    try:
        with map_errors(f"loading {ref.model_uri}", ref.tracking_uri):
            where = c.get_model_version_download_uri(ref.name, str(ref.version))
            path = download_artifacts(artifact_uri=where, dst_path=dest, tracking_uri=ref.tracking_uri)
            model = mlflow.pyfunc.load_model(path)
    except MlflowError as exc:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        raise FlavourError(str(exc)) from None
    # a pyfunc may read its files lazily: they stay while the model lives
    import shutil
    import weakref

    weakref.finalize(model, shutil.rmtree, dest, True)
    return model


def input_names(model: Any) -> tuple[str, ...]:
    """The column names a loaded pyfunc's signature declares (empty when it has none)."""
    try:
        schema = model.metadata.get_input_schema()
        return tuple(schema.input_names()) if schema is not None and schema.has_input_names() else ()
    except Exception:
        return ()


# --------------------------------------------------------------------------- skyfeast → MLflow
def _tags(version: Any) -> dict[str, str]:
    return {"skyfeast.model": version.model, "skyfeast.version": str(version.version),
            "skyfeast.sha256": version.sha256, "skyfeast.flavour": version.flavour}


def _published(c: Any, name: str, version: Any) -> Any | None:
    """The MLflow version already recording skyfeast ``version`` (by its tags), if any."""
    want = _tags(version)
    for mv in c.search_model_versions(f"name = '{name}'"):
        tags = mv.tags or {}
        if tags.get("skyfeast.version") == want["skyfeast.version"] and tags.get("skyfeast.sha256") == want[
                "skyfeast.sha256"]:
            return mv
    return None


def publish_version(version: Any, data: bytes, tracking_uri: str, *, filename: str = "model",
                    experiment: str = EXPERIMENT, artifact_location: str | None = None) -> int:
    """Record skyfeast ``version`` (a :class:`~skyfeast.featurestore.models.registry.ModelVersion` whose
    artifact is ``data``) in MLflow: the registered model of the same name gets a version whose source is
    the artifact, logged under ``skyfeast/`` in a run of ``experiment`` (created, at ``artifact_location``,
    if missing), tagged with skyfeast's model, version, sha256 and flavour.  Returns the MLflow version
    number; publishing again returns the same one.  Raises :class:`MlflowError`."""
    c = client(tracking_uri)
    name = version.model
    with map_errors(f"publishing {name} version {version.version}", tracking_uri):
        found = _published(c, name, version) if _exists(c, name) else None
        if found is not None:
            return int(found.version)
        exp = c.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else c.create_experiment(experiment, artifact_location)
        tags = _tags(version)
        run = c.create_run(exp_id, tags=tags, run_name=f"{name}-v{version.version}")
        with tempfile.TemporaryDirectory(prefix="skyfeast-publish-") as tmp:
            path = Path(tmp) / (Path(filename).name or "model")
            path.write_bytes(data)
            c.log_artifact(run.info.run_id, str(path), artifact_path="skyfeast")
        c.log_param(run.info.run_id, "features", ",".join(version.features)[:6000])
        for key, value in (version.metrics or {}).items():
            if isinstance(value, (int, float)):
                c.log_metric(run.info.run_id, str(key), float(value))
        c.set_terminated(run.info.run_id)
        if not _exists(c, name):
            try:
                c.create_registered_model(name, tags={"skyfeast.model": name})
            except Exception as exc:  # created meanwhile by another publisher
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
        mv = c.create_model_version(name, source=f"{run.info.artifact_uri}/skyfeast", run_id=run.info.run_id,
                                    tags=tags, description=f"skyfeast {name} version {version.version} "
                                                           f"({version.flavour}, sha256 {version.sha256})")
        return int(mv.version)


def set_alias(version: Any, alias: str, tracking_uri: str) -> int:
    """Point MLflow alias ``alias`` of the registered model ``version.model`` at the MLflow version that
    records skyfeast ``version``.  Returns that MLflow version number.  Raises :class:`BadReference`
    when the version was never published (``skyfeast models publish`` publishes it), :class:`MlflowError`."""
    c = client(tracking_uri)
    with map_errors(f"setting alias {alias!r} of {version.model}", tracking_uri):
        found = _published(c, version.model, version) if _exists(c, version.model) else None
        if found is None:
            raise BadReference(f"{version.model} version {version.version} is not in MLflow at "
                               f"{_masked(tracking_uri)}; publish it first (skyfeast models publish {version.model})")
        c.set_registered_model_alias(version.model, alias, found.version)
        return int(found.version)


def mirror_alias(registry: Any, move: Any, tracking_uri: str) -> dict[str, Any] | None:
    """After skyfeast moved an alias (``move``, an :class:`AliasMove` of ``registry``), point the same
    MLflow alias at the MLflow version recording the same skyfeast version: ``{"alias", "version"}``
    (the MLflow version number), or None for a model that is itself an MLflow reference (its own
    aliases belong to its owners).  Raises :class:`MlflowError`, as :func:`set_alias`."""
    version = registry.get(move.model, move.to_version)
    if version.flavour == "mlflow":
        return None
    return {"alias": move.alias, "version": set_alias(version, move.alias, tracking_uri)}


def _exists(c: Any, name: str) -> bool:
    try:
        c.get_registered_model(name)
        return True
    except Exception as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
