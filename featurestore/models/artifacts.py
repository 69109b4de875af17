"""Artifact checksums: what the registry records at registration and checks on every read.

Storage stays with the caller: it writes the bytes wherever it likes (the CLI
uses the primary provider's object store, ``models/<name>/v<N>/<file>``) and
records the key, sha256 and size.  Reading back goes through :func:`verify`,
so a corrupt or missing artifact is an error naming the model, the version and
both checksums, never a silent fallback to another version.
"""

from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from skyfeast.featurestore.models.errors import CorruptArtifact, MissingArtifact

if TYPE_CHECKING:
    from skyfeast.adapters.base import ObjectStore
    from skyfeast.featurestore.models.registry import ModelVersion

_BLOCK = 1 << 20


def checksum(source: bytes | str | PathLike) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of ``source``: bytes, or a file path (read in 1 MiB blocks).

    Raises ``OSError`` for an unreadable file."""
    h = hashlib.sha256()
    if isinstance(source, (bytes, bytearray, memoryview)):
        h.update(source)
        return h.hexdigest(), len(source)
    size = 0
    with Path(source).open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def verify(version: ModelVersion, data: bytes | None) -> bytes:
    """``data`` if it is ``version``'s artifact (same sha256 and size); ``None`` means it was not found.

    Raises :class:`MissingArtifact` or :class:`CorruptArtifact`."""
    if data is None:
        raise MissingArtifact(version.model, version.version, version.artifact_key, version.sha256)
    actual = checksum(data)
    if actual != (version.sha256, version.size):
        raise CorruptArtifact(version.model, version.version, version.artifact_key,
                              (version.sha256, version.size), actual)
    return data


def read_verified(store: ObjectStore, version: ModelVersion) -> bytes:
    """``version``'s artifact read from ``store`` and checked (see :func:`verify`)."""
    from skyfeast.adapters.base import NotFound

    try:
        data = store.read_bytes(version.artifact_key)
    except NotFound:
        data = None
    return verify(version, data)
