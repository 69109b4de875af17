"""Read-only access to a Feast feature repo, and registry bookkeeping.

:class:`FeastRepo` wraps ``feast.FeatureStore`` for the daemon process.
:class:`WriteTarget` is the small, picklable description of one feature view
that Dask workers need to write rows (see :mod:`skyfeast.featurestore.online`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from skyfeast.adapters.failures import server_absent
from skyfeast.adapters.waiting import waiting


class FeastRepoError(Exception):
    """The Feast repo cannot be loaded or lacks an object; message is user-facing."""

    failure_class = "data"  # see skyfeast.adapters.failures


class FeastRegistryUnreachable(FeastRepoError):
    """The Feast registry's server did not answer in time, or refused the connection: it may on the
    next try (a daemon's supervisor restarts it: exit status 1, not bad config's 2)."""

    failure_class = "infrastructure"


@contextlib.contextmanager
def _quiet():
    """Feast prints deprecation chatter on import/load; keep the CLI output clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = logging.getLogger("feast").level
        logging.getLogger("feast").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("feast").setLevel(prev)


#: Seconds to connect to a SQL registry's server, unless the registry's own config sets a
#: ``connect_timeout`` (libpq waits 130 s by default on a server that never answers).
REGISTRY_CONNECT_S = 10


def load_store(repo: Path):
    with _quiet():
        try:
            from feast import FeatureStore

            with contextlib.redirect_stdout(io.StringIO()):
                store = FeatureStore(repo_path=str(repo))
            where, deadline = _registry_server(store.config.registry)
        except Exception as exc:  # feast raises many unrelated types for a bad repo
            raise FeastRepoError(f"cannot load Feast repo {repo}: {type(exc).__name__}: {exc}") from None
        if where is not None:  # a server: reached here, once, announced while it takes (under a deadline: SQL)
            from skyfeast.featurestore.registry_deadline import RegistryDeadlineError

            with waiting(f"the Feast registry at {where}", deadline):
                try:
                    store.list_feature_views(allow_cache=True)
                except RegistryDeadlineError as exc:
                    raise FeastRegistryUnreachable(str(exc)) from None
                except Exception as exc:
                    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper adds a link line
                    reach = isinstance(orig, OSError) or type(exc).__name__ in _UNREACHABLE or (
                        type(exc).__name__ == "OperationalError" and server_absent(str(orig)))
                    first = (str(orig).strip().splitlines() or [""])[0]
                    error = FeastRegistryUnreachable if reach else FeastRepoError
                    raise error(f"cannot {'reach' if reach else 'read'} the Feast registry at {where}: "
                                f"{type(orig).__name__}: {first}".strip()) from None
    return store


# errors that say the registry's server did not answer (beside OSError, and a SQL driver's
# OperationalError whose message says so): boto3's and google-api-core's
_UNREACHABLE = {"ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
                "ConnectionClosedError", "RetryError", "DeadlineExceeded", "ServiceUnavailable"}

# SQLAlchemy drivers of a registry's server, and the keyword each takes for its connect timeout
_CONNECT_TIMEOUT_ARG = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout", "pg8000": "timeout",
                        "pymysql": "connect_timeout", "mysqldb": "connect_timeout"}


