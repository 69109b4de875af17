"""The versioned model registry (metadata in the ledger's database; artifacts in object stores).

* :mod:`.tables` – the registry's tables (created by the ledger's migration);
* :mod:`.registry` – :class:`ModelRegistry`: register, get, list, promote, roll back, history;
* :mod:`.artifacts` – checksums, and the check every artifact read goes through;
* :mod:`.errors` – the neutral error tree.

See docs/models.md.
"""

from skyfeast.featurestore.models.artifacts import checksum, read_verified, verify
from skyfeast.featurestore.models.errors import (
    ArtifactError,
    CorruptArtifact,
    InvalidName,
    MissingArtifact,
    NothingToRollBack,
    RegistryError,
    UnknownAlias,
    UnknownModel,
    UnknownVersion,
)
from skyfeast.featurestore.models.registry import CHAMPION, AliasMove, ModelRegistry, ModelSummary, ModelVersion
from skyfeast.featurestore.models.tables import create_tables

__all__ = ["CHAMPION", "AliasMove", "ArtifactError", "CorruptArtifact", "InvalidName", "MissingArtifact",
           "ModelRegistry", "ModelSummary", "ModelVersion", "NothingToRollBack", "RegistryError", "UnknownAlias",
           "UnknownModel", "UnknownVersion", "checksum", "create_tables", "read_verified", "verify"]
