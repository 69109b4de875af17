"""Fail fast and say so (issue 14, item 4): against a ledger that accepts connections and never
answers, ``status``, ``run``, ``backfill`` and ``daemon`` with a full quickstart config exit 2 within 10 s, naming
the ledger (password masked) and the cause, as a user runs them."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import AT, END, make_project, skyfeast
from tests.silent import silent_server

pytestmark = pytest.mark.integration


@pytest.fixture
def hung_ledger_project(tmp_path):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with silent_server() as port:
        url = f"postgresql+psycopg://skyfeast:s3cret@127.0.0.1:{port}/ledger"
        yield make_project(tmp_path / "p", users=100, per_day=500, edit=lambda cfg: cfg.update(state=url)), port


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["run", "--job", "user_features", "--at", AT],
                                  ["backfill", "user_features", "--start", "2026-03-02T10:00:00Z", "--end", END],
                                  ["daemon", "--ticks", "1"]],
                         ids=["status", "status-json", "run", "backfill", "daemon"])
def test_a_hung_ledger_fails_the_command_within_10s(hung_ledger_project, argv):
    cfg, port = hung_ledger_project
    t0 = time.monotonic()
    proc = skyfeast(*argv[:1], "-c", str(cfg), *argv[1:], cwd=cfg.parent, timeout=60)
    seconds = time.monotonic() - t0
    assert proc.returncode == 2 and seconds < 10, (proc.returncode, seconds, proc.stderr[-2000:])
    err = proc.stderr
    assert f"postgresql+psycopg://skyfeast:***@127.0.0.1:{port}/ledger" in err and "s3cret" not in err
    assert "timeout" in err.lower() and "Traceback" not in err
    assert "waiting for the ledger at postgresql+psycopg://skyfeast:***@" in err  # said so while it waited


def test_a_config_error_is_reported_before_a_hung_ledger(tmp_path):
    """The ledger is reached while Feast's repo loads; a config that is wrong as well is reported as
    such (its file, key and line), no later than the ledger's connect timeout would be."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")

    def edit(cfg):
        cfg["state"] = f"postgresql+psycopg://skyfeast:s3cret@127.0.0.1:{port}/ledger"
        cfg["jobs"][0]["feature_view"] = "no_such_view"

    with silent_server() as port:
        cfg = make_project(tmp_path / "p", users=100, per_day=500, edit=edit)
        t0 = time.monotonic()
        proc = skyfeast("status", "-c", str(cfg), cwd=cfg.parent, timeout=60)
        seconds = time.monotonic() - t0
    assert proc.returncode == 2 and seconds < 10, (proc.returncode, seconds, proc.stderr[-2000:])
    assert "feature view 'no_such_view' not found" in proc.stderr and "jobs[0].feature_view" in proc.stderr
    assert "cannot open ledger" not in proc.stderr and "Traceback" not in proc.stderr
