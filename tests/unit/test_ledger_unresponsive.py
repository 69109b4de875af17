"""A ledger server that accepts connections and never answers: commands fail within seconds, with
exit status 2, the URL (password masked) and the cause; no silent minutes-long wait."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from skyfeast.scheduler.cli import main


@pytest.fixture
def silent_server():
    """A TCP server that accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


def test_status_against_a_silent_ledger_fails_in_seconds(tmp_path, capsys, silent_server):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    (tmp_path / "repo").mkdir()
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(f"""project: p
state: postgresql+psycopg://skyfeast:s3cret@127.0.0.1:{silent_server}/ledger
feast: {{repo: repo}}
providers:
  aws: {{priority: 1, cluster: {{type: local}}, storage: {{type: local, root: data}}}}
""")
    t0 = time.monotonic()
    code = main(["runs", "-c", str(cfg)])
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2 and seconds < 10, (code, seconds, err)
    assert f"127.0.0.1:{silent_server}/ledger" in err and "s3cret" not in err
    assert "timeout" in err.lower() and "Traceback" not in err
