"""Deprecated alias of :mod:`skyfeast.featurestore.engine` (removed in the next release)."""

from __future__ import annotations

import warnings
from typing import Literal

from skyfeast.featurestore.engine import ENGINE_TYPE
from skyfeast.featurestore.engine import DaskComputeEngine as _Engine
from skyfeast.featurestore.engine import DaskComputeEngineConfig as _EngineConfig

OLD_TYPE = "featurestore.engine.DaskComputeEngine"
MESSAGE = (f"batch_engine type {OLD_TYPE!r} is deprecated and will be removed in the next skyfeast release; "
           f"write type: {ENGINE_TYPE} in feature_store.yaml")


class DaskComputeEngineConfig(_EngineConfig):
    """Feast finds the config class by the engine's dotted name + ``Config``."""

    type: Literal["featurestore.engine.DaskComputeEngine"] = OLD_TYPE  # type: ignore[assignment]


class DaskComputeEngine(_Engine):
    config_class = DaskComputeEngineConfig

    def __init__(self, **kwargs):
        warnings.warn(MESSAGE, DeprecationWarning, stacklevel=2)
        super().__init__(**kwargs)


__all__ = ["DaskComputeEngine", "DaskComputeEngineConfig"]
