"""The reconciler on real storage: parts a failed-over run left on B's local storage are copied
to A's primary location on S3 (moto server), stale parts there are removed, the primary's
manifest lists exactly the window's parts, and the ledger marks the copy done. When the
primary does not answer, the copy stays pending and the pass stops quickly."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from skyfeast.adapters.storage.local import LocalStore
from skyfeast.adapters.storage.s3 import S3Store
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.ledger import Ledger
from skyfeast.scheduler.run.offline import manifest_key, owner_of, read_manifest
from skyfeast.scheduler.run.reconcile import reconcile
from skyfeast.scheduler.timing.windows import Window
from tests.emulators import S3_KEYS, make_s3_bucket

pytestmark = pytest.mark.integration
UTC = timezone.utc
W = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, 1, tzinfo=UTC))

CONFIG = """
project: t
feast: repo
providers:
  aws:
    priority: 1
    cluster: {type: local, workers: 1}
    storage: {type: local, root: unused}
  gcp:
    priority: 2
    cluster: {type: local, workers: 1}
    storage: {type: local, root: data/gcp}
jobs:
  - name: feats
    kind: feature
    schedule: {type: cron, expr: "0 * * * *"}
    source: {type: parquet, path: "events/*.parquet"}
    transform: transforms:feat
    feature_view: fv
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3(endpoint: str, bucket: str) -> S3Store:
    return S3Store(bucket, "sky", region=S3_KEYS["region"], endpoint_url=endpoint, max_attempts=1,
                   connect_timeout=1, read_timeout=2, access_key_id=S3_KEYS["access_key_id"],
                   secret_access_key=S3_KEYS["secret_access_key"])


@pytest.fixture
def setup(tmp_path, moto_server):
    (tmp_path / "skyfeast.yaml").write_text(CONFIG)
    cfg = load_config(tmp_path / "skyfeast.yaml", check_imports=False, check_feast=False)
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    primary = _s3(moto_server.endpoint, make_s3_bucket(moto_server.endpoint))
    other = LocalStore(tmp_path / "data" / "gcp")
    yield cfg, ledger, {"aws": primary, "gcp": other}
    ledger.close()


def _failed_over_run(ledger: Ledger, stores, parts_on_a: list[int], parts_on_b: list[int]) -> int:
    """A run whose chunks landed partly on aws (before the failover) and partly on gcp."""
    run_id, _ = ledger.claim("feats", W.start, W.end, trigger="manual", lease=timedelta(seconds=30))
    a1 = ledger.start_attempt(run_id, "aws")
    ledger.set_partitions(run_id, len(parts_on_a) + len(parts_on_b))
    for i in parts_on_a:
        key = f"offline/fv/{W.tag}-part{i:05d}.parquet"
        stores["aws"].write_bytes(key, f"a{i}".encode())
        ledger.record_chunk(run_id, i, {"rows_out": 1, "file": stores["aws"].url(key)}, a1)
    ledger.finish_attempt(a1, outcome="failed", failure_class="infrastructure", error="storage down")
    a2 = ledger.start_attempt(run_id, "gcp")
    for i in parts_on_b:
        key = f"offline/fv/{W.tag}-part{i:05d}.parquet"
        stores["gcp"].write_bytes(key, f"b{i}".encode() * 1000)
        ledger.record_chunk(run_id, i, {"rows_out": 1, "file": stores["gcp"].url(key)}, a2)
    assert ledger.finish_success(run_id, a2, 4, copy_to_primary=True)
    return run_id


def test_reconcile_copies_failed_over_parts_to_the_primary(setup):
    cfg, ledger, stores = setup
    # a dead attempt on the primary left a part (index 3) that gcp later rewrote
    stale = f"offline/fv/{W.tag}-part00003.parquet"
    stores["aws"].write_bytes(stale, b"stale")
    extra = f"offline/fv/{W.tag}-part00009.parquet"  # from an older partitioning: not in the ledger
    stores["aws"].write_bytes(extra, b"orphan")
    run_id = _failed_over_run(ledger, stores, parts_on_a=[0, 1], parts_on_b=[2, 3])

    rep = reconcile(cfg, ledger, stores)
    assert rep.ok and rep.pending_left == 0
    (out,) = rep.runs
    assert (out.run_id, out.copied, out.removed, out.error) == (run_id, 2, 1, None)
    assert out.bytes == len(b"b2" * 1000) + len(b"b3" * 1000)
    keys = sorted(stores["aws"].list(f"offline/fv/{W.tag}-part"))
    assert keys == [f"offline/fv/{W.tag}-part{i:05d}.parquet" for i in range(4)]
    assert stores["aws"].read_bytes(stale) == b"b3" * 1000  # gcp's part replaced the dead attempt's
    assert stores["aws"].read_bytes(keys[0]) == b"a0"
    manifest = read_manifest(stores["aws"], "fv", W)
    assert manifest["run_id"] == run_id and manifest["provider"] == "gcp"
    assert manifest["files"] == [stores["aws"].url(k) for k in keys]
    assert ledger.pending_copies() == [] and ledger.copy_states() == {"done": 1}
    # idempotent: nothing left to do
    again = reconcile(cfg, ledger, stores)
    assert again.ok and again.runs == []


