"""The ``skyfeast.yaml`` model: pydantic v2, no I/O.

``extra="forbid"`` everywhere and discriminated unions on ``type`` (clusters,
storage, schedules, sources) and on ``kind`` (jobs).  Loading a file lives in
:mod:`skyfeast.scheduler.config.load`; checks that need more than one field in
:mod:`skyfeast.scheduler.config.checks`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skyfeast.adapters.clusters._tls import ClusterTLS
from skyfeast.scheduler.config.yamlsrc import SourceMap, register_tags

_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
NAME_RE = r"^[A-Za-z][A-Za-z0-9_\-]{0,62}$"
IMPORT_RE = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


_BYTES_RE = re.compile(r"^(\d{1,15}(?:\.\d{1,6})?)\s*([kmgt]i?b|b)?$", re.IGNORECASE)
_BYTE_UNITS = {"b": 1, **{u + "b": 1000 ** (i + 1) for i, u in enumerate("kmgt")},
               **{u + "ib": 1024 ** (i + 1) for i, u in enumerate("kmgt")}}
MAX_DURATION = timedelta(days=3660)  # ten years: longer is a typo, and would overflow date arithmetic


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` → timedelta. Bare numbers are seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '15m', '1h' or '7d'")
    if isinstance(value, (int, float)):
        secs = float(value) if abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and (m := _DUR_RE.match(value)):
        secs = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{str(value)[:40]!r} is not a duration; use e.g. '30s', '15m', '1h' or '7d'")
    if not secs > 0:
        raise ValueError("duration must be positive")
    if not secs <= MAX_DURATION.total_seconds():
        raise ValueError(f"duration must be at most {MAX_DURATION.days} days")
    return timedelta(seconds=secs)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_http_address(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:9464"`` for IPv6; port 0 picks a free one) → (host, port).

    Raises ValueError naming the expected form."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text[:60]!r} is not HOST:PORT (e.g. 127.0.0.1:9464 or 0.0.0.0:9464)")
    return host, int(port)


def _no_boolean(v: Any) -> Any:
    # pydantic's lax mode reads `workers: true` as 1; a boolean where a number belongs is a mistake
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


Int = Annotated[int, BeforeValidator(_no_boolean)]
Float = Annotated[float, BeforeValidator(_no_boolean)]


def _usable_path(v: Any) -> Any:
    """A path the operating system can take: no NUL character, at most 4096 bytes, and no component over
    255 bytes (Linux's limits; one over them fails every file call with a cryptic OSError)."""
    if not isinstance(v, str):
        return v  # the str type's own error
    if "\x00" in v:
        raise ValueError("contains a NUL character, which no path may hold")
    size = len(v.encode("utf-8", "surrogateescape"))
    if size > 4096:
        raise ValueError(f"is {size:,} bytes long; a path holds at most 4,096")
    longest = max(len(c.encode("utf-8", "surrogateescape")) for c in v.split("/"))
    if longest > 255:
        raise ValueError(f"has a path component of {longest:,} bytes; a file name holds at most 255")
    return v


PathStr = Annotated[str, BeforeValidator(_usable_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --------------------------------------------------------------------------- clusters
class LocalCluster(_Strict):
    """A ``distributed.LocalCluster`` the daemon starts and owns (worker processes)."""

    type: Literal["local"]
    workers: Int = Field(2, ge=1, le=256, description="number of worker processes")
    threads: Int = Field(1, ge=1, le=64, description="threads per worker")
    memory_limit: str = Field("2GiB", description="per-worker memory limit, e.g. '2GiB', or 'auto'")
    start_timeout: Duration = Field(default=timedelta(seconds=120), le=timedelta(hours=1),
                                    description="deadline for the scheduler and every worker to be up")

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str) -> str:
        # checked here, not by Dask at cluster start (where a bad value cost a silent two-minute wait)
        if v == "auto":
            return v
        m = _BYTES_RE.match(v)
        if not m:
            raise ValueError(f"{v[:40]!r} is not a memory size; use e.g. '512MiB', '2GiB', '4GB' or 'auto'")
        size = float(m.group(1)) * _BYTE_UNITS[(m.group(2) or "B").lower()]
        if not 64 * 2**20 <= size <= 2**44:
            raise ValueError(f"memory_limit {v!r} must be between 64MiB and 16TiB")
        return v


TLS_SCHEMES = ("tls://", "wss://")


class AddressCluster(_Strict):
    """An existing Dask scheduler reached at ``address`` (``tcp://host:8786``, ``tls://host:8786``)."""

    type: Literal["address"]
    address: str = Field(pattern=r"^(tcp|tls|ws|wss|inproc|ucx)://.+")
    connect_timeout: Duration = Field(default=timedelta(seconds=10))
    tls: ClusterTLS | None = Field(None, description="client certificate for a tls:// or wss:// scheduler")

    @property
    def encrypted(self) -> bool:
        return self.address.startswith(TLS_SCHEMES)


class GatewayCluster(_Strict):
    """A named cluster that already runs behind a dask-gateway server (extra ``gateway``).

    The daemon connects to it and never shuts it down. ``auth``: ``none``,
    ``basic`` (``username``/``password``), ``kerberos``, or ``jupyterhub``
    (``api_token``).
    """

    type: Literal["gateway"]
    address: str = Field(pattern=r"^https?://.+", description="the gateway's HTTP API, e.g. https://gw.example.com")
    cluster_name: str = Field(min_length=1, description="name of the running gateway cluster")
    proxy_address: str | None = Field(None, description="scheduler proxy, e.g. gateway.example.com:8786")
    public_address: str | None = Field(None, pattern=r"^https?://.+")
    auth: Literal["none", "basic", "kerberos", "jupyterhub"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    api_token: SecretStr | None = Field(None, validate_default=True)
    connect_timeout: Duration = Field(default=timedelta(seconds=30))

    @field_validator("username", "password", "api_token")
    @classmethod
    def _auth_fields(cls, v: Any, info: ValidationInfo) -> Any:
        auth = info.data.get("auth")  # absent when `auth` itself is invalid
        wanted = {"basic": ("username", "password"), "jupyterhub": ("api_token",)}.get(auth, ())
        if v is not None and auth is not None and info.field_name not in wanted:
            raise ValueError(f"{info.field_name} cannot be used with auth: {auth}")
        if v is None and auth == "jupyterhub" and info.field_name == "api_token":
            raise ValueError("auth: jupyterhub needs api_token (e.g. api_token: ${JUPYTERHUB_API_TOKEN})")
        return v


class KubernetesCluster(_Strict):
    """A running dask-kubernetes operator cluster (``KubeCluster.from_name``; extra ``kubernetes``).

    Connect-only: a missing cluster is an error, and the daemon never deletes it.
    """

    type: Literal["kubernetes"]
    name: str = Field(min_length=1, description="name of the DaskCluster resource")
    namespace: str | None = Field(None, description="default: the current kube context's namespace")
    port_forward_cluster_ip: bool | None = Field(
        None, description="port-forward a ClusterIP scheduler service (when the daemon runs outside Kubernetes)")
    connect_timeout: Duration = Field(default=timedelta(seconds=60))


class CoiledCluster(_Strict):
    """A named Coiled cluster (extra ``coiled``).

    Reuse-only unless ``create: true``: without it a missing cluster is an
    error instead of a new (billed) cluster. ``options`` are further
    ``coiled.Cluster`` arguments, used when the cluster is created.
    """

    type: Literal["coiled"]
    name: str = Field(min_length=1)
    workspace: str | None = None
    create: bool = Field(False, description="create the cluster when it does not exist")
    shutdown_on_close: bool = Field(False, description="stop the Coiled cluster when the daemon stops")
    options: dict[str, Any] = Field(default_factory=dict, description="more coiled.Cluster(...) keyword arguments")

    @field_validator("options")
    @classmethod
    def _no_managed_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _reject_keys(v, ("name", "workspace", "shutdown_on_close", "asynchronous"))


class CloudProviderCluster(_Strict):
    """A dask-cloudprovider ``EC2Cluster`` or ``GCPCluster`` the daemon creates and closes (extra ``cloudprovider``).

    ``options`` are the cluster class's keyword arguments (``region``,
    ``instance_type``, ``projectid``, ``zone``, ``machine_type``, ...).
    """

    type: Literal["cloudprovider"]
    backend: Literal["ec2", "gcp"]
    n_workers: Int = Field(1, ge=0, le=1000)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_managed_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _reject_keys(v, ("n_workers", "asynchronous"))


def _reject_keys(options: dict[str, Any], managed: tuple[str, ...]) -> dict[str, Any]:
    bad = sorted(k for k in options if k in managed)
    if bad:
        raise ValueError(f"{', '.join(bad)} cannot be set in options (set by skyfeast or a key of its own)")
    return options


Cluster = Annotated[
    Union[LocalCluster, AddressCluster, GatewayCluster, KubernetesCluster, CoiledCluster, CloudProviderCluster],
    Field(discriminator="type"),
]
# cluster type (and cloudprovider backend) -> (modules that must be importable, skyfeast extra)
CLUSTER_SDKS: dict[str, tuple[tuple[str, ...], str]] = {
    "gateway": (("dask_gateway",), "gateway"),
    "kubernetes": (("dask_kubernetes",), "kubernetes"),
    "coiled": (("coiled",), "coiled"),
    "cloudprovider:ec2": (("dask_cloudprovider", "aiobotocore"), "cloudprovider"),
    "cloudprovider:gcp": (("dask_cloudprovider", "googleapiclient"), "cloudprovider"),
}


# --------------------------------------------------------------------------- storage
class LocalStorage(_Strict):
    """A directory on a filesystem every worker can see. ``root`` is relative to the config file."""

    type: Literal["local"]
    root: PathStr


class _BucketStorage(_Strict):
    """A bucket and a key prefix in it; ``bucket`` must be a name the service accepts."""

    bucket: str
    prefix: str = ""
    connect_timeout: Duration = Field(default=timedelta(seconds=5), le=timedelta(minutes=10),
                                      description="deadline for connecting to the endpoint, per request")
    read_timeout: Duration = Field(default=timedelta(seconds=60), le=timedelta(hours=1),
                                   description="deadline for each read from the endpoint, per request")
    _max_dotted: ClassVar[int] = 63  # the longest name allowed when it has dots (63 without)
    _name: ClassVar[re.Pattern[str]]
    _rule: ClassVar[str]

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        if not 3 <= len(v) <= (cls._max_dotted if "." in v else 63) or not cls._name.match(v) or ".." in v:
            raise ValueError(f"bucket {v[:80]!r} is not a valid name: {cls._rule}")
        return v


class S3Storage(_BucketStorage):
    """An S3 (or S3-compatible) bucket. Credentials default to the standard AWS chain."""

    _name = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    _rule = "3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit"

    type: Literal["s3"]
    region: str | None = None
    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None

    @model_validator(mode="after")
    def _keys_together(self) -> "S3Storage":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together (or neither)")
        return self


class GCSStorage(_BucketStorage):
    """A Google Cloud Storage bucket; ``endpoint`` points at an emulator or private endpoint."""

    _max_dotted = 222
    _name = re.compile(r"^[a-z0-9][a-z0-9._\-]*[a-z0-9]$")
    _rule = ("3 to 63 lower-case letters, digits, hyphens and underscores (up to 222 with dots), "
             "starting and ending with a letter or digit")

    type: Literal["gcs"]
    project: str | None = None
    endpoint: str | None = Field(None, pattern=r"^https?://")


Storage = Annotated[Union[LocalStorage, S3Storage, GCSStorage], Field(discriminator="type")]
_SDKS = {"s3": ("boto3", "s3"), "gcs": ("google.cloud.storage", "gcs")}


class Provider(_Strict):
    cluster: Cluster
    storage: Storage
    priority: Int = Field(100, ge=0, le=1_000_000, description="lower runs first")


# --------------------------------------------------------------------------- schedules
class CronSchedule(_Strict):
    """A crontab expression (5 fields). Each fire processes [previous fire, this fire)."""

    type: Literal["cron"]
    expr: str
    timezone: str = "UTC"

    @field_validator("expr")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from datetime import datetime, timezone

        from cronsim import CronSim, CronSimError

        from skyfeast.scheduler.timing.windows import _cron_trigger

        if len(v.split()) != 5:
            raise ValueError(f"cron expression {v!r} must have 5 fields (minute hour day month weekday)")
        try:  # the trigger the daemon fires on (crontab weekdays: 0 and 7 are Sunday, names, ranges)
            trig = _cron_trigger(v, "UTC")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"invalid cron expression {v!r}: {exc}") from None
        try:
            CronSim(trig.crontab, datetime(2000, 1, 1, tzinfo=timezone.utc))
        except CronSimError as exc:
            # e.g. "0 0 31 2 *": no such day in those months (a day field with words, such as
            # APScheduler's "last", is one cronsim cannot read, not one that never fires)
            if "day-of-month" in str(exc) and re.fullmatch(r"[0-9,*/-]+", v.split()[2]):
                raise ValueError(f"cron expression {v!r} never fires: day {v.split()[2]} does not occur in "
                                 f"month(s) {v.split()[3]}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v


class IntervalSchedule(_Strict):
    """Fires every ``every``; each fire processes [fire - every, fire). Aligned to ``anchor``."""

    type: Literal["interval"]
    every: Duration
    anchor: str = Field("1970-01-01T00:00:00Z", description="ISO time the grid is aligned to (its first fire)")

    @field_validator("anchor")
    @classmethod
    def _valid_anchor(cls, v: str) -> str:
        from skyfeast.scheduler.timing.windows import parse_time

        if v.strip().lower() == "now":
            raise ValueError("anchor must be a fixed time, not 'now' (the grid would move at every start)")
        try:
            t = parse_time(v)
        except (ValueError, OverflowError):
            raise ValueError(f"anchor {v[:64]!r} is not an ISO-8601 time such as 2026-01-01T00:00:00Z") from None
        if not 1900 <= t.year <= 9000:
            raise ValueError(f"anchor {v[:64]!r} must fall between the years 1900 and 9000")
        return v


Schedule = Annotated[Union[CronSchedule, IntervalSchedule], Field(discriminator="type")]


# --------------------------------------------------------------------------- sources
class ParquetSource(_Strict):
    """Parquet files under the provider's storage root.

    ``path`` may be a glob and may hold ``{start}``/``{end}`` (formatted with a
    strftime spec, e.g. ``{start:%Y-%m-%d}``) or ``{date}`` which expands to
    one path per UTC day the read range touches.
    """

    type: Literal["parquet"]
    path: PathStr
    timestamp_field: str = "event_timestamp"
    lookback: Duration | None = Field(
        None, description="read [window end - lookback, window end) instead of the window alone"
    )
    replicas: dict[str, PathStr] | None = Field(
        None, description="provider -> path of this source on that provider's storage; default: every "
                          "provider holds it at `path`")
    cross_cloud: bool = Field(
        False, description="a provider with no replica may read another provider's replica (egress costs)")
    columns: dict[str, str | None] | None = Field(
        None, description="columns every input file must have, each with its type (e.g. int64, double, string, "
                          "timestamp[utc]) or null for any type; the join keys and timestamp are always required")
    require_window_days: bool = Field(
        True, description="with a {date} path, every day the window itself covers must have a file (else the "
                          "window fails as data); false for sources that write no file for a day without events")

    def replica_path(self, provider: str) -> str | None:
        """The path of the replica on ``provider``'s own storage, or None if it has none."""
        if self.replicas is None:
            return self.path
        return self.replicas.get(provider)


class JobOutputSource(_Strict):
    """The offline output other jobs wrote for the same window: one job, or several whose outputs are
    joined on the entity keys (inner join: an entity missing from one upstream is not scored)."""

    type: Literal["job"]
    job: str | list[str] = Field(description="the upstream job, or a list of upstream jobs to join on the entity keys")
    join: Literal["auto", "broadcast", "shuffle"] = Field(
        "auto", description="how several upstreams are joined: broadcast (each worker reads the other upstreams' "
                            "whole output), shuffle (every upstream hash-partitioned by the entity keys), or auto "
                            "(shuffle when the other upstreams' outputs for the window hold more than 100 million "
                            "values, rows times columns)")

    @field_validator("job")
    @classmethod
    def _some_jobs(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not 1 <= len(v) <= 64:
                raise ValueError(f"a job reads 1 to 64 upstream jobs, not {len(v)}")
            dup = sorted({j for j in v if v.count(j) > 1})
            if dup:
                raise ValueError(f"upstream job(s) {dup} listed twice")
        return v

    @field_validator("join")
    @classmethod
    def _join_needs_two(cls, v: str, info: ValidationInfo) -> str:
        job = info.data.get("job")
        if v != "auto" and job is not None and (isinstance(job, str) or len(job) < 2):
            raise ValueError(f"join: {v} joins two or more upstream jobs; this source reads one")
        return v

    @property
    def jobs(self) -> list[str]:
        """The upstream jobs, the first one's parts giving the chunks."""
        return [self.job] if isinstance(self.job, str) else list(self.job)


Source = Annotated[Union[ParquetSource, JobOutputSource], Field(discriminator="type")]


class ModelSpec(_Strict):
    artifact: PathStr = Field(description="path under the provider's storage root, e.g. models/risk.joblib")
    scorer: str = Field(pattern=IMPORT_RE, description="module:function(model, frame, window) -> frame")


class ModelGroup(_Strict):
    """Models of the registry scored together over one frame: named ones, or a selector."""

    models: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]] | None = Field(
        None, min_length=1, max_length=100_000, description="model names")
    prefix: str | None = Field(None, min_length=1, max_length=128, description="every model whose name starts so")
    tag: str | None = Field(None, min_length=1, max_length=256, description="models tagged KEY or KEY=VALUE")
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
                       description="the alias each model is scored at")
    versions_field: str = Field("model_set", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                                description="String field of the view that records the set of model versions")

    @model_validator(mode="after")
    def _one_selector(self) -> "ModelGroup":
        if self.models is not None and (self.prefix is not None or self.tag is not None):
            raise ValueError("a group takes either models, or a prefix and/or a tag, not both")
        if self.models is None and self.prefix is None and self.tag is None:
            raise ValueError("a group needs models (a list of names), a prefix or a tag")
        return self


# --------------------------------------------------------------------------- jobs
class _JobBase(_Strict):
    name: str = Field(pattern=NAME_RE)
    schedule: Schedule
    source: Source
    feature_view: str
    providers: list[str] | None = Field(None, description="allowed providers; default: all")
    retries: Int = Field(0, ge=0, le=100)
    timeout: Duration = Field(default=timedelta(hours=1))
    partitions: Int | None = Field(None, ge=1, le=100_000, description="partitions after entity shuffle")
    catchup: Literal["none", "latest", "all"] = Field(
        "all", description="windows missed while no daemon ran: none, only the latest, or all")
    max_catchup: Duration = Field(default=timedelta(hours=24), description="never catch up windows older than this")

    @property
    def upstreams(self) -> list[str]:
        """The jobs whose output of the same window this job reads ([] for a parquet source)."""
        return self.source.jobs if self.source.type == "job" else []


class FeatureJob(_JobBase):
    kind: Literal["feature"]
    transform: str = Field(pattern=IMPORT_RE, description="module:function(frame, window) -> frame")


class ModelJob(_JobBase):
    kind: Literal["model"]
    model: ModelSpec | None = Field(None, description="one artifact scored by your scorer function")
    group: ModelGroup | None = Field(None, description="registry models scored together (docs/models.md)")

    @model_validator(mode="after")
    def _model_or_group(self) -> "ModelJob":
        if (self.model is None) == (self.group is None):
            raise ValueError("a model job takes either model (an artifact and a scorer) or group (registry models)")
        return self


Job = Annotated[Union[FeatureJob, ModelJob], Field(discriminator="kind")]


class DaemonSettings(_Strict):
    """How daemons coordinate through the ledger."""

    run_lease: Duration = Field(default=timedelta(seconds=30),
                                description="a running run not heartbeated for this long is resumed by another daemon")
    leader_lease: Duration = Field(default=timedelta(seconds=10),
                                   description="leader lease; a standby takes over this long after the leader dies")
    poll: Duration = Field(default=timedelta(seconds=1), description="how often queued and orphaned runs are picked up")
    max_parallel: Int = Field(8, ge=1, le=1024, description="runs executing at once")
    grace: Duration = Field(default=timedelta(seconds=60), description="SIGTERM: time running work gets before it is cancelled")
    ledger_connect_timeout: Duration = Field(default=timedelta(seconds=3), le=timedelta(minutes=10),
                                             description="deadline for connecting to the ledger (PostgreSQL)")
    ledger_statement_timeout: Duration = Field(
        default=timedelta(seconds=30), le=timedelta(hours=1),
        description="a ledger statement running longer is cancelled (PostgreSQL statement_timeout); "
                    "SQLite: how long a write waits for the database lock")
    http: str | None = Field(None, description="HOST:PORT of the daemon's HTTP server (/healthz, /readyz, "
                                               "/metrics); none by default; `daemon --http` overrides")

    http_token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                       description="environment variable holding the HTTP API's bearer token")
    http_token_file: PathStr | None = Field(None, min_length=1, description="file holding the HTTP API's bearer token "
                                                                       "(relative to the config file; mode 600)")
    http_read_token: bool = Field(False, description="GET /api/... needs the token too (actions always do)")

    @field_validator("http")
    @classmethod
    def _http_address(cls, v: str | None) -> str | None:
        if v is not None:
            parse_http_address(v)
        return v

    @model_validator(mode="after")
    def _one_token(self) -> "DaemonSettings":
        if self.http_token_env and self.http_token_file:
            raise ValueError("give http_token_env or http_token_file, not both")
        if self.http_read_token and not (self.http_token_env or self.http_token_file):
            raise ValueError("http_read_token needs a token: set http_token_env or http_token_file")
        return self

    @model_validator(mode="after")
    def _lease_vs_poll(self) -> "DaemonSettings":
        for key in ("leader_lease", "run_lease"):
            if getattr(self, key) < 3 * self.poll:
                raise ValueError(f"{key} must be at least 3 x poll, so it can be renewed in time")
        return self


