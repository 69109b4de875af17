"""An online store that accepts connections and never answers, as users meet it: ``run`` says what it waits
for after two seconds, naming the store, and gives up on it within the writers' first-contact limit (10 s), not
redis-py's minute per attempt; the failed window publishes nothing offline. (``materialize``: in
test_materialize.py.)

Before: ``run`` printed ``1/1 partitions`` and then nothing for about 60 s per provider, before
``TimeoutError: Timeout reading from 127.0.0.1:PORT``."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.integration.conftest import AT, make_project, skyfeast
from tests.silent import silent_server

pytestmark = pytest.mark.integration

FIRST_CONTACT = 10.0  # featurestore.writers.base.FIRST_CONTACT_S
STARTUP = 25.0  # the process, Feast's repo and a local cluster on a loaded machine: generous


def _online_store(cfg, store: dict) -> None:
    path = cfg.parent / "feature_repo" / "feature_store.yaml"
    repo = yaml.safe_load(path.read_text())
    repo["online_store"] = store
    path.write_text(yaml.safe_dump(repo, sort_keys=False))


def test_a_run_against_a_silent_redis_says_so_and_gives_up_in_seconds(tmp_path):
    def edit(cfg):
        cfg["providers"].pop("gcp")  # one attempt: the second provider's would be the same
        job = cfg["jobs"][0]
        job.update(providers=["aws"], retries=0, partitions=2)  # the chunked path: publish after the chunks
        cfg["jobs"] = [job]

    cfg = make_project(tmp_path / "p", users=100, per_day=500, edit=edit)
    with silent_server() as port:
        _online_store(cfg, {"type": "redis", "connection_string": f"127.0.0.1:{port},password=s3cret"})
        t0 = time.monotonic()
        proc = skyfeast("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=cfg.parent, timeout=180)
        seconds = time.monotonic() - t0
        err = proc.stderr
        assert proc.returncode == 1, (proc.returncode, err[-3000:])
        assert seconds < FIRST_CONTACT + STARTUP, f"{seconds:.1f} s"
        store = f"redis at 127.0.0.1:{port}"
        # after the chunks, the wait on the store's first answer is announced, naming it
        assert f"waiting for 2 chunk(s) of user_features 2026-03-02T11:00:00Z/2026-03-02T12:00:00Z to be written " \
               f"to the online store ({store})" in err, err[-3000:]
        assert f"the online store ({store}) did not answer within 10 s" in err + proc.stdout
        assert "s3cret" not in err + proc.stdout and "Traceback" not in err

    runs = json.loads(skyfeast("runs", "-c", str(cfg), "--json", cwd=cfg.parent, check=True).stdout)["runs"]
    (row,) = runs
    assert row["status"] == "failed" and row["failure_class"] == "infrastructure", row
    assert not list((cfg.parent / "data" / "aws").glob("offline/user_features/**/*.parquet")), \
        "a window whose online write failed published an offline part"
