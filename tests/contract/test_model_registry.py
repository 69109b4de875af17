"""Contract suite for the model registry, over every ledger backend (SQLite and PostgreSQL).

The registry's tables come from the ledger's migration (v7), as in production.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from skyfeast.adapters.storage.local import LocalStore
from skyfeast.featurestore.models import (
    CorruptArtifact,
    InvalidName,
    MissingArtifact,
    ModelRegistry,
    NothingToRollBack,
    RegistryError,
    UnknownAlias,
    UnknownModel,
    UnknownVersion,
    checksum,
    read_verified,
    verify,
)
from skyfeast.featurestore.models.tables import model_aliases_t, model_versions_t, models_t
from skyfeast.scheduler.ledger import Ledger

UTC = timezone.utc
SHA = "ab" * 32


@pytest.fixture
def ledger(ledger_url):
    led = Ledger(ledger_url)
    yield led
    led.close()


@pytest.fixture
def registry(ledger):
    return ModelRegistry(ledger.engine)


def reg(registry: ModelRegistry, name: str = "churn", **kw):
    kw = {"sha256": SHA, "size": 10, "created_by": "cli:test", **kw}
    return registry.register(name, artifact_key=lambda v: f"models/{name}/v{v}/model.joblib", **kw)


# --------------------------------------------------------------------------- versions
def test_versions_are_numbered_per_model_and_keep_what_was_given(registry):
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    v1 = reg(registry, features=["age", "spend"], outputs=["score"], metrics={"auc": 0.81},
             train_start=start, train_end=end, data_fingerprint="fp1", description="churn model", tags={"team": "x"})
    assert (v1.model, v1.version, v1.artifact_key) == ("churn", 1, "models/churn/v1/model.joblib")
    assert [reg(registry).version, reg(registry, "fraud").version, reg(registry, parent_version=2).version] == [2, 1, 3]
    got = registry.get("churn", 1)
    assert got == v1 and got.features == ["age", "spend"] and got.metrics == {"auc": 0.81}
    assert (got.train_start, got.train_end, got.created_by, got.flavour) == (start, end, "cli:test", "joblib")
    assert registry.get("churn").version == 3 and registry.get("churn", 3).parent_version == 2
    assert [v.version for v in registry.versions("churn")] == [1, 2, 3]
    (churn, fraud) = registry.list_models()
    assert (churn.name, churn.latest_version, churn.versions, churn.description, churn.tags) == \
        ("churn", 3, 3, "churn model", {"team": "x"})
    assert (fraud.name, fraud.latest_version, fraud.aliases) == ("fraud", 1, {})


def test_concurrent_registers_get_distinct_numbers(ledger, ledger_url):
    """Two engines (as two processes of an HA pair), two threads each: no number is handed out twice.
    One engine is a plain one (SQLite: deferred transactions that collide and are retried)."""
    plain = sa.create_engine(ledger_url)
    registries = [ModelRegistry(ledger.engine), ModelRegistry(plain)]
    got: list[int] = []
    errors: list[BaseException] = []

    def work(r: ModelRegistry) -> None:
        try:
            for _ in range(8):
                got.append(reg(r, "shared").version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in registries * 2]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        plain.dispose()
    assert not errors, errors
    assert sorted(got) == list(range(1, 33))
    assert [v.version for v in registries[0].versions("shared")] == list(range(1, 33))


def test_a_failed_publish_records_nothing(registry):
    reg(registry)

    def publish(version):
        assert version.version == 2 and version.artifact_key == "models/churn/v2/model.joblib"
        raise OSError("bucket unreachable")

    with pytest.raises(OSError, match="bucket unreachable"):
        reg(registry, publish=publish)
    assert [v.version for v in registry.versions("churn")] == [1]
    assert reg(registry).version == 2


def test_bad_input_is_refused_before_anything_is_written(registry):
    with pytest.raises(InvalidName, match="invalid model name '../x'"):
        reg(registry, "../x")
    with pytest.raises(ValueError, match="sha256"):
        reg(registry, sha256="xyz")
    reg(registry)
    with pytest.raises(UnknownVersion, match="model 'churn' has no version 4; it has versions 1 to 1"):
        reg(registry, parent_version=4)
    assert registry.get("churn").version == 1


# --------------------------------------------------------------------------- aliases
def test_promote_rollback_and_history(registry):
    for _ in range(3):
        reg(registry)
    first = registry.promote("churn", 1, reason="first", actor="cli:ann")
    assert (first.from_version, first.to_version, first.alias) == (None, 1, "champion")
    registry.promote("churn", 3, reason="better auc", actor="run:7")
    registry.promote("churn", 2, alias="shadow", actor="run:8")
    assert registry.get("churn", alias="champion").version == 3
    assert registry.list_models()[0].aliases == {"champion": 3, "shadow": 2}
    same = registry.promote("churn", 3, actor="cli:ann")  # already there: nothing recorded
    assert same.from_version == same.to_version == 3

    back = registry.rollback("churn", reason="auc dropped", actor="cli:bob")
    assert (back.from_version, back.to_version, back.reason, back.actor) == (3, 1, "auc dropped", "cli:bob")
    assert registry.get("churn", alias="champion").version == 1
    moves = registry.history("churn", alias="champion")
    assert [(m.from_version, m.to_version, m.actor) for m in moves] == [
        (None, 1, "cli:ann"), (1, 3, "run:7"), (3, 1, "cli:bob")]
    assert [m.alias for m in registry.history("churn")] == ["champion", "champion", "shadow", "champion"]
    assert registry.rollback("churn", actor="cli:bob").to_version == 3  # a rollback of a rollback re-applies
    assert registry.aliases("churn")["champion"].to_version == 3

    with pytest.raises(NothingToRollBack, match="alias 'shadow' of model 'churn'.*version 2 since it was first set"):
        registry.rollback("churn", alias="shadow", actor="x")
    with pytest.raises(UnknownAlias, match="no alias 'staging'; aliases: champion, shadow"):
        registry.rollback("churn", alias="staging", actor="x")


def test_unknown_models_versions_and_aliases_are_clear_errors(registry):
    reg(registry)
    cases = [
        (lambda: registry.get("nope"), UnknownModel, "unknown model 'nope'"),
        (lambda: registry.get("churn", 5), UnknownVersion, "model 'churn' has no version 5; it has versions 1 to 1"),
        (lambda: registry.get("churn", alias="champion"), UnknownAlias, "model 'churn' has no alias 'champion'"),
        (lambda: registry.promote("churn", 2, actor="x"), UnknownVersion, "no version 2"),
        (lambda: registry.promote("nope", 1, actor="x"), UnknownModel, "unknown model 'nope'"),
        (lambda: registry.rollback("nope", actor="x"), UnknownModel, "unknown model 'nope'"),
        (lambda: registry.versions("nope"), UnknownModel, "unknown model"),
        (lambda: registry.history("nope"), UnknownModel, "unknown model"),
        (lambda: registry.promote("churn", 1, alias="bad alias", actor="x"), InvalidName, "invalid alias name"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind, match=text) as info:
            call()
        assert isinstance(info.value, RegistryError)
    assert registry.history("churn") == []


# --------------------------------------------------------------------------- artifacts
def test_checksum_verify_and_a_corrupt_or_missing_artifact(registry, tmp_path):
    data = b"model bytes"
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    sha, size = checksum(path)
    assert (sha, size) == checksum(data) and size == len(data)
    store = LocalStore(tmp_path / "store")
    v = registry.register("churn", artifact_key=lambda n: f"models/churn/v{n}/model.joblib", sha256=sha, size=size,
                          created_by="t", publish=lambda version: store.write_bytes(version.artifact_key, data))
    assert read_verified(store, v) == data == verify(v, data)

    store.write_bytes(v.artifact_key, b"model bytez")
    with pytest.raises(CorruptArtifact) as info:
        read_verified(store, v)
    msg = str(info.value)
    assert "model 'churn' version 1" in msg and f"expected sha256 {sha}" in msg and checksum(b"model bytez")[0] in msg
    store.delete([v.artifact_key])
    with pytest.raises(MissingArtifact, match=f"model 'churn' version 1: artifact .* not found .*{sha}"):
        read_verified(store, v)


# --------------------------------------------------------------------------- scale
def test_list_models_of_2000_models_and_20000_versions_takes_under_a_second(registry, ledger):
    """Registry size target: ``list_models`` over 2,000 models x 10 versions in < 1 s."""
    now = datetime.now(UTC)
    names = [f"model_{i:04d}" for i in range(2000)]
    with ledger.engine.begin() as conn:
        conn.execute(models_t.insert(), [{"name": n, "created_at": now} for n in names])
        conn.execute(model_versions_t.insert(), [
            {"model": n, "version": v, "artifact_key": f"models/{n}/v{v}/m.joblib", "sha256": SHA, "size": 1,
             "flavour": "joblib", "features": ["a", "b"], "outputs": ["y"], "created_at": now, "created_by": "t"}
            for n in names for v in range(1, 11)])
        conn.execute(model_aliases_t.insert(), [
            {"model": n, "alias": "champion", "version": 9, "moved_at": now, "actor": "t"} for n in names])
    registry.list_models()  # warm the connection pool, as a running process has
    t0 = time.perf_counter()
    models = registry.list_models()
    took = time.perf_counter() - t0
    print(f"list_models: {len(models)} models in {took * 1000:.0f} ms ({ledger.engine.dialect.name})")
    assert len(models) == 2000 and models[-1].latest_version == 10 and models[-1].aliases == {"champion": 9}
    assert took < 1.0