class HealthSettings(_Strict):
    """Provider health probing and the circuit breaker (see scheduler.policy.observe)."""

    interval: Duration = Field(default=timedelta(seconds=1), description="time between probes of a provider")
    timeout: Duration = Field(default=timedelta(seconds=2), description="deadline of one probe")
    miss_budget: Int = Field(3, ge=1, le=100, description="consecutive failed probes before a provider is down")
    blocklist_ttl: Duration = Field(default=timedelta(seconds=30), description="how long a down provider is avoided")
    failback_after: Duration = Field(default=timedelta(seconds=30),
                                     description="healthy time before new runs return to a recovered provider")
    min_workers: Int = Field(1, ge=0, le=100_000, description="fewer workers than this makes a provider degraded")


class OfflineSettings(_Strict):
    """Where Feast reads offline outputs, and how outputs written elsewhere get there."""

    primary: str | None = Field(None, description="provider whose storage the Feast batch sources point at; "
                                                   "default: the provider with the lowest priority value")
    reconcile_every: Duration = Field(default=timedelta(minutes=5),
                                      description="how often the leader copies failed-over outputs to the primary")
    reconcile_batch: Int = Field(50, ge=1, le=10_000, description="runs reconciled per pass")


class FeastSettings(_Strict):
    repo: PathStr = Field(description="directory holding feature_store.yaml, relative to the config file")
    freshness_slo: dict[str, Duration] = Field(
        default_factory=dict, description="feature view -> the age its freshness must stay under; exported as "
                                          "skyfeast_feature_freshness_slo_seconds for alert rules")


