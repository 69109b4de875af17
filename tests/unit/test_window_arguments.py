"""Windows that have not closed, or are off the job's schedule, and instants out of range are
usage errors (exit 2) before anything is queued or written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from skyfeast.scheduler.cli import main
from skyfeast.scheduler.ledger import Ledger

CONFIG = """project: p
feast: {repo: repo}
providers:
  aws: {priority: 1, cluster: {type: local}, storage: {type: local, root: data}}
jobs:
  - name: hourly
    kind: feature
    schedule: {type: cron, expr: "0 * * * *"}
    source: {type: parquet, path: "events/*.parquet", timestamp_field: ts}
    transform: "t:f"
    feature_view: fv
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "skyfeast.yaml").write_text(CONFIG)
    return tmp_path


def _trigger(project, capsys, *args) -> tuple[int, str]:
    code = main(["trigger", "-c", str(project / "skyfeast.yaml"), "hourly", *args])
    return code, capsys.readouterr().err


def _runs(project) -> list:
    ledger = Ledger(f"sqlite:///{project / '.skyfeast' / 'state.db'}")
    try:
        return ledger.runs()
    finally:
        ledger.close()


def test_a_window_in_the_future_is_refused(project, capsys):
    end = (datetime.now(timezone.utc) + timedelta(hours=20)).replace(minute=0, second=0, microsecond=0)
    window = f"{end - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}"
    code, err = _trigger(project, capsys, "--window", window)
    assert code == 2 and "ends after now" in err
    assert not (project / ".skyfeast" / "state.db").exists() or _runs(project) == []


def test_an_off_grid_window_needs_allow_off_grid(project, capsys):
    code, err = _trigger(project, capsys, "--window", "2026-03-02T05:30:00Z/2026-03-02T06:00:00Z")
    assert code == 2 and "not on the job's schedule" in err and "--allow-off-grid" in err
    code, _ = _trigger(project, capsys, "--window", "2026-03-02T05:30:00Z/2026-03-02T06:00:00Z", "--allow-off-grid")
    assert code == 0
    code, _ = _trigger(project, capsys, "--window", "2026-03-02T05:00:00Z/2026-03-02T06:00:00Z")
    assert code == 0
    assert sorted(str(r.window_start.minute) for r in _runs(project)) == ["0", "30"]


@pytest.mark.parametrize("at", ["9999-12-31", "1900-01-01", "2026-13-01"])
def test_instants_out_of_range_are_usage_errors(project, capsys, at):
    code = main(["plan", "-c", str(project / "skyfeast.yaml"), "--at", at])
    err = capsys.readouterr().err
    assert code == 2 and "--at:" in err and "internal error" not in err
