"""Provider A's bucket goes dark (its S3 server process is stopped with SIGSTOP): new runs move
to B, the reconciler copies what B wrote to A's primary location once A answers again, Feast
historical retrieval then sees every window, and new runs fail back to A.

Real processes throughout: a private moto S3 server (A's storage), local storage for B, a
``skyfeast daemon`` with two local Dask clusters, and the Feast SDK reading the offline store
over S3.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from skyfeast.adapters.storage.s3 import S3Store
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.run.offline import read_manifest
from skyfeast.scheduler.timing.windows import Window
from tests.chaos.conftest import DaemonProc, wait_for
from tests.emulators import S3_KEYS, make_s3_bucket, running, start_moto
from tests.integration.conftest import BIN, make_project
from tests.integration.reference import expected_features, load_events

pytestmark = pytest.mark.chaos

DAY = pd.Timedelta(days=1)
W1_END = pd.Timestamp("2026-03-01T00:00:00Z")
W2_END = pd.Timestamp("2026-03-02T00:00:00Z")
W3_END = pd.Timestamp("2026-03-03T00:00:00Z")
FEATURES = ["events_24h", "amount_sum_7d", "amount_mean_1h", "purchases_24h", "repayments_7d"]


def _upload(store: S3Store, root: Path) -> None:
    for f in sorted(root.rglob("*")):
        if f.is_file():
            store.write_bytes(str(f.relative_to(root)), f.read_bytes())


def _cli(*args: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "skyfeast"), *args], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def _point_feast_at_s3(project: Path, bucket: str, endpoint: str, env: dict) -> None:
    """The Feast batch source of user_features reads A's primary location over S3."""
    defs = project / "feature_repo" / "definitions.py"
    text = defs.read_text()
    text = text.replace('path="../data/aws/offline/user_features",',
                        f'path="s3://{bucket}/skyfeast/offline/user_features",\n'
                        f'    s3_endpoint_override="{endpoint}",')
    assert "s3://" in text, "the quickstart definitions changed; update this test"
    defs.write_text(text)
    subprocess.run([str(BIN / "feast"), "apply"], cwd=project / "feature_repo", check=True, capture_output=True,
                   timeout=180, env={**os.environ, **env})


def _historical(project: Path, users: list[int], at: pd.Timestamp) -> pd.DataFrame:
    from feast import FeatureStore

    warnings.simplefilter("ignore")
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    entity_df = pd.DataFrame({"user_id": users, "event_timestamp": [at] * len(users)})
    got = store.get_historical_features(entity_df=entity_df,
                                        features=[f"user_features:{f}" for f in FEATURES]).to_df()
    return got.set_index("user_id").sort_index()


def _assert_history_matches(project: Path, events: pd.DataFrame, end: pd.Timestamp) -> None:
    want = expected_features(events, end)
    users = sorted(int(u) for u in want.index[:80])
    got = _historical(project, users, end)
    for f in FEATURES:
        exp = want.loc[users, f].astype(float)
        act = got.loc[users, f].astype(float)
        assert act.isna().equals(exp.isna()), f"{f} at {end}: nulls differ"
        assert ((act - exp).abs() <= 1e-6 * (1 + exp.abs())).where(exp.notna(), True).all(), \
            f"{f} at {end}: historical retrieval differs from the source data"


