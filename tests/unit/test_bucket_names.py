"""Bucket names the cloud would refuse are configuration errors found by ``validate`` (exit 2, file:line)."""

from __future__ import annotations

import pytest

from skyfeast.scheduler.cli import main

CONFIG = """project: p
feast: {{repo: repo}}
providers:
  cloud:
    priority: 1
    cluster: {{type: local}}
    storage: {{type: {kind}, bucket: "{bucket}"}}
"""


@pytest.mark.parametrize("kind,bucket,ok", [
    ("s3", "features-2026.eu", True),
    ("s3", "ab", False),
    ("s3", "Features", False),
    ("s3", "under_score", False),
    ("s3", "-dash-first", False),
    ("s3", "two..dots", False),
    ("s3", "x" * 64, False),
    ("gcs", "under_score", True),
    ("gcs", "x" * 64, False),
    ("gcs", ".".join(["x" * 60] * 3), True),
    ("gcs", "bad/slash", False),
])
def test_bucket_names(tmp_path, capsys, kind, bucket, ok):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "feature_store.yaml").write_text("project: p\n")
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG.format(kind=kind, bucket=bucket))
    code = main(["validate", "-c", str(path)])
    err = capsys.readouterr().err
    if ok:
        assert "storage.bucket" not in err
    else:
        assert code == 2
        assert f"{path}:7: providers.cloud.storage.bucket:" in err and "is not a valid name" in err
        assert "Traceback" not in err
