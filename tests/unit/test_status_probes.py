"""``skyfeast status`` shows each provider's state from the last probe recorded in the ledger, with
its age (issue 14, item 7); ``unknown (never probed)`` without one; ``--probe`` still probes live."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.cli import main
from skyfeast.scheduler.cli.status import age_text
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.ledger import Ledger

UTC = timezone.utc
CONFIG = """project: p
feast: {repo: repo}
providers:
  aws: {priority: 1, cluster: {type: local}, storage: {type: local, root: data-aws}}
  gcp: {priority: 2, cluster: {type: address, address: "tcp://127.0.0.1:9", connect_timeout: 1s}, storage: {type: local, root: data-gcp}}
  onprem: {priority: 3, cluster: {type: local}, storage: {type: local, root: data-onprem}}
"""
FEATURE_STORE = """project: p
registry: data/registry.db
provider: local
online_store: {type: sqlite, path: data/online.db}
entity_key_serialization_version: 3
"""


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "feature_store.yaml").write_text(FEATURE_STORE)  # no feature views: none to show
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG)
    return str(path)


def _record(cfg: str, owner: str, **probes) -> None:
    ledger = Ledger(load_config(cfg, check_imports=False, check_feast=False).state_url, owner=owner)
    try:
        for name, (state, age, workers, error) in probes.items():
            ledger.record_probe(name, state, workers=workers, error=error,
                                at=datetime.now(UTC) - timedelta(seconds=age))
    finally:
        ledger.close()


def test_status_shows_the_recorded_state_and_its_age(capsys, cfg):
    _record(cfg, "host:1:daemon", aws=("healthy", 12, 2, None), gcp=("down", 300, None, "refused"))
    assert main(["status", "-c", cfg, "--json"]) == 0
    got = {p["name"]: p for p in json.loads(capsys.readouterr().out)["providers"]}
    aws, gcp, onprem = got["aws"], got["gcp"], got["onprem"]
    assert (aws["state"], aws["workers"], aws["probed_by"], aws["probe_error"]) == ("healthy", 2, "host:1:daemon", None)
    assert 12 <= aws["probe_age_s"] < 60
    assert datetime.fromisoformat(aws["checked_at"]) < datetime.now(UTC) - timedelta(seconds=11)
    assert (gcp["state"], gcp["probe_error"]) == ("down", "refused") and 300 <= gcp["probe_age_s"] < 360
    assert (onprem["state"], onprem["checked_at"], onprem["probe_age_s"], onprem["probed_by"]) == (
        "unknown", None, None, None)

    assert main(["status", "-c", cfg]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2] in (["aws"], ["gcp"], ["onprem"])}
    assert "healthy (checked 1" in rows["aws"] and "s ago)" in rows["aws"]  # 12s, 13s on a slow box
    assert "down (checked 5m ago)" in rows["gcp"]
    assert "unknown (never probed)" in rows["onprem"]


def test_a_newer_probe_replaces_the_older(capsys, cfg):
    _record(cfg, "a", aws=("healthy", 120, 2, None))
    _record(cfg, "b", aws=("degraded", 1, 0, None))
    assert main(["status", "-c", cfg, "--json"]) == 0
    aws = json.loads(capsys.readouterr().out)["providers"][0]
    assert (aws["name"], aws["state"], aws["probed_by"], aws["workers"]) == ("aws", "degraded", "b", 0)
    assert aws["probe_age_s"] < 60


def test_live_probe_takes_precedence(capsys, cfg):
    """``--probe`` probes now: nothing listens at gcp's address, so it is down whatever was recorded."""
    with open(cfg, "w") as f:  # no local cluster: --probe would start it
        f.write(CONFIG.split("  aws:")[0] + "  gcp:" + CONFIG.split("  gcp:")[1].split("  onprem:")[0])
    _record(cfg, "a", gcp=("healthy", 5, 4, None))
    assert main(["status", "-c", cfg, "--json", "--probe"]) == 0
    gcp = {p["name"]: p for p in json.loads(capsys.readouterr().out)["providers"]}["gcp"]
    assert gcp["state"] == "down" and gcp["probe_age_s"] == 0.0 and gcp["probed_by"] == "status --probe"
    assert gcp["probe_error"]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (12.7, "12s"), (59, "59s"), (60, "1m"), (3599, "59m"),
                                               (7200, "2h"), (3 * 86400 + 5, "3d")])
def test_age_text(seconds, text):
    assert age_text(seconds) == text


def test_the_health_monitor_records_each_provider_at_most_once_per_interval(tmp_path):
    from types import SimpleNamespace

    from skyfeast.scheduler.config import AddressCluster, HealthSettings, LocalStorage, Provider
    from skyfeast.scheduler.control.health import HealthMonitor
    from skyfeast.scheduler.control.providers import ProviderPool

    cfg = SimpleNamespace(base_dir=tmp_path, health=HealthSettings(interval="1h", miss_budget=1), providers={
        "aws": Provider(cluster=AddressCluster(type="address", address="tcp://127.0.0.1:9"),
                        storage=LocalStorage(type="local", root="aws"), priority=1)})
    (tmp_path / "aws").mkdir()
    pool = ProviderPool(cfg)
    pool.address = lambda name: "tcp://127.0.0.1:9"  # as if connected
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}", owner="me")
    monitor = HealthMonitor(pool, ledger, cfg.health)
    answers = iter([(True, 2, None), (True, 3, None), (False, None, "refused")])
    monitor._probes.probe = lambda *a: next(answers)
    try:
        monitor.probe_once()
        first = ledger.probes()["aws"]
        assert (first["state"], first["workers"], first["by"]) == ("healthy", 2, "me")
        monitor.probe_once()  # same state within the interval: no write
        assert ledger.probes()["aws"] == first
        monitor.probe_once()  # a state change is written at once
        assert {k: ledger.probes()["aws"][k] for k in ("state", "error")} == {"state": "down", "error": "refused"}
    finally:
        monitor.close()
        pool.close()
        ledger.close()
