"""Errors of the model registry, neutral (no SQLAlchemy or storage types leak through).

::

    RegistryError                    root: catch this at a boundary (the CLI maps it to exit 2)
    ├── InvalidName (ValueError)     a model or alias name that cannot be used
    ├── UnknownModel (LookupError)   no model of that name
    ├── UnknownVersion (LookupError) the model has no such version
    ├── UnknownAlias (LookupError)   the model has no such alias
    ├── NothingToRollBack            the alias has no earlier version to go back to
    └── ArtifactError                a version's artifact cannot be trusted
        ├── MissingArtifact          it is not in the store
        └── CorruptArtifact          its bytes do not match the recorded sha256/size

An artifact error never falls back to another version: the caller decides.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Root of every error the model registry raises."""


class InvalidName(RegistryError, ValueError):
    def __init__(self, kind: str, name: str, rule: str):
        self.kind, self.name = kind, name
        super().__init__(f"invalid {kind} name {name!r}: {rule}")


class UnknownModel(RegistryError, LookupError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown model {name!r} (see `skyfeast models list`)")


class UnknownVersion(RegistryError, LookupError):
    def __init__(self, name: str, version: int, latest: int | None):
        self.name, self.version, self.latest = name, version, latest
        have = f"it has versions 1 to {latest}" if latest else "it has no versions"
        super().__init__(f"model {name!r} has no version {version}; {have}")


class UnknownAlias(RegistryError, LookupError):
    def __init__(self, name: str, alias: str, known: list[str]):
        self.name, self.alias = name, alias
        super().__init__(f"model {name!r} has no alias {alias!r}; aliases: {', '.join(known) or 'none'}")


class NothingToRollBack(RegistryError):
    def __init__(self, name: str, alias: str, why: str):
        self.name, self.alias = name, alias
        super().__init__(f"cannot roll back alias {alias!r} of model {name!r}: {why}")


class ArtifactError(RegistryError):
    """A version's artifact cannot be used; names the model, version and key."""

    def __init__(self, model: str, version: int, key: str, message: str):
        self.model, self.version, self.key = model, version, key
        super().__init__(f"model {model!r} version {version}: artifact {key}: {message}")


class MissingArtifact(ArtifactError):
    def __init__(self, model: str, version: int, key: str, expected_sha256: str):
        self.expected = expected_sha256
        super().__init__(model, version, key, f"not found (expected sha256 {expected_sha256})")


class CorruptArtifact(ArtifactError):
    def __init__(self, model: str, version: int, key: str, expected: tuple[str, int], actual: tuple[str, int]):
        self.expected, self.actual = expected, actual
        super().__init__(model, version, key, f"checksum mismatch: expected sha256 {expected[0]} ({expected[1]} bytes), "
                                              f"got {actual[0]} ({actual[1]} bytes)")
