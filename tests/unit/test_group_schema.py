"""skyfeast.featurestore.models.groups: selectors, the version-set id, and the Feast schema helper."""

from __future__ import annotations

import hashlib

import pytest

from skyfeast.featurestore.models import ModelRegistry, UnknownModel
from skyfeast.featurestore.models.groups import GroupError, feast_schema, problems, select, set_id
from skyfeast.scheduler.ledger import Ledger


@pytest.fixture
def state(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(url)
    reg = ModelRegistry(ledger.engine)
    sha = "0" * 64
    for name, tags in (("risk_a", {"team": "risk"}), ("risk_b", {"team": "risk"}), ("churn", {"team": "crm"})):
        reg.register(name, artifact_key=f"models/{name}/v1/m.json", sha256=sha, size=1, created_by="t",
                     flavour="linear", features=["x"], tags=tags)
        reg.promote(name, 1, actor="t")
    reg.register("risk_c", artifact_key="models/risk_c/v1/m.json", sha256=sha, size=1, created_by="t",
                 flavour="linear", features=["x"], outputs=["risk_c_score"])  # no champion: left out of selectors
    yield url, reg
    ledger.close()


def test_selectors_pick_models_at_their_alias(state):
    _, reg = state
    assert [v.model for v in select(reg, prefix="risk_")] == ["risk_a", "risk_b"]
    assert [v.model for v in select(reg, tag="team=crm")] == ["churn"]
    assert [v.model for v in select(reg, prefix="risk_", tag="team")] == ["risk_a", "risk_b"]
    assert [v.model for v in select(reg, models=["churn", "risk_a"])] == ["churn", "risk_a"]
    with pytest.raises(GroupError, match="prefix 'zz' at alias 'champion'.*matches no model"):
        select(reg, prefix="zz")
    with pytest.raises(UnknownModel):
        select(reg, models=["nosuch"])


def test_feast_schema_builds_one_float_field_per_model_and_the_versions_field(state):
    from feast.types import Float64, String

    url, _ = state
    fields = feast_schema(url, prefix="risk_")
    assert [(f.name, f.dtype) for f in fields] == [("risk_a", Float64), ("risk_b", Float64), ("model_set", String)]


def test_set_id_is_order_free_and_problems_name_the_field_and_the_input(state):
    _, reg = state
    assert set_id([("b", 2), ("a", 1)]) == set_id([("a", 1), ("b", 2)]) == \
        "ms-" + hashlib.sha256(b"a@1\nb@2").hexdigest()[:16]
    versions = select(reg, prefix="risk_")
    found = problems(versions, view="v", view_fields={"risk_a"}, versions_field="model_set", input_columns={"y"})
    assert "feature view 'v' has no field 'model_set' (String) for the model versions" in found
    assert any("'risk_b'" in p and "writes field 'risk_b'" in p for p in found)
    assert any("needs input feature(s) ['x']" in p for p in found)
