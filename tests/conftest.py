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


# ---------------------------------------------------------------- xdist (scripts/test.sh: -n N --dist loadgroup)
#
# Work units, one worker each:
# * "chaos-drills": the drills (:data:`_QUIET_PREFIXES`), one at a time on one worker: their
#   deadlines (a drill must fail over within 30 s) are measured on the wall clock, and two drills
#   side by side fail them.  They also run apart from integration tests (:func:`_xdist_quiet`).
# * "chaos": the other tests of tests/chaos/ (killed daemons, health detection), one at a time on
#   one worker, beside the drills and integration tests.
# * each tests/integration/ file: its module fixtures (clusters, materialised datasets, quickstart
#   runs) are built once.  The benchmark smokes (:data:`_OWN_UNIT_FILES`) share no fixture: each is a
#   unit of its own, since together they are the suite's longest file.
# * every other test on its own.
# The scheduler decides this from node ids: pytest-xdist 3.8's own ``xdist_group`` marks do nothing
# under pytest >= 9.2 (xdist issue #1386: the group suffix it writes into the node id is ignored).
#
# Order (:func:`pytest_collection_modifyitems`): the drills, the other chaos tests, the integration
# files that start no Dask cluster, the unit and contract tests, then the other integration units,
# those with the most tests first.  While the drills hold the machine, the other workers run
# chaos, unit and contract tests and the light integration files, which they do not block;
# integration tests that start clusters, which they do block, come after.
_CHAOS_DIR = "tests/chaos/"
_FILE_UNIT_DIRS = ("tests/integration/",)
# Tests that measure a failover deadline on the wall clock (a drill's first task elsewhere within 30 s,
# which includes starting the other provider's cluster).
_QUIET_PREFIXES = ("tests/chaos/test_drill", "tests/chaos/test_http_drill", "tests/chaos/test_group_failover")
# Integration files that start no Dask cluster (CLI processes against silent or refusing servers, config
# fuzzing, an install): no heavier than the unit tests' subprocesses, so they may run beside the drills.
_LIGHT_INTEGRATION = ("tests/integration/test_unresponsive.py", "tests/integration/test_cluster_unresponsive.py",
                      "tests/integration/test_validate_fuzz.py", "tests/integration/test_namespace.py")
# Integration files whose tests share no module fixture: a unit per test.
_OWN_UNIT_FILES = ("tests/integration/test_bench_smoke.py",)
# Integration units of a minute or so each in spite of few tests (a timeline of 2026-12-07): handed out
# with the bench smokes before the other integration files, so that the run does not end on one of
# them while the other workers idle (the longest first, as far as the test count tells).
_LONG_UNITS = _OWN_UNIT_FILES + ("tests/integration/test_run_many.py", "tests/integration/test_model_groups_mlflow.py",
                                 "tests/integration/test_durability.py", "tests/integration/test_daemon.py",
                                 "tests/integration/test_failures.py")


