"""The daemon's runs keep a view's materialisation intervals coalesced in Feast's registry
(featurestore.repo): hourly runs no longer grow it by one interval each, and what Feast reads from the
intervals is unchanged. Drop-in materialize keeps Feast's own behaviour (tests/integration/test_materialize.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.conftest import make_project

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)


def test_touching_intervals_become_one_and_a_gap_stays_a_gap(tmp_path):
    from feast import FeatureStore

    from skyfeast.featurestore.repo import FeastRepo

    project = tmp_path / "p"
    make_project(project, users=50, per_day=200)
    repo = FeastRepo(project / "feature_repo")
    registry = project / "data" / "registry.db"
    sizes = []
    for i in range(48):  # two days of hourly windows, one late (out of order)
        k = 47 - i if i == 0 else i - 1
        repo.record_materialization("user_features", T0 + k * H, T0 + (k + 1) * H, coalesce=True)
        sizes.append(registry.stat().st_size)
    repo.record_materialization("user_features", T0 + 50 * H, T0 + 51 * H, coalesce=True)  # after a 2-hour gap
    repo.record_materialization("user_features", T0 + 10 * H, T0 + 12 * H, coalesce=True)  # a re-run inside
    fv = FeatureStore(repo_path=str(project / "feature_repo")).get_feature_view("user_features")
    spans = sorted((s.replace(tzinfo=timezone.utc) if s.tzinfo is None else s,
                    e.replace(tzinfo=timezone.utc) if e.tzinfo is None else e) for s, e in fv.materialization_intervals)
    assert spans == [(T0, T0 + 48 * H), (T0 + 50 * H, T0 + 51 * H)]
    # 48 intervals kept apart would add about 1 kB; coalesced, the size only moves with timestamps' lengths
    assert max(sizes) - min(sizes) < 100, f"the registry grew with the recorded windows: {sizes}"
    assert repo.freshness()[[f["feature_view"] for f in repo.freshness()].index("user_features")][
        "materialized_until"] == (T0 + 51 * H).isoformat()
