"""The Feast engine plugin's path: ``skyfeast.featurestore.engine.DaskComputeEngine``, and the
pre-namespace ``featurestore.engine.DaskComputeEngine`` that still works, with a warning, for one release."""

from __future__ import annotations

import warnings

import pytest


def _engine(tmp_path, engine_type: str):
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    cfg = RepoConfig(project="p", provider="local", registry=str(tmp_path / "registry.db"),
                     online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
                     batch_engine={"type": engine_type, "workers": 3}, entity_key_serialization_version=3,
                     repo_path=tmp_path)
    return FeatureStore(config=cfg)._get_provider().batch_engine


def test_new_path_loads_without_warning(tmp_path):
    from skyfeast.featurestore.engine import DaskComputeEngine

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        engine = _engine(tmp_path, "skyfeast.featurestore.engine.DaskComputeEngine")
    assert type(engine) is DaskComputeEngine
    assert engine.config.workers == 3


def test_old_path_still_loads_and_warns(tmp_path):
    from skyfeast.featurestore.engine import DaskComputeEngine

    with pytest.warns(DeprecationWarning, match="skyfeast.featurestore.engine.DaskComputeEngine"):
        engine = _engine(tmp_path, "featurestore.engine.DaskComputeEngine")
    assert isinstance(engine, DaskComputeEngine)
    assert engine.config.workers == 3