class ModelSettings(_Strict):
    """The model registry's bridge to MLflow (extra ``skyfeast[mlflow]``; docs/models.md)."""

    mlflow_tracking_uri: str | None = Field(
        None, min_length=1, description="MLflow tracking (and registry) URI: `models register` also publishes each "
                                        "version there and `promote`/`rollback` move the same alias; a relative "
                                        "sqlite:/// path is relative to the config file; no password in it")
    mlflow_experiment: str = Field("skyfeast", min_length=1, max_length=256,
                                   description="MLflow experiment whose runs hold the published artifacts")
    mlflow_artifact_location: str | None = Field(
        None, min_length=1, description="artifact location of that experiment when skyfeast creates it "
                                        "(default: the tracking server's)")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v and "://" in v and urlsplit(v).password:
            raise ValueError("no password in the tracking URI (it is copied into artifacts and output): MLflow "
                             "reads MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN")
        return v


class Config(_Strict):
    project: str = Field(pattern=NAME_RE)
    state: str | None = Field(None, description="SQLAlchemy URL or file path of the run ledger")
    feast: FeastSettings
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    providers: dict[str, Provider] = Field(min_length=1)
    jobs: list[Job] = Field(default_factory=list)

    _base_dir: Path = PrivateAttr(default=Path("."))
    _file: str = PrivateAttr(default="skyfeast.yaml")
    _smap: SourceMap | None = PrivateAttr(default=None)

    @field_validator("feast", mode="before")
    @classmethod
    def _feast_shorthand(cls, v: Any) -> Any:
        return {"repo": v} if isinstance(v, str) else v

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, v: dict[str, Provider]) -> dict[str, Provider]:
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(f"provider name {name!r} must match {NAME_RE}")
        return v

    @model_validator(mode="after")
    def _cross_refs(self) -> "Config":
        # cross references are checked in config.checks so that each
        # problem gets its own location; nothing to do here.
        return self

    # ---- resolved locations -------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def file(self) -> str:
        return self._file

    @property
    def source_map(self) -> SourceMap | None:
        return self._smap

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self._base_dir / path).resolve()

    @property
    def feast_repo(self) -> Path:
        return self.resolve(self.feast.repo)

    @property
    def state_url(self) -> str:
        if self.state is None:
            return f"sqlite:///{self._base_dir / '.skyfeast' / 'state.db'}"
        if "://" in self.state:
            return self.state
        return f"sqlite:///{self.resolve(self.state)}"

    @property
    def mlflow_tracking_uri(self) -> str | None:
        """``models.mlflow_tracking_uri`` with a relative SQLite path made absolute (against the config's folder)."""
        uri = self.models.mlflow_tracking_uri
        if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
            return f"sqlite:///{self.resolve(uri[len('sqlite:///'):])}"
        return uri

    def job(self, name: str) -> FeatureJob | ModelJob:
        for j in self.jobs:
            if j.name == name:
                return j
        raise KeyError(name)

    def allowed_providers(self, job: FeatureJob | ModelJob) -> list[str]:
        return list(job.providers) if job.providers else list(self.providers)

    @property
    def primary_provider(self) -> str:
        """The provider whose storage holds the offline outputs Feast reads."""
        if self.offline.primary is not None:
            return self.offline.primary
        return min(self.providers, key=lambda n: (self.providers[n].priority, n))


register_tags("local", "address", "gateway", "kubernetes", "coiled", "cloudprovider", "s3", "gcs", "cron", "interval",
              "parquet", "job", "feature", "model")