def _registry_server(registry: Any) -> tuple[str | None, float | None]:
    """Where a registry on a server is, for messages (a SQL URL's passwords masked), and the deadline
    this sets for reaching it; (None, None) for a registry in a local file.

    A SQL registry's server gets :data:`REGISTRY_CONNECT_S` to connect unless its own config sets a
    timeout (its ``connect_args``, its URL, or ``PGCONNECT_TIMEOUT`` for libpq's drivers), and each
    operation then gets ``registry_deadline.REGISTRY_USE_S`` (an engine plugin): both set in Feast's
    config in memory (the file is not changed). A registry file on S3 or GCS is read by Feast's store
    with our timeouts (``adapters.storage.feast_registry``) unless the config names a store class.
    Feast's registry server keeps its client's own deadlines (None here)."""
    kind, path = getattr(registry, "registry_type", "file"), str(getattr(registry, "path", ""))
    scheme = path.partition("://")[0] if "://" in path else ""
    if kind == "file" and scheme in ("s3", "gs") and getattr(registry, "registry_store_type", None) is None:
        from skyfeast.adapters.storage import feast_registry

        registry.registry_store_type = feast_registry.STORE_CLASSES[scheme]  # Feast's store, with our timeouts
        return path, feast_registry.deadline(scheme)
    if kind == "file":
        return (path, None) if "://" in path and not path.startswith("file://") else (None, None)
    if kind != "sql":
        return f"{path} ({kind})" if path else kind, None
    from sqlalchemy.engine import make_url

    url, deadline = make_url(registry.path), None
    if url.get_backend_name() == "sqlite":
        return None, None
    from skyfeast.featurestore import registry_deadline

    shown = url.render_as_string(hide_password=True)  # the user's password; a query's passwords too:
    shown = re.sub(r"([?&][^=&]*password[^=&]*=)[^&]*", r"\1***", shown, flags=re.IGNORECASE)
    arg = _CONNECT_TIMEOUT_ARG.get(url.get_driver_name())
    kwargs = dict(registry.sqlalchemy_config_kwargs or {})
    args = dict(kwargs.get("connect_args") or {})
    libpq_env = url.get_driver_name().startswith("psycopg") and "PGCONNECT_TIMEOUT" in os.environ
    if arg is not None and arg not in args and arg not in url.query and not libpq_env:
        kwargs["connect_args"] = {**args, arg: REGISTRY_CONNECT_S}
        deadline = REGISTRY_CONNECT_S + registry_deadline.REGISTRY_USE_S
    registry_deadline.register()
    kwargs["plugins"] = [*kwargs.get("plugins", []), registry_deadline.PLUGIN]
    kwargs["skyfeast_registry"] = shown
    registry.sqlalchemy_config_kwargs = kwargs
    return shown, deadline


def feature_view_names(repo: Path) -> set[str]:
    store = load_store(repo)
    with _quiet():
        try:
            return {fv.name for fv in store.list_feature_views(allow_cache=True)}  # just loaded: no second fetch
        except Exception as exc:
            raise FeastRepoError(f"cannot read the Feast registry of {repo}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class WriteTarget:
    """What a worker needs to write one feature view: picklable, no live connections.

    ``repo_config`` is Feast's ``RepoConfig`` (pydantic, pickles by value);
    ``view_proto`` the serialised ``FeatureViewProto`` as registered.
    """

    repo_config: Any
    view_proto: bytes
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    timestamp_field: str

    @cached_property
    def feature_view(self):
        from feast import FeatureView
        from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto

        proto = FeatureViewProto()
        proto.ParseFromString(self.view_proto)
        return FeatureView.from_proto(proto)

    @property
    def name(self) -> str:
        return self.feature_view.name

    @property
    def online_label(self) -> str:
        """The online store, for messages: its type and where it is, never its credentials."""
        return online_store_label(self.repo_config.online_store)


def online_store_label(store: Any) -> str:
    """``redis at host:port``, ``postgres at host:port/database``, ``sqlite at path`` or the type
    alone: what a message about the online store names (a Redis connection string's parameters,
    its password among them, are left out)."""
    kind = str(getattr(store, "type", None) or type(store).__name__)
    if kind == "redis":
        nodes = [n for n in str(getattr(store, "connection_string", "")).split(",") if n and "=" not in n]
        return f"redis at {','.join(nodes)}" if nodes else "redis"
    if kind == "postgres":
        return f"postgres at {store.host}:{store.port}/{store.database}"
    if kind == "sqlite":
        return f"sqlite at {store.path}"
    return kind


def coalesce_intervals(registry_proto: Any, project: str, view: str) -> int:
    """Merge the overlapping or touching materialisation intervals of ``view`` in a Feast registry
    proto, in place. Returns how many intervals the view keeps."""
    for proto in registry_proto.feature_views:
        if proto.spec.name != view or proto.spec.project != project:
            continue
        held = proto.meta.materialization_intervals
        spans = sorted((i.start_time.ToDatetime(), i.end_time.ToDatetime()) for i in held)
        merged: list[list[datetime]] = []
        for s_, e in spans:
            if merged and s_ <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s_, e])
        if len(merged) < len(spans):
            del held[:]
            for s_, e in merged:
                item = held.add()
                item.start_time.FromDatetime(s_)
                item.end_time.FromDatetime(e)
        return len(merged)
    return 0


