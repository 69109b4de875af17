"""A ledger server that accepts connections and never answers: commands fail within seconds, with
exit status 2, the URL (password masked) and the cause; no silent minutes-long wait."""

from __future__ import annotations

import time

import pytest

from skyfeast.scheduler.cli import main
from tests.silent import silent_server as silent


@pytest.fixture
def silent_server():
    with silent() as port:
        yield port


def test_status_against_a_silent_ledger_fails_in_seconds(tmp_path, capsys, caplog, silent_server):
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
    assert code == 1 and seconds < 10, (code, seconds, err)  # the server, not the config: a supervisor restarts it
    assert f"127.0.0.1:{silent_server}/ledger" in err and "s3cret" not in err
    assert "timeout" in err.lower() and "Traceback" not in err
    # past two seconds the wait said what it waited for, once, password masked
    waits = [r.getMessage() for r in caplog.records if r.name == "skyfeast.wait"]
    assert waits == [f"waiting for the ledger at postgresql+psycopg://skyfeast:***@127.0.0.1:{silent_server}/ledger"
                     " (2 s so far, gives up after 3 s)"], waits


def test_the_ledger_connect_timeout_is_configurable(tmp_path, capsys, silent_server):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    (tmp_path / "repo").mkdir()
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(f"""project: p
state: postgresql+psycopg://skyfeast@127.0.0.1:{silent_server}/ledger
feast: {{repo: repo}}
daemon: {{ledger_connect_timeout: 2s}}
providers:
  aws: {{priority: 1, cluster: {{type: local}}, storage: {{type: local, root: data}}}}
""")
    t0 = time.monotonic()
    code = main(["runs", "-c", str(cfg)])
    seconds = time.monotonic() - t0
    assert code == 1 and 1.5 < seconds < 4, (code, seconds)  # the default (3 s) would not fit
    assert "timeout" in capsys.readouterr().err


def test_the_statement_timeout_reaches_the_server(tmp_path, pg_url):
    """PostgreSQL cancels a ledger statement after ``daemon.ledger_statement_timeout``."""
    import sqlalchemy as sa

    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.ledger import open_ledger

    (tmp_path / "repo").mkdir()
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(f"""project: p
state: {pg_url}
feast: {{repo: repo}}
daemon: {{ledger_statement_timeout: 1500ms}}
providers:
  aws: {{priority: 1, cluster: {{type: local}}, storage: {{type: local, root: data}}}}
""")
    ledger = open_ledger(load_config(cfg, check_imports=False, check_feast=False))
    try:
        with ledger.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "1500ms"
            t0 = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(10)"))
            assert time.monotonic() - t0 < 5
    finally:
        ledger.close()


@pytest.mark.parametrize("command", [["runs"], ["models", "list"], ["cancel", "7"]])
def test_a_ledger_path_holding_another_file_is_a_usage_error(tmp_path, capsys, command):
    """`state:` naming a file that is not SQLite (a typo, a copied binary): exit 2 naming it, not an internal
    error from the driver; the file is left as it was."""
    (tmp_path / "repo").mkdir()
    junk = tmp_path / "garbage.db"
    junk.write_bytes(bytes(range(256)) * 20)
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text("""project: p
state: garbage.db
feast: {repo: repo}
providers:
  aws: {priority: 1, cluster: {type: local}, storage: {type: local, root: data}}
jobs: []
""")
    code = main([*command, "-c", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"state: cannot open ledger sqlite:///{junk}: file is not a database" in err, err
    assert "internal error" not in err and junk.read_bytes() == bytes(range(256)) * 20


def test_reaching_a_ledger_whose_url_cannot_be_used_raises_its_ledger_error():
    """reach_ledger's early failure (no engine can be made) is the LedgerError it names, raised by the wait."""
    from datetime import timedelta
    from types import SimpleNamespace

    from skyfeast.scheduler.ledger import LedgerError, reach_ledger

    cfg = SimpleNamespace(state_url="postgresql+nosuchdriver://u@127.0.0.1:1/db",
                          daemon=SimpleNamespace(ledger_connect_timeout=timedelta(seconds=3),
                                                 ledger_statement_timeout=timedelta(seconds=30)))
    wait = reach_ledger(cfg)
    with pytest.raises(LedgerError, match="is not a usable SQLAlchemy URL"):
        wait()


@pytest.mark.parametrize("url, hosts, connect", [
    ("postgresql+psycopg://u@h/db", 1, 3),
    ("postgresql+psycopg://u@/db?host=a&host=b", 2, 3),  # libpq tries each in turn, each with the timeout
    ("postgresql+psycopg://u@/db?host=a,b,c", 3, 3),
    ("postgresql+psycopg://u@h/db?connect_timeout=0", 1, 3),  # libpq's "for ever": the setting's deadline
    ("postgresql+psycopg://u@h/db?connect_timeout=1", 1, 2),  # libpq's floor
    ("postgresql+psycopg://u@h/db?connect_timeout=7", 1, 7),
])
def test_the_login_deadline_counts_every_server_the_url_names(url, hosts, connect):
    from skyfeast.scheduler.ledger.core import _connect_seconds, _hosts

    assert (_hosts(url), _connect_seconds(url, 3)) == (hosts, connect)


def test_a_ledger_server_that_refuses_the_login_is_bad_config_not_an_outage(tmp_path, capsys):
    """A server that answers and refuses (here: no such database) stays exit 2: restarting will not help."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from tests.conftest import PG_URL, _host_port, need_service

    host, port = _host_port(PG_URL, 5432)
    need_service("PostgreSQL", host, port)
    (tmp_path / "repo").mkdir()
    cfg = tmp_path / "skyfeast.yaml"
    cfg.write_text(f"""project: p
state: postgresql+psycopg://postgres@{host}:{port}/skyfeast_no_such_database
feast: {{repo: repo}}
providers:
  aws: {{priority: 1, cluster: {{type: local}}, storage: {{type: local, root: data}}}}
""")
    code = main(["runs", "-c", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2 and "skyfeast_no_such_database" in err and "does not exist" in err, (code, err)
