"""Model groups: many registry models scored over one frame, and written to one feature view.

* :func:`select` resolves a group's selector (names, a prefix, a tag, at an alias) to versions;
* :func:`field_of` is the view field a model writes: its version's first output, else its name;
* :func:`set_id` names a set of (model, version) pairs: the value every written row carries in
  the group's versions field, so a plain Feast read says which versions produced it;
* :func:`problems` checks a group against its feature view and its input columns;
* :func:`feast_schema` builds the view's ``schema`` from the registry, for a Feast repo's
  ``definitions.py`` (nobody writes 2,000 ``Field`` lines by hand).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from skyfeast.featurestore.models.errors import RegistryError
from skyfeast.featurestore.models.registry import CHAMPION, ModelRegistry, ModelVersion

VERSIONS_FIELD = "model_set"


class GroupError(RegistryError):
    """A group that cannot be scored as configured; the message says why."""


def describe(*, models: Sequence[str] | None = None, prefix: str | None = None, tag: str | None = None,
             alias: str = CHAMPION) -> str:
    if models is not None:
        return f"models {', '.join(models[:5])}{' ...' if len(models) > 5 else ''} at alias {alias!r}"
    parts = [f"prefix {prefix!r}" if prefix else "", f"tag {tag!r}" if tag else ""]
    return " and ".join(p for p in parts if p) + f" at alias {alias!r}"


def select(registry: ModelRegistry, *, models: Sequence[str] | None = None, prefix: str | None = None,
           tag: str | None = None, alias: str = CHAMPION) -> list[ModelVersion]:
    """The versions a group scores with, by model name; :class:`GroupError` if none match (and the
    registry's own errors for a named model that is unknown or lacks the alias)."""
    found = registry.at_alias(alias, names=models, prefix=prefix, tag=tag)
    if not found:
        raise GroupError(f"the group's selector ({describe(models=models, prefix=prefix, tag=tag, alias=alias)}) "
                         "matches no model of the registry (see `skyfeast models list`)")
    return found


def field_of(version: ModelVersion) -> str:
    return version.outputs[0] if version.outputs else version.model


def set_id(pairs: Iterable[tuple[str, int]]) -> str:
    """A short, stable name for a set of (model, version) pairs: ``ms-`` and 16 hex digits."""
    text = "\n".join(f"{m}@{v}" for m, v in sorted(pairs))
    return "ms-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def problems(versions: Sequence[ModelVersion], *, view: str, view_fields: set[str], versions_field: str,
             input_columns: set[str] | None = None) -> list[str]:
    """What stops ``versions`` being scored into feature view ``view``: a model without its field, a
    missing versions field, two models writing one field, a flavour that is unknown or not installed,
    or (given the input's columns) a feature the input lacks."""
    from skyfeast.featurestore.models.flavours import FlavourError, check_flavour

    out: list[str] = []
    if versions_field not in view_fields:
        out.append(f"feature view {view!r} has no field {versions_field!r} (String) for the model versions")
    seen: dict[str, str] = {}
    for v in versions:
        f = field_of(v)
        if f in seen:
            out.append(f"models {seen[f]!r} and {v.model!r} both write field {f!r}")
        seen[f] = v.model
        if f not in view_fields:
            out.append(f"model {v.model!r} (version {v.version}) writes field {f!r}, which feature view {view!r} lacks")
        try:
            check_flavour(v.flavour)
        except FlavourError as exc:
            out.append(f"model {v.model!r} (version {v.version}): {exc}")
        if input_columns is not None:
            missing = [c for c in v.features if c not in input_columns]
            if missing:
                out.append(f"model {v.model!r} (version {v.version}) needs input feature(s) {missing}, "
                           f"which its input lacks")
        if not v.features:
            out.append(f"model {v.model!r} (version {v.version}) records no input features "
                       "(register it with --features)")
    return out


def feast_schema(state: str | Any, *, models: Sequence[str] | None = None, prefix: str | None = None,
                 tag: str | None = None, alias: str = CHAMPION, versions_field: str = VERSIONS_FIELD) -> list:
    """Feast ``Field``s for a group's view: one ``Float64`` per model's field, and the ``String`` versions
    field.  ``state`` is the ledger's URL (``sqlite:///...``, ``postgresql+psycopg://...``) or an engine.

    In ``definitions.py``::

        schema=[Field(name="user_id", dtype=Int64), *feast_schema("sqlite:///state.db", prefix="risk_")]
    """
    import sqlalchemy as sa
    from feast import Field
    from feast.types import Float64, String

    engine = sa.create_engine(state) if isinstance(state, str) else state
    try:
        versions = select(ModelRegistry(engine), models=models, prefix=prefix, tag=tag, alias=alias)
    finally:
        if isinstance(state, str):
            engine.dispose()
    return [*(Field(name=field_of(v), dtype=Float64) for v in versions), Field(name=versions_field, dtype=String)]
