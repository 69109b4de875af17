"""Configuration: the ``skyfeast.yaml`` models, loading them from a file, and their checks.

* :mod:`.models` – pydantic models, no I/O;
* :mod:`.load` – :func:`load_config`, the one way from a file to a :class:`Config`;
* :mod:`.checks` – semantic checks that need more than one field;
* :mod:`.yamlsrc` – YAML with line numbers, bounded, with ``${ENV}`` expansion.
"""

from skyfeast.scheduler.config.load import json_schema, load_config
from skyfeast.scheduler.config.models import (
    CLUSTER_SDKS,
    TLS_SCHEMES,
    AddressCluster,
    CloudProviderCluster,
    Cluster,
    ClusterTLS,
    CoiledCluster,
    Config,
    CronSchedule,
    DaemonSettings,
    FeastSettings,
    FeatureJob,
    GatewayCluster,
    GCSStorage,
    HealthSettings,
    IntervalSchedule,
    Job,
    JobOutputSource,
    KubernetesCluster,
    LocalCluster,
    LocalStorage,
    ModelJob,
    ModelSpec,
    OfflineSettings,
    ParquetSource,
    Provider,
    S3Storage,
    Schedule,
    Source,
    Storage,
    parse_duration,
)

__all__ = [
    "CLUSTER_SDKS", "TLS_SCHEMES", "AddressCluster", "CloudProviderCluster", "Cluster", "ClusterTLS", "CoiledCluster",
    "Config", "CronSchedule", "DaemonSettings", "FeastSettings", "FeatureJob", "GCSStorage", "GatewayCluster",
    "HealthSettings", "IntervalSchedule", "Job", "JobOutputSource", "KubernetesCluster", "LocalCluster",
    "LocalStorage", "ModelJob", "ModelSpec", "OfflineSettings", "ParquetSource", "Provider", "S3Storage", "Schedule",
    "Source", "Storage", "json_schema", "load_config", "parse_duration",
]
