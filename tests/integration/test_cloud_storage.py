"""The quickstart jobs with provider storage on S3 (moto server) and GCS (gcp-storage-emulator).

Sources, model artifacts and offline outputs go over the real S3 and GCS
protocols (boto3 / google-cloud-storage for control, s3fs / gcsfs from the Dask
workers); online values are checked against an independent pandas computation.
"""

from __future__ import annotations

import math
import socket
import warnings

import numpy as np
import pandas as pd
import pytest

from skyfeast.adapters.storage.gcs import GCSStore
from skyfeast.adapters.storage.s3 import S3Store
from tests.emulators import S3_KEYS, make_gcs_bucket, make_s3_bucket
from tests.integration.conftest import AT, make_project, skyfeast_json
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.integration
END = pd.Timestamp("2026-03-02T12:00:00Z")


def _upload(store, root) -> None:
    for f in sorted(root.rglob("*")):
        if f.is_file():
            store.write_bytes(str(f.relative_to(root)), f.read_bytes())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cloud_project(tmp_path, moto_server, gcs_emulator):
    return lambda **kw: _cloud_project(tmp_path, moto_server, gcs_emulator, **kw)


def _cloud_project(tmp_path, moto_server, gcs_emulator, aws_cluster_down: bool = False):
    s3_bucket = make_s3_bucket(moto_server.endpoint)
    gcs_bucket = make_gcs_bucket(gcs_emulator.endpoint)

    def edit(cfg):
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1
        cfg["providers"]["aws"]["storage"] = {"type": "s3", "bucket": s3_bucket, "prefix": "skyfeast",
                                              "endpoint_url": moto_server.endpoint, "region": S3_KEYS["region"],
                                              "access_key_id": "${TEST_S3_KEY}", "secret_access_key": "${TEST_S3_SECRET}"}
        cfg["providers"]["gcp"]["storage"] = {"type": "gcs", "bucket": gcs_bucket, "prefix": "skyfeast",
                                              "project": "skyfeast-test", "endpoint": gcs_emulator.endpoint}
        if not aws_cluster_down:  # this case is about S3 I/O: no provider to fail over to
            for job in cfg["jobs"]:
                job["providers"] = ["aws"]
        if aws_cluster_down:
            cfg["providers"]["aws"]["cluster"] = {"type": "address", "address": f"tcp://127.0.0.1:{_closed_port()}",
                                                  "connect_timeout": "2s"}

    cfg = make_project(tmp_path / "p", users=300, per_day=3000, edit=edit)
    s3 = S3Store(s3_bucket, "skyfeast", region=S3_KEYS["region"], endpoint_url=moto_server.endpoint,
                 access_key_id=S3_KEYS["access_key_id"], secret_access_key=S3_KEYS["secret_access_key"])
    gcs = GCSStore(gcs_bucket, "skyfeast", project="skyfeast-test", endpoint=gcs_emulator.endpoint)
    _upload(s3, cfg.parent / "data" / "aws")
    _upload(gcs, cfg.parent / "data" / "gcp")
    env = {"TEST_S3_KEY": S3_KEYS["access_key_id"], "TEST_S3_SECRET": S3_KEYS["secret_access_key"]}
    return cfg, s3, gcs, env


def _check_online(project, users_frame):
    from feast import FeatureStore

    warnings.simplefilter("ignore")
    users = [int(u) for u in np.random.default_rng(5).choice(users_frame.index.to_numpy(), 60, replace=False)]
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    got = store.get_online_features(features=["user_features:events_24h", "user_features:amount_sum_7d",
                                              "user_risk:risk_score"],
                                    entity_rows=[{"user_id": u} for u in users]).to_dict()
    for i, u in enumerate(users):
        assert got["events_24h"][i] == users_frame.at[u, "events_24h"]
        assert math.isclose(got["amount_sum_7d"][i], users_frame.at[u, "amount_sum_7d"], rel_tol=1e-9)
        assert got["risk_score"][i] is not None


def test_jobs_run_on_s3_storage(cloud_project):
    cfg, s3, _gcs, env = cloud_project()
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=cfg.parent, env=env)
    assert code == 0, report
    assert [(r["job"], r["status"], r["provider"]) for r in report["runs"]] == [
        ("user_features", "succeeded", "aws"), ("risk_score", "succeeded", "aws")]
    offline = s3.glob("offline/user_features/20260302T110000-20260302T120000-part*.parquet")
    assert offline, s3.list("offline")
    assert s3.glob("offline/user_risk/*.parquet")
    expected = expected_features(load_events(cfg.parent / "data" / "aws"), END)
    _check_online(cfg.parent, expected)


def test_fail_over_to_gcs_provider(cloud_project):
    cfg, s3, gcs, env = cloud_project(aws_cluster_down=True)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=cfg.parent, env=env)
    assert code == 0, report
    assert [(r["job"], r["status"], r["provider"]) for r in report["runs"]] == [
        ("user_features", "succeeded", "gcp"), ("risk_score", "succeeded", "gcp")]
    assert gcs.glob("offline/user_features/*.parquet") and not s3.glob("offline/user_features/*.parquet")
    expected = expected_features(load_events(cfg.parent / "data" / "gcp"), END)
    _check_online(cfg.parent, expected)