@pytest.mark.timeout(900)
def test_storage_outage_moves_runs_then_reconcile_restores_primary(tmp_path, monkeypatch):
    with running(start_moto) as moto:
        bucket = make_s3_bucket(moto.endpoint)
        env = {"TEST_S3_KEY": S3_KEYS["access_key_id"], "TEST_S3_SECRET": S3_KEYS["secret_access_key"],
               "AWS_ACCESS_KEY_ID": S3_KEYS["access_key_id"], "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret_access_key"],
               "AWS_DEFAULT_REGION": S3_KEYS["region"]}

        def edit(cfg):
            cfg["daemon"] = {"run_lease": "10s", "leader_lease": "6s", "poll": "0.5s", "grace": "10s"}
            cfg["health"] = {"blocklist_ttl": "3s",
                             "failback_after": "2s"}
            cfg["offline"] = {"reconcile_every": "1s"}
            for p in cfg["providers"].values():
                p["cluster"]["workers"] = 1
            cfg["providers"]["aws"]["storage"] = {
                "type": "s3", "bucket": bucket, "prefix": "skyfeast", "endpoint_url": moto.endpoint,
                "region": S3_KEYS["region"], "access_key_id": "${TEST_S3_KEY}",
                "secret_access_key": "${TEST_S3_SECRET}"}
            job = cfg["jobs"][0]
            # daily windows that never fire during the test: only the windows triggered below run
            job.update(schedule={"type": "interval", "every": "1d"}, catchup="none", partitions=4, retries=0)
            cfg["jobs"] = [job]

        cfg = make_project(tmp_path / "p", end="2026-03-03T00:00:00Z", users=300, per_day=2000, edit=edit)
        project = cfg.parent
        s3 = S3Store(bucket, "skyfeast", region=S3_KEYS["region"], endpoint_url=moto.endpoint,
                     access_key_id=S3_KEYS["access_key_id"], secret_access_key=S3_KEYS["secret_access_key"])
        _upload(s3, project / "data" / "aws")  # A's replica of the source; B's stays in data/gcp
        _point_feast_at_s3(project, bucket, moto.endpoint, env)
        events = load_events(project / "data" / "aws")
        ledger = Ledger(f"sqlite:///{project / '.skyfeast' / 'state.db'}")

        def trigger(end: pd.Timestamp):
            fmt = "%Y-%m-%dT%H:%M:%SZ"
            r = _cli("trigger", "-c", str(cfg), "user_features", "--window",
                     f"{(end - DAY).strftime(fmt)}/{end.strftime(fmt)}", cwd=project, env=env)
            assert r.returncode == 0, r.stderr

        def finished(end: pd.Timestamp):
            def check():
                r = ledger.find_run("user_features", (end - DAY).to_pydatetime(), end.to_pydatetime())
                return r if r is not None and r.status in ("succeeded", "failed") else None
            return wait_for(check, 180, f"the run of the window ending {end}")

        log_path = tmp_path / "daemon.log"
        for k, v in env.items():  # the daemon inherits them (the S3 keys are ${ENV} in the config)
            monkeypatch.setenv(k, v)
        daemon = DaemonProc(cfg, log_path)
        try:
            trigger(W1_END)
            r1 = finished(W1_END)
            assert (r1.status, r1.provider) == ("succeeded", "aws"), r1.error
            assert ledger.pending_copies() == []  # A wrote its own window: nothing to reconcile

            moto.proc.send_signal(signal.SIGSTOP)  # A's bucket stops answering
            stopped_at = time.monotonic()
            wait_for(lambda: re.search(r"provider aws: \w+ -> down", log_path.read_text()), 60,
                     "the daemon to mark aws down")
            detection = time.monotonic() - stopped_at
            trigger(W2_END)
            r2 = finished(W2_END)
            assert (r2.status, r2.provider) == ("succeeded", "gcp"), r2.error
            assert [a["provider"] for a in ledger.attempts(r2.id)] == ["gcp"]
            (pending,) = ledger.pending_copies()
            assert pending["run_id"] == r2.id
            parts = [c["file"] for c in ledger.chunks(r2.id).values() if c["file"]]
            assert parts and all(Path(u.removeprefix("file://")).is_relative_to(project / "data" / "gcp")
                                 for u in parts), parts
            gcp_manifest = json.loads((project / "data" / "gcp" / "manifests" / "user_features" /
                                       f"{Window(r2.window_start, r2.window_end).tag}.json").read_text())
            assert sorted(gcp_manifest["files"]) == sorted(parts) and gcp_manifest["provider"] == "gcp"

            # while A is dark, reconcile gives up quickly and keeps the copy pending
            t0 = time.monotonic()
            r = _cli("reconcile", "-c", str(cfg), "--json", cwd=project, env=env)
            assert r.returncode == 1, r.stderr
            rep = json.loads(r.stdout)
            assert rep["pending_left"] == 1 and "unreachable" in rep["stopped"]
            assert time.monotonic() - t0 < 60

            moto.proc.send_signal(signal.SIGCONT)
            # the daemon's own periodic reconcile brings A's primary location up to date
            wait_for(lambda: not ledger.pending_copies(), 120, "the daemon to reconcile the failed-over window")
            r = _cli("reconcile", "-c", str(cfg), "--json", cwd=project, env=env)
            assert r.returncode == 0, r.stdout + r.stderr
            assert json.loads(r.stdout)["pending_left"] == 0

            w2 = Window(r2.window_start, r2.window_end)
            on_primary = s3.list(f"offline/user_features/{w2.tag}-part")
            assert sorted(on_primary) == sorted(u.split("/data/gcp/", 1)[1] for u in parts)
            manifest = read_manifest(s3, "user_features", w2)
            assert manifest["run_id"] == r2.id and all(f.startswith("s3://") for f in manifest["files"])

            # Feast's historical retrieval over A's bucket sees both windows, as the source data says
            _assert_history_matches(project, events, W1_END)
            _assert_history_matches(project, events, W2_END)

            # failback: once A has been healthy for failback_after, new runs return to it
            wait_for(lambda: re.search(r"provider aws: down -> \w+", log_path.read_text()), 60,
                     "the daemon to see aws recover")
            time.sleep(3)  # failback_after (2 s) plus a probe interval
            trigger(W3_END)
            r3 = finished(W3_END)
            assert (r3.status, r3.provider) == ("succeeded", "aws"), r3.error
        finally:
            if moto.proc.poll() is None:
                moto.proc.send_signal(signal.SIGCONT)
            rc = daemon.terminate()
            ledger.close()
        assert rc == 0, log_path.read_text()[-3000:]
        assert detection < 30, f"aws was marked down {detection:.1f}s after its bucket stopped answering"
