"""Set-up shared by the model-group tests (tests/integration/test_model_groups*.py): ``feast apply`` of a
project whose definitions gained a view, linear models registered in-process, and reads of the online
store through vanilla Feast in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tests.integration.conftest import BIN


def feast_apply(project: Path) -> None:
    """``feast apply`` in the project's ``feature_repo`` (after a test added a view to its definitions)."""
    proc = subprocess.run([str(BIN / "feast"), "apply"], cwd=project / "feature_repo", capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]


def register_linear(project: Path, cfg: Path, models: Mapping[str, tuple[list[str], np.ndarray, float]]) -> None:
    """Each ``name: (features, coef, intercept)`` as version 1 of a logistic ``linear`` model, promoted to
    ``champion``, in this process (hundreds of CLI processes would cost minutes; the CLI's own
    registration is exercised by the tests' other models). The artifact goes to both providers."""
    from skyfeast.featurestore.models import ModelRegistry, checksum
    from skyfeast.featurestore.models.flavours import linear_artifact
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    ledger = open_ledger(load_config(cfg, check_imports=False, check_feast=False))
    try:
        reg = ModelRegistry(ledger.engine)
        for name, (feats, coef, b) in models.items():
            data = linear_artifact(coef, b, "logistic")
            key = f"models/{name}/v1/model.json"
            for root in ("aws", "gcp"):
                dest = project / "data" / root / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            sha, size = checksum(data)
            reg.register(name, artifact_key=key, sha256=sha, size=size, created_by="test", flavour="linear",
                         features=feats)
            reg.promote(name, 1, reason="first", actor="test")
    finally:
        ledger.close()


def read_online(project: Path, features: Iterable[str], users: Iterable[int]) -> pd.DataFrame:
    """``get_online_features`` of ``features`` (``view:field``) for ``users``, by vanilla Feast in its own
    process, indexed by ``user_id``."""
    code = ("import json, sys\nfrom feast import FeatureStore\n"
            "feats, users = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
            "store = FeatureStore(repo_path='feature_repo')\n"
            "print(json.dumps(store.get_online_features(features=feats, entity_rows=[{'user_id': u} for u in users])"
            ".to_dict()))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(features)),
                           json.dumps([int(u) for u in users])], cwd=project, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return pd.read_json(pd.io.common.StringIO(proc.stdout)).set_index("user_id")
