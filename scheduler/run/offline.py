"""Offline outputs across clouds: where a part file lives, and manifests.

A run writes its offline parts (``offline/<view>/<window tag>-partNNNNN.parquet``)
to the storage of the provider that executes each chunk, so after a failover
one window's parts can sit on two storages. Feast's batch source points at
one place only: the *primary* provider's storage (``offline.primary``, by
default the provider with the lowest priority value).

* :func:`owner_of` maps a part's URL back to the provider storage holding it.
* :func:`write_manifest` records, next to the outputs, which files make a
  window (``manifests/<view>/<window tag>.json``).

The reconciler (:mod:`.reconcile`) copies parts that landed off the primary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from skyfeast.adapters.base import ObjectStore
from skyfeast.scheduler.timing.windows import Window

log = logging.getLogger("skyfeast.offline")


STAGING = "staging"  # where a run stages its chunks before publishing them: no reader looks there


def parts_prefix(feature_view: str, window: Window) -> str:
    return f"offline/{feature_view}/{window.tag}-part"


def manifest_key(feature_view: str, window: Window) -> str:
    return f"manifests/{feature_view}/{window.tag}.json"


def owner_of(url: str, stores: Mapping[str, ObjectStore]) -> tuple[str, str] | None:
    """(provider, key) of the storage whose root is the longest prefix of ``url``; None if none is."""
    best: tuple[str, str] | None = None
    best_len = -1
    for name, store in stores.items():
        root = store.url("").rstrip("/") + "/"
        if url.startswith(root) and len(root) > best_len:
            best, best_len = (name, url[len(root):]), len(root)
    return best


def write_manifest(store: ObjectStore, *, job: str, feature_view: str, window: Window, run_id: int,
                   provider: str, files: Iterable[str], rows: int) -> str:
    key = manifest_key(feature_view, window)
    doc = {
        "job": job, "feature_view": feature_view, "run_id": run_id, "provider": provider,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "files": sorted(files), "rows": rows,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    store.write_bytes(key, json.dumps(doc, indent=1).encode())
    return key


def read_manifest(store: ObjectStore, feature_view: str, window: Window) -> dict[str, Any]:
    return json.loads(store.read_bytes(manifest_key(feature_view, window)))
