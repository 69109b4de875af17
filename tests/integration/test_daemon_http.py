"""``skyfeast daemon --http``: an address it cannot listen on ends it with one line and exit 2,
before the ledger is opened or anything dispatched; ``daemon.http`` is validated with the config."""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import make_project, skyfeast_inprocess

pytestmark = pytest.mark.integration


def test_a_port_in_use_is_exit_2_before_anything_starts(tmp_path):
    cfg = make_project(tmp_path / "p", users=50, per_day=100, days=2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = skyfeast_inprocess("daemon", "-c", str(cfg), "--http", f"127.0.0.1:{port}", cwd=cfg.parent)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--http 127.0.0.1:{port}: cannot listen there" in lines[0], proc.stderr
    assert not (cfg.parent / ".skyfeast" / "state.db").exists()  # the ledger was never opened

    cfg.write_text(cfg.read_text() + "daemon: {http: 'localhost'}\n")
    proc = skyfeast_inprocess("daemon", "-c", str(cfg), cwd=cfg.parent)
    assert proc.returncode == 2 and "daemon.http" in proc.stderr and "HOST:PORT" in proc.stderr, proc.stderr