class FeastRepo:
    """The daemon's handle on one Feast repo."""

    def __init__(self, path: Path):
        self.path = path
        self.store = load_store(path)
        # Feast's registry cache is mutated in place by apply_materialization; readers in
        # other threads can then miss a view. Every registry access goes through this lock.
        self._lock = threading.RLock()

    @property
    def project(self) -> str:
        return self.store.config.project

    def feature_view(self, name: str):
        from skyfeast.featurestore.registry_deadline import RegistryDeadlineError

        with self._lock, _quiet():
            try:
                return self.store.get_feature_view(name)
            except RegistryDeadlineError:
                raise  # the registry's server, not the view
            except Exception as exc:
                raise FeastRepoError(f"feature view {name!r} not found in {self.path}: {exc}") from None

    def write_target(self, name: str) -> WriteTarget:
        fv = self.feature_view(name)
        join_keys = tuple(ec.name for ec in fv.entity_columns)
        return WriteTarget(
            repo_config=self.store.config,
            view_proto=fv.to_proto().SerializeToString(),
            join_keys=join_keys,
            features=tuple(f.name for f in fv.features),
            timestamp_field=fv.batch_source.timestamp_field or "event_timestamp",
        )

    def record_materialization(self, name: str, start: datetime, end: datetime, *, coalesce: bool = False) -> None:
        """Tell Feast the interval is materialised. Never leaves the view in a blocking state:
        ``apply_materialization`` moves it to AVAILABLE_ONLINE.

        Feast appends every interval to the view, and rewrites the whole registry each time, so
        hourly runs would grow it by 8,760 intervals a year per view. With ``coalesce`` (the daemon's
        runs) and Feast's file registry, the view's intervals are coalesced (overlapping or touching ones
        become one): their union, and so every end Feast reads (``materialize-incremental``, freshness),
        is unchanged. Drop-in ``materialize`` records intervals as ``feast materialize`` does."""
        with self._lock:
            fv = self.feature_view(name)
            with _quiet():
                registry = self.store.registry
                if not coalesce or getattr(registry, "cached_registry_proto", None) is None:
                    registry.apply_materialization(fv, self.project, start, end, commit=True)
                    return
                registry.apply_materialization(fv, self.project, start, end, commit=False)
                coalesce_intervals(registry.cached_registry_proto, self.project, name)
                registry.commit()

    def freshness(self) -> list[dict[str, Any]]:
        """Per feature view: last materialised interval end and its age in seconds."""
        now = datetime.now(timezone.utc)
        out = []
        with self._lock, _quiet():
            self.store.registry.refresh(self.project)
            views = self.store.list_feature_views()
        for fv in sorted(views, key=lambda v: v.name):
            ends = [e for _, e in fv.materialization_intervals]
            last = max(ends) if ends else None
            if last is not None and last.tzinfo is None:
                last = last.replace(tzinfo=timezone.utc)
            out.append(
                {
                    "feature_view": fv.name,
                    "materialized_until": last.isoformat() if last else None,
                    "age_seconds": round((now - last).total_seconds(), 1) if last else None,
                    "intervals": len(ends),
                }
            )
        return out
