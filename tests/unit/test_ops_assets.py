"""ops/ assets against the daemon: the alert rules and the Grafana dashboard query only
metric names that ``skyfeast.scheduler.app.metrics.SPECS`` declares (plus Prometheus' own
``up``), every alert links a runbook that exists, and ``promtool`` accepts the rules and
their unit tests when it is installed (Debian package ``prometheus``; ``.ci/run`` installs it).
Also the ``feast.freshness_slo`` config key behind ``skyfeast_feature_freshness_slo_seconds``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from skyfeast.scheduler.app.metrics import SPECS
from skyfeast.scheduler.config import load_config
from skyfeast.scheduler.errors import ConfigError
from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "alerts" / "skyfeast.rules.yml"
RULE_TESTS = ROOT / "ops" / "alerts" / "skyfeast.rules.test.yml"
DASHBOARD = ROOT / "ops" / "dashboards" / "skyfeast.json"
METRIC = re.compile(r"\b(?:skyfeast|feast)_[a-zA-Z0-9_]*")
PROMETHEUS_OWN = {"up"}


def _exported() -> set[str]:
    """Every series name a scrape of the daemon can show (histograms as _bucket/_sum/_count)."""
    out = set()
    for spec in SPECS:
        out |= {f"{spec.name}{s}" for s in ("_bucket", "_sum", "_count")} if spec.kind == "histogram" else {spec.name}
    return out


def _unknown_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not metric names
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # nor are the label names of a selector
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # nor grouping labels
    return set(METRIC.findall(expr)) - _exported()


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_metric_name_extraction_sees_names_and_ignores_label_values():
    assert _unknown_metrics('sum(rate(skyfeast_nope_total{feature_view="feast_x"}[5m]))') == {"skyfeast_nope_total"}
    assert not _unknown_metrics("histogram_quantile(0.95, sum by (le) (rate(skyfeast_run_duration_seconds_bucket[5m])))")
    # label names are not metric names either, in a selector or a grouping
    assert not _unknown_metrics('sum by (skyfeast_job) (skyfeast_runs_total{skyfeast_job="a", status="failed"})')
    assert _unknown_metrics("sum by (skyfeast_job) (skyfeast_nope_total)") == {"skyfeast_nope_total"}


def test_every_alert_is_complete_and_its_runbook_exists():
    rules = _rules()
    assert rules
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        where = rule["alert"]
        assert rule.get("expr", "").strip(), where
        assert "for" in rule, where
        assert rule.get("labels", {}).get("severity") in {"page", "warning", "ticket"}, where
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), where
        url = notes.get("runbook_url", "")
        assert url.startswith("ops/runbooks/") and (ROOT / url).is_file(), f"{where}: runbook {url!r}"
        assert f"Alert: {where}" in (ROOT / url).read_text() or where in (ROOT / url).read_text(), where


def test_alert_rules_query_only_exported_metrics():
    for rule in _rules():
        assert not _unknown_metrics(rule["expr"]), (rule["alert"], _unknown_metrics(rule["expr"]))
    names = {n for r in _rules() for n in re.findall(r"\b[a-z_]+\b", r["expr"])}
    assert "up" in names and PROMETHEUS_OWN <= names


def test_runbooks_are_linked_from_the_ops_readme():
    readme = (ROOT / "ops" / "README.md").read_text()
    for url in {r["annotations"]["runbook_url"] for r in _rules()}:
        assert url.removeprefix("ops/") in readme, url


def test_dashboard_loads_with_unique_ids_and_queries_only_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" for v in dash["templating"]["list"])
    panels = [p for top in dash["panels"] for p in (top, *top.get("panels", []))]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    queried = set()
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert not _unknown_metrics(target["expr"]), (panel["title"], _unknown_metrics(target["expr"]))
            queried |= set(METRIC.findall(target["expr"]))
    # the panels: provider state, runs, durations, failovers, attempts, freshness vs SLO, leader,
    # lease age, ledger latency, chunks and online rows, drill detection and recovery
    for name in ("skyfeast_provider_state", "skyfeast_runs_total", "skyfeast_run_duration_seconds_bucket",
                 "skyfeast_failovers_total", "skyfeast_attempts_total", "feast_feature_freshness_seconds",
                 "skyfeast_feature_freshness_slo_seconds", "skyfeast_leader", "skyfeast_leader_lease_age_seconds",
                 "skyfeast_ledger_query_duration_seconds_bucket", "skyfeast_chunks_written_total",
                 "skyfeast_online_rows_written_total", "skyfeast_drill_detection_seconds",
                 "skyfeast_drill_recovery_seconds"):
        assert name in queried, name


def _promtool() -> str:
    """promtool's path; a missing one skips, or fails under SKYFEAST_REQUIRE_SERVICES=1 (.ci/run installs it)."""
    path = shutil.which("promtool")
    if path is None:
        msg = "promtool is not on PATH (Debian package `prometheus`: apt-get install --no-install-recommends prometheus)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{msg} and SKYFEAST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(msg)
    return path


def test_promtool_accepts_the_rules():
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests_pass():
    out = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------- feast.freshness_slo
CONFIG = """\
project: p
feast: {{repo: repo, freshness_slo: {slo}}}
providers:
  local: {{cluster: {{type: local}}, storage: {{type: local, root: data}}}}
jobs:
  - name: j
    kind: feature
    feature_view: user_features
    schedule: {{type: interval, every: 1h}}
    source: {{type: parquet, path: "in/*.parquet"}}
    transform: transforms:feat
"""


def _load(tmp_path, slo: str):
    (tmp_path / "transforms.py").write_text("def feat(df, window):\n    return df\n")
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG.format(slo=slo))
    return load_config(path, check_imports=False, check_feast=False)


def test_freshness_slo_takes_durations_of_feature_views_that_jobs_write(tmp_path):
    cfg = _load(tmp_path, "{user_features: 2h}")
    assert cfg.feast.freshness_slo["user_features"].total_seconds() == 7200
    assert _load(tmp_path, "{}").feast.freshness_slo == {}


@pytest.mark.parametrize("slo, message", [
    ("{user_feature: 2h}", "no job writes feature view 'user_feature'"),
    ("{user_features: soon}", "is not a duration"),
    ("{user_features: 0s}", "duration must be positive"),
])
def test_a_bad_freshness_slo_is_a_config_error_at_its_key(tmp_path, slo, message):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, slo)
    assert message in str(info.value)
    assert "feast.freshness_slo" in str(info.value)