def xdist_unit(nodeid: str) -> str:
    """The work unit of ``nodeid`` (a rootdir-relative node id)."""
    if nodeid.startswith(_QUIET_PREFIXES):
        return "chaos-drills"
    if nodeid.startswith(_CHAOS_DIR):
        return "chaos"
    if nodeid.startswith(_FILE_UNIT_DIRS) and not nodeid.startswith(_OWN_UNIT_FILES):
        return nodeid.split("::", 1)[0]
    return nodeid


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist never calls it
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    config.option.loadscopereorder = False  # the units come in the workers' collection order (below)

    class Scheduler(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "@" in nodeid.rsplit("]", 1)[-1]:  # an xdist_group mark, once xdist honours them again
                return super()._split_scope(nodeid)
            return xdist_unit(nodeid)

    return Scheduler(config, log)


def xdist_order(nodeids: list[str]) -> list[int]:
    """The positions of ``nodeids`` in the order their work units are handed out: the drills, the
    other chaos tests, the light integration files, unit and contract tests, then the other
    integration units: the long ones (:data:`_LONG_UNITS`) first, then most tests first (each group
    stable)."""
    per_unit: dict[str, int] = {}
    for nodeid in nodeids:
        if nodeid.startswith(_FILE_UNIT_DIRS):
            unit = xdist_unit(nodeid)
            per_unit[unit] = per_unit.get(unit, 0) + 1

    def key(i: int):
        nodeid = nodeids[i]
        unit = xdist_unit(nodeid)
        if unit == "chaos-drills":
            return (0, 0, 0, "", i)
        if unit == "chaos":
            return (1, 0, 0, "", i)
        if nodeid.startswith(_LIGHT_INTEGRATION):  # first of their group: taken while the drills run
            return (2, 0, 0, unit, i)
        if unit in per_unit:
            return (3, not nodeid.startswith(_LONG_UNITS), -per_unit[unit], unit, i)
        return (2, 1, 0, "", i)

    return sorted(range(len(nodeids)), key=key)


def pytest_collection_modifyitems(config, items):
    # on xdist's workers, whose collections the controller schedules from (a worker's own ``dist``
    # option reads "no"); another --dist mode hands tests out by index, to which the order is neutral
    if os.environ.get("PYTEST_XDIST_WORKER"):
        order = xdist_order([item.nodeid for item in items])
        items[:] = [items[i] for i in order]


# Under xdist none of the drills runs while an integration test that starts Dask clusters (CPU-bound
# starts; all but :data:`_LIGHT_INTEGRATION`) runs on another worker. Unit, contract and the other chaos tests still run beside them.
@pytest.fixture(autouse=True)
def _xdist_quiet(request, tmp_path_factory):
    """Under xdist: a quiet test holds the shared lock file exclusively, an integration test holds it
    shared. A quiet test first takes the turnstile, which integration tests pass through before their
    lock, so the workers' back-to-back integration tests cannot starve it."""
    nodeid = request.node.nodeid
    quiet = nodeid.startswith(_QUIET_PREFIXES)
    heavy = nodeid.startswith("tests/integration/") and not nodeid.startswith(_LIGHT_INTEGRATION)
    if not os.environ.get("PYTEST_XDIST_WORKER") or not (quiet or heavy):
        yield
        return
    import fcntl

    root = tmp_path_factory.getbasetemp().parent  # shared by the run's workers (popen-gwN are under it)
    with open(root / "quiet.turnstile", "a") as turnstile, open(root / "quiet.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not quiet:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX if quiet else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if quiet:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


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


def _pg_url_for(database: str, schema: str | None = None) -> str:
    """``PG_URL`` pointed at ``database``; with ``schema``, every connection's ``search_path`` is that schema."""
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL).set(database=database)
    if schema is not None:
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


# Schemas every PostgreSQL database has; anything else in the shared database belongs to one test.
_PG_SYSTEM_SCHEMAS = ("public", "information_schema")


@pytest.fixture(scope="session")
def _pg_session_database():
    """One PostgreSQL database for the whole session (CREATE/DROP DATABASE cost ~1 s each).

    Yields its name and an AUTOCOMMIT engine on it, with which ``pg_url`` makes and cleans up schemas.
    """
    need_service("PostgreSQL", *_host_port(PG_URL, 5432))
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"skyfeast_t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    shared = sa.create_engine(_pg_url_for(name), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        yield name, shared
    finally:
        shared.dispose()
        with admin.connect() as c:
            c.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _pg_reset(conn, name: str) -> None:
    """Put the shared database back as CREATE DATABASE made it: no sessions of the test left, no
    database-level settings (a test may ``ALTER DATABASE ... SET timezone``), no schemas or tables."""
    import sqlalchemy as sa

    conn.execute(sa.text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    conn.execute(sa.text(f'ALTER DATABASE "{name}" RESET ALL'))
    schemas = conn.execute(sa.text(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> ALL(:keep)"
    ), {"keep": list(_PG_SYSTEM_SCHEMAS)}).scalars().all()
    for schema in schemas:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    dirty = conn.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public') OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = 'public') OR EXISTS (SELECT 1 FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public')"
    )).scalar()
    if dirty:  # recreated as initdb makes it (owner and privileges changed in PostgreSQL 15)
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        if int(conn.execute(sa.text("SHOW server_version_num")).scalar()) >= 150000:
            conn.execute(sa.text("CREATE SCHEMA public AUTHORIZATION pg_database_owner"))
            conn.execute(sa.text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
        else:
            conn.execute(sa.text("CREATE SCHEMA public"))
            conn.execute(sa.text("GRANT ALL ON SCHEMA public TO PUBLIC"))


@pytest.fixture
def pg_url(_pg_session_database):
    """URL of a fresh, empty PostgreSQL schema: the URL sets ``search_path`` to it (``?options=-csearch_path=``).

    The schema lives in one database shared by the session, which is put back to empty after every
    test (sessions terminated, database settings reset, every schema the test made dropped), so a
    test that uses the database directly (``make_url(pg_url).database``) also starts from a fresh one.
    """
    need_service("PostgreSQL", *_host_port(PG_URL, 5432))
    import sqlalchemy as sa

    name, shared = _pg_session_database
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with shared.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_url_for(name, schema)
    finally:
        with shared.connect() as conn:
            _pg_reset(conn, name)


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


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory):
    importorskip("mlflow")
    importorskip("alembic")  # MLflow's SQL tracking store (mlflow-skinny leaves it out)
    from tests.mlflow_store import template

    return template(tmp_path_factory.mktemp("mlflow-template"))


@pytest.fixture
def mlflow_uri(_mlflow_template, tmp_path):
    """Tracking URI of a private copy of a real local MLflow store (SQLite, no server) holding model
    ``card`` v1 (alias champion) and v2 (tests/mlflow_store.py).  Skips (or fails under
    SKYFEAST_REQUIRE_SERVICES=1) without mlflow."""
    from tests.mlflow_store import copy

    return copy(_mlflow_template, tmp_path / "mlflow")


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