def test_reconcile_waits_while_the_primary_is_unreachable(setup, tmp_path, moto_server):
    cfg, ledger, stores = setup
    run_id = _failed_over_run(ledger, stores, parts_on_a=[], parts_on_b=[0, 1])
    dark = dict(stores, aws=_s3(f"http://127.0.0.1:{_closed_port()}", "skyfeast-nowhere"))
    t0 = time.monotonic()
    rep = reconcile(cfg, ledger, dark, probe_timeout=5)
    assert time.monotonic() - t0 < 10
    assert not rep.ok and "unreachable" in rep.stopped and rep.pending_left == 1 and rep.runs == []
    assert [p["run_id"] for p in ledger.pending_copies()] == [run_id]
    # the daemon's health view says down: no probe at all
    rep = reconcile(cfg, ledger, stores, available=lambda name: name != "aws")
    assert "health monitor" in rep.stopped and rep.pending_left == 1
    # back: the copy goes through
    rep = reconcile(cfg, ledger, stores)
    assert rep.ok and [r.copied for r in rep.runs] == [2]
    assert stores["aws"].exists(manifest_key("fv", W))


def test_owner_of_picks_the_longest_matching_root(tmp_path):
    outer = LocalStore(tmp_path / "data")
    inner = LocalStore(tmp_path / "data" / "gcp")
    stores = {"outer": outer, "inner": inner}
    assert owner_of(inner.url("offline/x.parquet"), stores) == ("inner", "offline/x.parquet")
    assert owner_of(outer.url("aws/offline/x.parquet"), stores) == ("outer", "aws/offline/x.parquet")
    assert owner_of(str(Path("/elsewhere/x.parquet")), stores) is None
    # a sibling whose name merely starts like a root is not inside it
    assert owner_of(str(tmp_path / "data" / "gcp2" / "x"), {"inner": inner}) is None


def _stage(store, view: str, window: Window, part: int, root: str = "staging") -> str:
    key = f"{root}/{view}/{window.tag}-part{part:05d}.parquet"
    store.write_bytes(key, b"staged")
    return key


def test_reconcile_sweeps_the_staged_parts_of_succeeded_runs_only(setup):
    """A lost provider's worker can finish staging a chunk after the run failed over, published and
    cleaned up: the next pass removes such parts of succeeded runs, on every storage, and keeps
    those of failed runs (a retry resumes from them), running runs, windows without a run, views
    no job writes and drills' staging."""
    cfg, ledger, stores = setup
    _failed_over_run(ledger, stores, parts_on_a=[0], parts_on_b=[1])  # W succeeded
    hours = [Window(W.end + timedelta(hours=h), W.end + timedelta(hours=h + 1)) for h in range(3)]
    failed, running, no_run = hours
    rid, _ = ledger.claim("feats", failed.start, failed.end, trigger="manual", lease=timedelta(seconds=30))
    ledger.finish_attempt(ledger.start_attempt(rid, "aws"), outcome="failed", failure_class="data", error="boom")
    assert ledger.finish_run(rid, status="failed", failure_class="data", error="boom")
    ledger.claim("feats", running.start, running.end, trigger="manual", lease=timedelta(seconds=30))
    orphans = [_stage(stores["aws"], "fv", W, 1), _stage(stores["gcp"], "fv", W, 1)]
    kept = {"aws": [_stage(stores["aws"], "fv", w, 0) for w in hours] + [
        _stage(stores["aws"], "other_view", W, 0), _stage(stores["aws"], "fv", W, 0, root="drills")],
        "gcp": []}

    # a storage the health monitor holds down is left for a later pass
    rep = reconcile(cfg, ledger, stores, available=lambda name: name != "gcp")
    assert rep.staged_removed == 1 and not stores["aws"].exists(orphans[0]) and stores["gcp"].exists(orphans[1])
    rep = reconcile(cfg, ledger, stores)
    assert rep.ok and rep.staged_removed == 1 and rep.as_dict()["staged_removed"] == 1
    for name, store in stores.items():
        assert sorted(store.list("staging/") + store.list("drills/")) == sorted(kept[name]), name
    assert reconcile(cfg, ledger, stores).staged_removed == 0  # idempotent


def test_sweeping_a_hung_storage_gives_up_in_seconds(setup):
    from skyfeast.scheduler.run.reconcile import sweep_staging
    from tests.silent import silent_server

    cfg, ledger, stores = setup
    _failed_over_run(ledger, stores, parts_on_a=[0], parts_on_b=[1])
    orphan = _stage(stores["gcp"], "fv", W, 1)
    with silent_server() as port:
        hung = _s3(f"http://127.0.0.1:{port}", "skyfeast-hung")
        t0 = time.monotonic()
        removed = sweep_staging(cfg, ledger, {"aws": hung, "gcp": stores["gcp"]}, timeout=1)
        assert time.monotonic() - t0 < 5
    assert removed == 1 and not stores["gcp"].exists(orphan)
