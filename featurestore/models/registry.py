"""The model registry: named models, immutable numbered versions, movable aliases.

:class:`ModelRegistry` works on any SQLAlchemy engine whose database has the
tables of :mod:`.tables` (the ledger's creates them), SQLite or PostgreSQL.

Guarantees:

* versions of a model are numbered 1, 2, ... in the order they commit, and two
  registers (threads, processes, an HA pair) never get the same number: the
  primary key (model, version) refuses a duplicate, PostgreSQL serialises
  registers of one model on its row (``SELECT ... FOR UPDATE``), and a write
  that loses a race (a duplicate, or SQLite's lock) is retried in a new transaction;
* a version is never changed or deleted once committed;
* an alias move (promote, rollback) writes the alias row and its history row in
  one transaction: the history is the complete, ordered record of moves.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from skyfeast.featurestore.models.errors import (
    InvalidName,
    NothingToRollBack,
    RegistryError,
    UnknownAlias,
    UnknownModel,
    UnknownVersion,
)
from skyfeast.featurestore.models.tables import model_alias_history_t, model_aliases_t, model_versions_t, models_t

UTC = timezone.utc
CHAMPION = "champion"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # also a path component of artifact keys
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    artifact_key: str
    artifact_uri: str | None
    sha256: str
    size: int
    flavour: str
    features: list[str]
    outputs: list[str]
    parent_version: int | None
    metrics: dict[str, Any] | None
    train_start: datetime | None
    train_end: datetime | None
    data_fingerprint: str | None
    created_at: datetime
    created_by: str

    def as_dict(self) -> dict[str, Any]:
        return {k: _iso(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ModelSummary:
    name: str
    created_at: datetime
    description: str | None
    tags: dict[str, Any] | None
    latest_version: int
    versions: int
    aliases: dict[str, int] = field(default_factory=dict)  # alias → version

    def as_dict(self) -> dict[str, Any]:
        return {k: _iso(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    from_version: int | None  # None: the alias's first move
    to_version: int
    moved_at: datetime
    reason: str | None
    actor: str

    def as_dict(self) -> dict[str, Any]:
        return {k: _iso(v) for k, v in self.__dict__.items()}


def _version(r: Any) -> ModelVersion:
    m = r._mapping
    return ModelVersion(**{f: m[f] for f in ModelVersion.__dataclass_fields__})


def _move(r: Any) -> AliasMove:
    m = r._mapping
    return AliasMove(**{f: m[f] for f in AliasMove.__dataclass_fields__})


def check_name(name: str, kind: str = "model") -> str:
    """``name`` if usable as a model (or, with ``kind="alias"``, an alias) name; :class:`InvalidName` otherwise."""
    pattern, rule = ((_ALIAS, "a letter, then up to 63 letters, digits, '_' or '-'") if kind == "alias" else
                     (_NAME, "a letter or digit, then up to 127 letters, digits, '_', '.' or '-'"))
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise InvalidName(kind, str(name), rule)
    return name


class ModelRegistry:
    """Thread-safe (one engine, short transactions). ``retries``: attempts of a write that lost a race."""

    def __init__(self, engine: sa.Engine, *, retries: int = 30):
        self.engine = engine
        self.retries = retries
        self._dialect = engine.dialect.name

    # ------------------------------------------------------------------ writes
    def register(self, name: str, *, artifact_key: str | Callable[[int], str], sha256: str, size: int,
                 created_by: str, flavour: str = "joblib", features: Iterable[str] = (),
                 outputs: Iterable[str] = (), parent_version: int | None = None,
                 metrics: dict[str, Any] | None = None, train_start: datetime | None = None,
                 train_end: datetime | None = None, data_fingerprint: str | None = None,
                 artifact_uri: str | Callable[[int], str] | None = None, description: str | None = None,
                 tags: dict[str, Any] | None = None,
                 publish: Callable[[ModelVersion], None] | None = None) -> ModelVersion:
        """Record the next version of ``name`` (creating the model, with ``description`` and ``tags``, if new).

        ``artifact_key`` (and ``artifact_uri``) may be a function of the new version number, for layouts
        like ``models/<name>/v<N>/<file>``. ``publish``, if given, is called with the new version inside
        the transaction, after its row is inserted and before it commits: it writes the artifact to its
        key. No other register can hold that number meanwhile, and if ``publish`` raises nothing is
        recorded (the error propagates). It may be called again, for a later number, when the transaction
        loses a race. Raises :class:`InvalidName`, :class:`UnknownVersion` (``parent_version``),
        ``ValueError`` for a malformed checksum, size or training window."""
        check_name(name)
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, not {sha256!r}")
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a whole number of bytes >= 0, not {size!r}")
        if train_start is not None and train_end is not None and train_end < train_start:
            raise ValueError(f"training window ends ({train_end}) before it starts ({train_start})")
        features, outputs = [str(f) for f in features], [str(o) for o in outputs]

        def txn(conn: sa.Connection) -> ModelVersion:
            now = datetime.now(UTC)
            conn.execute(self._insert_ignore(models_t, dict(name=name, created_at=now, description=description,
                                                            tags=tags), "name"))
            self._lock(conn, name)
            latest = self._latest(conn, name)
            if parent_version is not None and not 1 <= parent_version <= latest:
                raise UnknownVersion(name, parent_version, latest or None)
            n = latest + 1
            row = dict(model=name, version=n, artifact_key=artifact_key(n) if callable(artifact_key) else artifact_key,
                       artifact_uri=artifact_uri(n) if callable(artifact_uri) else artifact_uri, sha256=sha256,
                       size=size, flavour=flavour, features=features, outputs=outputs, parent_version=parent_version,
                       metrics=metrics, train_start=train_start, train_end=train_end,
                       data_fingerprint=data_fingerprint, created_at=now, created_by=created_by)
            conn.execute(model_versions_t.insert().values(**row))
            version = ModelVersion(**row)
            if publish is not None:
                publish(version)
            return version

        return self._transact(txn, duplicates=True)

    def promote(self, name: str, version: int, alias: str = CHAMPION, *, reason: str | None = None,
                actor: str) -> AliasMove:
        """Point ``alias`` of ``name`` at ``version``, recording the move (alias row and history row in one
        transaction). Moving an alias to the version it already points at records nothing and returns
        a move with ``from_version == to_version``. Raises :class:`UnknownModel`, :class:`UnknownVersion`,
        :class:`InvalidName`."""
        check_name(alias, "alias")

        def txn(conn: sa.Connection) -> AliasMove:
            self._lock(conn, name)
            latest = self._latest(conn, name)
            if not 1 <= version <= latest:
                raise UnknownVersion(name, version, latest or None)
            current = self._alias_row(conn, name, alias)
            if current is not None and current.version == version:
                return AliasMove(name, alias, version, version, current.moved_at, current.reason, current.actor)
            return self._move(conn, name, alias, None if current is None else current.version, version, reason, actor)

        return self._transact(txn)

    def rollback(self, name: str, alias: str = CHAMPION, *, reason: str | None = None, actor: str) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last move (recorded like any move;
        so a second rollback undoes the first). Raises :class:`UnknownModel`, :class:`UnknownAlias`, and
        :class:`NothingToRollBack` when the last move was the alias's first."""
        check_name(alias, "alias")

        def txn(conn: sa.Connection) -> AliasMove:
            self._lock(conn, name)
            current = self._alias_row(conn, name, alias)
            if current is None:
                raise UnknownAlias(name, alias, sorted(self._aliases(conn, name)))
            h = model_alias_history_t
            last = conn.execute(sa.select(h.c.from_version, h.c.to_version).where(h.c.model == name, h.c.alias == alias)
                                .order_by(h.c.id.desc()).limit(1)).first()
            if last is None or last.from_version is None:
                raise NothingToRollBack(name, alias, f"it has pointed at version {current.version} since it was "
                                                     "first set")
            return self._move(conn, name, alias, current.version, last.from_version, reason, actor)

        return self._transact(txn)

    # ------------------------------------------------------------------ reads
    def get(self, name: str, version: int | None = None, alias: str | None = None) -> ModelVersion:
        """A version of ``name``: ``version``, the one ``alias`` points at, or (neither) the latest.
        Raises :class:`UnknownModel`, :class:`UnknownVersion`, :class:`UnknownAlias`."""
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        v = model_versions_t
        with self.engine.connect() as conn:
            if alias is not None:
                row = self._alias_row(conn, name, alias)
                if row is None:
                    self._require(conn, name)
                    raise UnknownAlias(name, alias, sorted(self._aliases(conn, name)))
                version = row.version
            elif version is None:
                version = self._latest(conn, name)
                if not version:
                    self._require(conn, name)
            r = conn.execute(sa.select(v).where(v.c.model == name, v.c.version == version)).first()
            if r is None:
                self._require(conn, name)
                raise UnknownVersion(name, version, self._latest(conn, name) or None)
        return _version(r)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first. Raises :class:`UnknownModel`."""
        v = model_versions_t
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(v).where(v.c.model == name).order_by(v.c.version)).all()
            if not rows:
                self._require(conn, name)
        return [_version(r) for r in rows]

    def aliases(self, name: str) -> dict[str, AliasMove]:
        """alias → its current position (its last move) for ``name``. Raises :class:`UnknownModel`."""
        a = model_aliases_t
        with self.engine.connect() as conn:
            self._require(conn, name)
            rows = conn.execute(sa.select(a).where(a.c.model == name).order_by(a.c.alias)).all()
        return {r.alias: AliasMove(name, r.alias, None, r.version, r.moved_at, r.reason, r.actor) for r in rows}

    def list_models(self) -> list[ModelSummary]:
        """Every model with its latest version, version count and aliases, by name (two queries)."""
        v, a, m = model_versions_t, model_aliases_t, models_t
        latest = (sa.select(v.c.model, sa.func.max(v.c.version).label("latest"), sa.func.count().label("n"))
                  .group_by(v.c.model).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(m, latest.c.latest, latest.c.n)
                                .join(latest, latest.c.model == m.c.name, isouter=True).order_by(m.c.name)).all()
            aliases: dict[str, dict[str, int]] = {}
            for r in conn.execute(sa.select(a.c.model, a.c.alias, a.c.version).order_by(a.c.model, a.c.alias)):
                aliases.setdefault(r.model, {})[r.alias] = r.version
        return [ModelSummary(r.name, r.created_at, r.description, r.tags, r.latest or 0, r.n or 0,
                             aliases.get(r.name, {})) for r in rows]

    def at_alias(self, alias: str = CHAMPION, *, names: Iterable[str] | None = None, prefix: str | None = None,
                 tag: str | None = None) -> list[ModelVersion]:
        """The version ``alias`` points at, for every model selected, by name (one query).

        Selected: the models named in ``names`` (each must exist and have the alias: else
        :class:`UnknownModel` or :class:`UnknownAlias`), else every model whose name starts with
        ``prefix`` and, with ``tag`` (``key`` or ``key=value``), whose tags hold it; models of a
        prefix or tag without the alias are left out."""
        v, a, m = model_versions_t, model_aliases_t, models_t
        q = (sa.select(v, m.c.tags).join(a, sa.and_(a.c.model == v.c.model, a.c.version == v.c.version))
             .join(m, m.c.name == v.c.model).where(a.c.alias == alias).order_by(v.c.model))
        wanted = None if names is None else list(dict.fromkeys(names))
        if wanted is not None:
            q = q.where(v.c.model.in_(wanted))
        elif prefix:
            q = q.where(v.c.model.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            if wanted is not None and len(rows) < len(wanted):
                found = {r.model for r in rows}
                missing = next(n for n in wanted if n not in found)
                self._require(conn, missing)
                raise UnknownAlias(missing, alias, sorted(self._aliases(conn, missing)))
        if tag:
            key, _, value = tag.partition("=")
            rows = [r for r in rows if isinstance(r.tags, dict) and key in r.tags
                    and (not value or str(r.tags[key]) == value)]
        return [_version(r) for r in rows]

    def versions_of(self, pairs: Iterable[tuple[str, int]]) -> list[ModelVersion]:
        """The versions named by ``(model, version)`` pairs, in that order (one query).
        Raises :class:`UnknownVersion` for a pair that does not exist."""
        want = list(pairs)
        v = model_versions_t
        found: dict[tuple[str, int], ModelVersion] = {}
        names = sorted({m for m, _ in want})
        with self.engine.connect() as conn:
            for i in range(0, len(names), 500):
                for r in conn.execute(sa.select(v).where(v.c.model.in_(names[i:i + 500]))):
                    found[(r.model, r.version)] = _version(r)
        missing = [p for p in want if p not in found]
        if missing:
            raise UnknownVersion(missing[0][0], missing[0][1], None)
        return [found[p] for p in want]

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every alias move of ``name`` (only ``alias``'s, if given), oldest first. Raises :class:`UnknownModel`."""
        h = model_alias_history_t
        q = sa.select(h).where(h.c.model == name).order_by(h.c.id)
        if alias is not None:
            q = q.where(h.c.alias == alias)
        with self.engine.connect() as conn:
            self._require(conn, name)
            return [_move(r) for r in conn.execute(q)]

    # ------------------------------------------------------------------ helpers
    def _transact(self, fn: Callable[[sa.Connection], T], *, duplicates: bool = False) -> T:
        """``fn`` in a transaction, retried when it loses a race: a duplicate key (``duplicates``), or
        SQLite's write lock (a deferred transaction that read before another wrote)."""
        for attempt in range(self.retries):
            try:
                with self.engine.begin() as conn:
                    return fn(conn)
            except IntegrityError:
                if not duplicates or attempt == self.retries - 1:
                    raise
            except OperationalError as exc:
                if self._dialect != "sqlite" or "locked" not in str(exc.orig) or attempt == self.retries - 1:
                    raise
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
        raise RegistryError("unreachable")  # pragma: no cover (the last attempt re-raises)

    def _insert_ignore(self, table: sa.Table, values: dict[str, Any], key: str) -> sa.Executable:
        dialect = sa.dialects.postgresql if self._dialect == "postgresql" else sa.dialects.sqlite
        return dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=[key])

    def _lock(self, conn: sa.Connection, name: str) -> None:
        """Serialise writers of ``name`` on its row (PostgreSQL; SQLite locks the database on write)."""
        if conn.execute(sa.select(models_t.c.name).where(models_t.c.name == name).with_for_update()).first() is None:
            raise UnknownModel(name)

    def _require(self, conn: sa.Connection, name: str) -> None:
        if conn.execute(sa.select(models_t.c.name).where(models_t.c.name == name)).first() is None:
            raise UnknownModel(name)

    @staticmethod
    def _latest(conn: sa.Connection, name: str) -> int:
        v = model_versions_t
        return conn.execute(sa.select(sa.func.max(v.c.version)).where(v.c.model == name)).scalar() or 0

    @staticmethod
    def _alias_row(conn: sa.Connection, name: str, alias: str) -> Any:
        a = model_aliases_t
        return conn.execute(sa.select(a).where(a.c.model == name, a.c.alias == alias)).first()

    @staticmethod
    def _aliases(conn: sa.Connection, name: str) -> list[str]:
        a = model_aliases_t
        return list(conn.execute(sa.select(a.c.alias).where(a.c.model == name)).scalars())

    def _move(self, conn: sa.Connection, name: str, alias: str, from_version: int | None, to_version: int,
              reason: str | None, actor: str) -> AliasMove:
        now = datetime.now(UTC)
        values = dict(version=to_version, moved_at=now, reason=reason, actor=actor)
        if from_version is None:
            conn.execute(model_aliases_t.insert().values(model=name, alias=alias, **values))
        else:
            a = model_aliases_t
            conn.execute(a.update().where(a.c.model == name, a.c.alias == alias).values(**values))
        move = AliasMove(name, alias, from_version, to_version, now, reason, actor)
        conn.execute(model_alias_history_t.insert().values(**move.__dict__))
        return move
