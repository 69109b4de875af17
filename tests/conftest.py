"""Shared fixtures.

Servers (PostgreSQL, Redis) are real. A test that needs one and cannot reach
it is *skipped* with the reason, unless ``SKYFEAST_REQUIRE_SERVICES=1`` (set
by ``.ci/run``), in which case it *fails*.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_SERVICES = os.environ.get("SKYFEAST_REQUIRE_SERVICES") == "1"
PG_URL = os.environ.get("SKYFEAST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SKYFEAST_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or fail under SKYFEAST_REQUIRE_SERVICES=1) when ``host:port`` is closed."""
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg} and SKYFEAST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{msg}; start it or set SKYFEAST_TEST_PG/SKYFEAST_TEST_REDIS")


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or default_port


@pytest.fixture
def pg_url():
    """URL of a fresh PostgreSQL database, created for this test and dropped after it."""
    need_service("PostgreSQL", *_host_port(PG_URL, 5432))
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"skyfeast_t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
        ), {"n": name})
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """Parametrises a test over every ledger backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server on a free port, for the whole session (see tests/emulators.py)."""
    from tests.emulators import running, start_moto

    with running(start_moto) as emu:
        yield emu


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator (in memory) on a free port, for the whole session."""
    from tests.emulators import running, start_gcs_emulator

    with running(start_gcs_emulator) as emu:
        yield emu


def importorskip(module: str):
    """``pytest.importorskip`` that fails instead under SKYFEAST_REQUIRE_SERVICES=1 (CI installs everything)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed ({exc}); install skyfeast[test]"
        if REQUIRE_SERVICES:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
