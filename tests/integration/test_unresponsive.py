"""Fail fast and say so (issue 14, item 4): against a ledger that accepts connections and never
answers, ``status``, ``run``, ``backfill`` and ``daemon`` with a full quickstart config exit 2 within 10 s, naming
the ledger (password masked) and the cause, as a user runs them.

Within 10 s on an idle machine (4.4 to 5.1 s measured, docs/benchmarks.md); a loaded one stretches
the process's own start-up (imports, the config, Feast's repo) well past that. So each case also
times the same command against a ledger port that refuses at once, right before, and the hung
ledger may cost at most the connect timeout (3 s) and a margin more than that.
"""

from __future__ import annotations

import socket
import time

import pytest
import yaml

from tests.integration.conftest import AT, END, make_project, skyfeast
from tests.silent import silent_server

pytestmark = pytest.mark.integration


CONNECT_TIMEOUT = 3.0  # the ledger's default connect timeout (docs/config.md)
MARGIN = 3.0  # what a hung ledger may cost beyond it: the statement, the reach's join, noise


def _refusing_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a connection is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _timed(argv: list[str], cfg, config_name: str = "skyfeast.yaml"):
    t0 = time.monotonic()
    proc = skyfeast(*argv[:1], "-c", str(cfg.parent / config_name), *argv[1:], cwd=cfg.parent, timeout=60)
    return proc, time.monotonic() - t0


def _with_refusing_ledger(cfg) -> str:
    """A copy of ``cfg`` beside it whose ledger port refuses at once; its file name."""
    data = yaml.safe_load(cfg.read_text())
    data["state"] = f"postgresql+psycopg://skyfeast:s3cret@127.0.0.1:{_refusing_port()}/ledger"
    (cfg.parent / "refusing.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return "refusing.yaml"


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
    refused, fast = _timed(argv, cfg, _with_refusing_ledger(cfg))
    assert refused.returncode == 2 and "cannot open ledger" in refused.stderr, refused.stderr[-2000:]
    proc, seconds = _timed(argv, cfg)
    assert proc.returncode == 2, (proc.returncode, seconds, proc.stderr[-2000:])
    # within 10 s, or, on a machine loaded enough to stretch the refused case, within the connect
    # timeout and a margin of it: the wait for a silent server is bounded either way
    assert seconds < 10 or seconds < fast + CONNECT_TIMEOUT + MARGIN, \
        f"{seconds:.1f} s against a hung ledger, {fast:.1f} s against a refusing one"
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
        refused, fast = _timed(["status"], cfg, _with_refusing_ledger(cfg))
        proc, seconds = _timed(["status"], cfg)
    assert refused.returncode == 2 and "jobs[0].feature_view" in refused.stderr, refused.stderr[-2000:]
    assert proc.returncode == 2, (proc.returncode, seconds, proc.stderr[-2000:])
    assert seconds < 10 or seconds < fast + CONNECT_TIMEOUT + MARGIN, \
        f"{seconds:.1f} s against a hung ledger, {fast:.1f} s against a refusing one"
    assert "feature view 'no_such_view' not found" in proc.stderr and "jobs[0].feature_view" in proc.stderr
    assert "cannot open ledger" not in proc.stderr and "Traceback" not in proc.stderr
