"""An online store that accepts connections and never answers costs a writer FIRST_CONTACT_S, not the
client libraries' own patience (redis-py: ten retries of a 5 s read, about a minute; psycopg: a 130 s
connect), and the error names the store without its credentials, as an infrastructure failure (another
provider's workers may reach it)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

import pytest

from skyfeast.adapters.failures import FailureClass, classify
from skyfeast.featurestore.repo import _registry_server, online_store_label
from skyfeast.featurestore.writers.base import StoreUnreachableError
from tests.conftest import REDIS_URL, _host_port, need_service
from tests.silent import forwarding_proxy, login_then_silent_server, refusing_port, silent_server


@pytest.fixture
def silent_port():
    with silent_server() as port:
        yield port


def _redis_client(connection_string: str):
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    cfg = RedisOnlineStoreConfig(connection_string=connection_string)
    return RedisOnlineStore()._get_client(cfg), online_store_label(cfg)


def test_redis_first_contact_with_a_silent_server_gives_up_within_its_limit(silent_port):
    from skyfeast.featurestore.writers.redis import first_contact

    client, label = _redis_client(f"127.0.0.1:{silent_port},password=s3cret")
    assert label == f"redis at 127.0.0.1:{silent_port}"
    t0 = time.monotonic()
    with pytest.raises(StoreUnreachableError) as ei:
        first_contact(client, label, "return 1", limit=1.5)
    seconds = time.monotonic() - t0
    assert 1.4 < seconds < 4, seconds  # redis-py's own retries would take about a minute
    msg = str(ei.value)
    # the read's own timeout or the timer's cut at the same deadline, whichever comes first
    assert msg.startswith(f"the online store (redis at 127.0.0.1:{silent_port}) did not answer within 1.5 s "
                          f"(1 try): "), msg
    assert msg.endswith(("no answer", f"Timeout reading from 127.0.0.1:{silent_port}")), msg
    assert "s3cret" not in msg
    assert classify(ei.value) is FailureClass.INFRASTRUCTURE


def _slow_then_silent(conn: socket.socket, stop: threading.Event) -> None:
    """A Redis server that answers every handshake command after 1.2 s (HELLO with an error, as servers
    before Redis 6 do) and never answers SCRIPT LOAD."""
    import re

    with contextlib.suppress(OSError):
        while not stop.is_set() and (data := conn.recv(65536)):
            if b"SCRIPT" in data.upper():
                continue  # read, never answered
            stop.wait(1.2)
            reply = b"-ERR unknown command\r\n" if b"HELLO" in data.upper() else b"+OK\r\n"  # an old server: RESP2
            conn.sendall(reply * len(re.findall(rb"(?:^|\r\n)\*\d+\r\n", data)))


def test_redis_first_contact_bounds_the_handshake_too():
    """Each handshake command (CLIENT SETINFO, SELECT) answered just inside the read timeout must not add
    up past the limit: the timer closes the probe connection at the deadline."""
    from skyfeast.featurestore.writers.redis import first_contact

    with silent_server(_slow_then_silent) as port:
        client, label = _redis_client(f"127.0.0.1:{port},db=3")
        t0 = time.monotonic()
        with pytest.raises(StoreUnreachableError, match=r"did not answer within 1\.5 s \(1 try\)"):
            first_contact(client, label, "return 1", limit=1.5)
        seconds = time.monotonic() - t0
    assert seconds < 2.5, seconds  # 5.1 s before the timer: 1.2 s per handshake command, then the read


@contextlib.contextmanager
def test_redis_first_contact_tries_again_while_the_server_refuses():
    """A server restarting (refusing for a moment) is tried again within the limit, not given up at once."""
    from skyfeast.featurestore.writers.redis import first_contact

    upstream = _host_port(REDIS_URL, 6379)
    need_service("Redis", *upstream)
    with forwarding_proxy(upstream, refuse_for=1.0) as (port, _):
        client, label = _redis_client(f"127.0.0.1:{port}")
        t0 = time.monotonic()
        sha = first_contact(client, label, "return 1", limit=8)
        assert time.monotonic() - t0 >= 0.9
    assert sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # SHA-1 of the script, as Redis answers it


def test_redis_credentials_the_store_refuses_are_a_config_error_at_once():
    """Every provider's workers would meet the same refusal: named, not retried, not failed over."""
    from skyfeast.featurestore.writers.base import StoreRefusedError
    from skyfeast.featurestore.writers.redis import first_contact

    host, port = _host_port(REDIS_URL, 6379)
    need_service("Redis", host, port)
    client, label = _redis_client(f"{host}:{port},username=nobody,password=s3cret")
    t0 = time.monotonic()
    with pytest.raises(StoreRefusedError) as ei:
        first_contact(client, label, "return 1", limit=5)
    assert time.monotonic() - t0 < 1
    assert str(ei.value).startswith(f"the online store (redis at {host}:{port}) refused the writer's credentials: ")
    assert "s3cret" not in str(ei.value) and classify(ei.value) is FailureClass.CONFIG


def test_redis_first_contact_with_nothing_listening_says_how_often_it_tried():
    from skyfeast.featurestore.writers.redis import first_contact

    client, label = _redis_client(f"127.0.0.1:{refusing_port()}")
    with pytest.raises(StoreUnreachableError, match=r"did not answer within 1\.5 s \([2-9] tries\): .*refused"):
        first_contact(client, label, "return 1", limit=1.5)


def test_postgres_connect_to_a_silent_server_gives_up_within_its_limit(silent_port):
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStoreConfig

    from skyfeast.featurestore.writers.postgres import connect

    cfg = PostgreSQLOnlineStoreConfig(host="127.0.0.1", port=silent_port, database="feast", user="u",
                                      password="s3cret")
    label = online_store_label(cfg)
    assert label == f"postgres at 127.0.0.1:{silent_port}/feast"
    t0 = time.monotonic()
    with pytest.raises(StoreUnreachableError) as ei:
        connect(cfg, label, limit=2)
    seconds = time.monotonic() - t0
    assert 1.9 < seconds < 5, seconds  # psycopg's default connect timeout is 130 s
    assert f"the online store ({label}) did not answer within 2 s" in str(ei.value)
    assert "s3cret" not in str(ei.value)


def test_the_online_store_label_names_each_store_without_credentials():
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    assert online_store_label(SqliteOnlineStoreConfig(path="data/online.db")) == "sqlite at data/online.db"
    redis = _redis_client("r1:6379,r2:6380,ssl=true,password=s3cret")[1]
    assert redis == "redis at r1:6379,r2:6380"


def test_postgres_connect_tries_again_while_refused_and_says_so():
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from feast.infra.online_stores.postgres_online_store.postgres import PostgreSQLOnlineStoreConfig

    from skyfeast.featurestore.writers.postgres import connect

    cfg = PostgreSQLOnlineStoreConfig(host="127.0.0.1", port=refusing_port(), database="feast", user="u",
                                      password="s3cret")
    t0 = time.monotonic()
    with pytest.raises(StoreUnreachableError) as ei:
        connect(cfg, online_store_label(cfg), limit=1.5)
    assert 1.4 < time.monotonic() - t0 < 4
    msg = str(ei.value)
    assert re.fullmatch(r"the online store \(postgres at 127\.0\.0\.1:\d+/feast\) did not answer within 1\.5 s "
                        r"\([2-9] tries\): connection failed: .*Connection refused", msg), msg
    assert "s3cret" not in msg


def _target(online_store: dict):
    """A real one-feature view's WriteTarget on ``online_store`` (nothing applied: the writer gets no further)."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.repo_config import RepoConfig
    from feast.types import Float32, Int64

    from skyfeast.featurestore.repo import WriteTarget

    view = FeatureView(name="v", entities=[Entity(name="user", join_keys=["user_id"])],
                       schema=[Field(name="user_id", dtype=Int64), Field(name="x", dtype=Float32)],
                       source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"))
    cfg = RepoConfig(project="p", registry="registry.db", provider="local", online_store=online_store,
                     entity_key_serialization_version=3)
    return WriteTarget(repo_config=cfg, view_proto=view.to_proto().SerializeToString(), join_keys=("user_id",),
                       features=("x",), timestamp_field="event_timestamp")


def test_postgres_writer_against_a_server_that_logs_in_and_never_answers_gives_up_within_its_limit():
    """libpq's connect timeout ends with the login; the writer's first statements get the rest of the limit."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from skyfeast.featurestore.writers.postgres import PostgresWriter

    with login_then_silent_server() as port:
        target = _target({"type": "postgres", "host": "127.0.0.1", "port": port, "database": "feast",
                          "user": "u", "password": "s3cret", "sslmode": "disable"})
        writer = PostgresWriter(target)
        writer.first_contact_s = 2.5
        t0 = time.monotonic()
        with pytest.raises(StoreUnreachableError) as ei:
            writer._connect()
        seconds = time.monotonic() - t0
    assert 2.4 < seconds < 5, seconds  # without the socket's shutdown: for ever
    assert str(ei.value) == (f"the online store (postgres at 127.0.0.1:{port}/feast) accepted the connection but "
                             "did not answer within 2.5 s")


def test_a_sql_registry_gets_a_connect_timeout_unless_its_config_sets_one(monkeypatch):
    from feast.infra.registry.sql import SqlRegistryConfig

    from skyfeast.featurestore.registry_deadline import PLUGIN, REGISTRY_USE_S
    from skyfeast.featurestore.repo import REGISTRY_CONNECT_S

    limit = REGISTRY_CONNECT_S + REGISTRY_USE_S  # to connect, then for the first read
    plain = SqlRegistryConfig(path="postgresql+psycopg://feast:s3cret@db:5432/registry")
    assert _registry_server(plain) == ("postgresql+psycopg://feast:***@db:5432/registry", limit)
    assert plain.sqlalchemy_config_kwargs["connect_args"] == {"connect_timeout": REGISTRY_CONNECT_S}
    assert plain.sqlalchemy_config_kwargs["plugins"] == [PLUGIN]  # each use of a connection bounded too
    assert plain.sqlalchemy_config_kwargs["skyfeast_registry"] == "postgresql+psycopg://feast:***@db:5432/registry"
    assert plain.sqlalchemy_config_kwargs["echo"] is False  # Feast's own default kept
    own_args = SqlRegistryConfig(path="postgresql+psycopg://db/registry",
                                 sqlalchemy_config_kwargs={"connect_args": {"connect_timeout": 3}})
    own_url = SqlRegistryConfig(path="postgresql+psycopg://db/registry?connect_timeout=4")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")
    own_env = SqlRegistryConfig(path="postgresql+psycopg://db/registry")
    for own, timeout in ((own_args, 3), (own_url, None), (own_env, None)):
        assert _registry_server(own)[1] is None  # the connect's limit is the user's: none announced
        assert own.sqlalchemy_config_kwargs.get("connect_args", {}).get("connect_timeout", None) == timeout
        assert own.sqlalchemy_config_kwargs["plugins"] == [PLUGIN]
    assert _registry_server(SqlRegistryConfig(path="sqlite:///registry.db")) == (None, None)  # a local file
    pg8000 = SqlRegistryConfig(path="postgresql+pg8000://db/registry?sslpassword=s3cret&password=s3cret")
    assert _registry_server(pg8000) == ("postgresql+pg8000://db/registry?password=***&sslpassword=***",  # sorted
                                        limit)
    assert pg8000.sqlalchemy_config_kwargs["connect_args"] == {"timeout": REGISTRY_CONNECT_S}  # its own keyword
    mysql = SqlRegistryConfig(path="mysql+pymysql://u:s3cret@db/registry")
    assert _registry_server(mysql) == ("mysql+pymysql://u:***@db/registry", limit)
    assert mysql.sqlalchemy_config_kwargs["connect_args"] == {"connect_timeout": REGISTRY_CONNECT_S}


def test_registries_on_other_servers_are_named_and_local_files_are_not():
    from feast.repo_config import RegistryConfig

    from skyfeast.adapters.storage import feast_registry

    s3 = RegistryConfig(path="s3://bucket/registry.pb")
    assert _registry_server(s3) == ("s3://bucket/registry.pb", feast_registry.deadline())  # 81 s
    assert s3.registry_store_type == "skyfeast.adapters.storage.feast_registry.BoundedS3RegistryStore"
    own = RegistryConfig(path="s3://bucket/registry.pb", registry_store_type="my.own.S3RegistryStore")
    assert _registry_server(own) == ("s3://bucket/registry.pb", None) and own.registry_store_type == "my.own.S3RegistryStore"
    gs = RegistryConfig(path="gs://bucket/registry.pb")
    assert _registry_server(gs) == ("gs://bucket/registry.pb", feast_registry.deadline("gs"))  # 135 s
    assert gs.registry_store_type == "skyfeast.adapters.storage.feast_registry.BoundedGCSRegistryStore"
    assert _registry_server(RegistryConfig(path="data/registry.db")) == (None, None)
    assert _registry_server(RegistryConfig(registry_type="remote", path="feast-registry:6570")) == \
        ("feast-registry:6570 (remote)", None)


def test_a_sql_registry_url_that_cannot_be_parsed_is_a_repo_error(tmp_path):
    import yaml

    from skyfeast.featurestore.repo import FeastRepoError, load_store

    (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "p", "provider": "local", "entity_key_serialization_version": 3,
        "registry": {"registry_type": "sql", "path": "not a url"}, "online_store": {"type": "sqlite"}}))
    with pytest.raises(FeastRepoError, match="cannot load Feast repo .*ArgumentError: Could not parse"):
        load_store(tmp_path)


def test_a_sql_registry_that_stops_answering_fails_the_operation_within_its_deadline(tmp_path, pg_url, monkeypatch):
    """Feast's SQL registry on PostgreSQL, through a proxy that stops forwarding after the repo has
    loaded: recording an interval (the daemon's registry phase) would wait for good on libpq's reads.
    Each use of a registry connection has a deadline (the engine plugin); past it the operation fails
    naming the registry, and the registry works again once its server answers."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from datetime import datetime, timezone

    import yaml
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float32, Int64
    from sqlalchemy.engine import make_url

    from skyfeast.featurestore import registry_deadline
    from skyfeast.featurestore.registry_deadline import RegistryDeadlineError
    from skyfeast.featurestore.repo import FeastRepo, load_store

    with forwarding_proxy(_host_port(pg_url, 5432)) as (port, frozen):
        url = pg_url.replace(":5432/", f":{port}/")
        (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": "p", "provider": "local", "entity_key_serialization_version": 3,
            "registry": {"registry_type": "sql", "path": url, "cache_ttl_seconds": 0},
            "online_store": {"type": "sqlite", "path": "online.db"}}))
        user = Entity(name="user", join_keys=["user_id"])
        load_store(tmp_path).apply([user, FeatureView(
            name="v", entities=[user], schema=[Field(name="user_id", dtype=Int64), Field(name="x", dtype=Float32)],
            source=FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp"))])
        repo = FeastRepo(tmp_path)
        start, end = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
        monkeypatch.setattr(registry_deadline, "REGISTRY_USE_S", 1.5)
        frozen.set()
        t0 = time.monotonic()
        with pytest.raises(RegistryDeadlineError) as ei:
            repo.record_materialization("v", start, end)
        took = time.monotonic() - t0
        assert 1.4 < took < 5, took  # without the plugin: for ever
        shown = make_url(url).render_as_string(hide_password=True)  # no password here; the query as rendered
        assert str(ei.value) == (f"the Feast registry at {shown} stopped answering: an operation took more than 1.5 s")
        frozen.clear()
        repo.record_materialization("v", start, end)
        # moments after the cut, an error that is not a disconnect stays what it is
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import text

        with pytest.raises(sa_exc.ProgrammingError), repo.store.registry.write_engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        intervals = load_store(tmp_path).get_feature_view("v").materialization_intervals
    assert [(s.replace(tzinfo=timezone.utc), e.replace(tzinfo=timezone.utc)) for s, e in intervals] == [(start, end)]


def _s3_registry_repo(path, monkeypatch, endpoint: str, bucket: str):
    import yaml

    from tests.emulators import S3_KEYS

    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEYS["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEYS["secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_KEYS["region"])
    (path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "p", "provider": "local", "entity_key_serialization_version": 3,
        "registry": {"path": f"s3://{bucket}/registry.pb", "cache_ttl_seconds": 60},
        "online_store": {"type": "sqlite", "path": "online.db"}}))
    return path


def test_an_s3_registry_file_is_read_by_feasts_store_with_our_timeouts(tmp_path, monkeypatch, moto_server):
    """Feast's own S3 registry store reads and writes the file (moto's S3 server here); only its client's
    timeouts are ours, so a vanilla FeatureStore on the same repo reads what we read."""
    pytest.importorskip("boto3", reason="the s3 extra is not installed")
    from feast import Entity, FeatureStore

    from skyfeast.adapters.storage import feast_registry
    from skyfeast.featurestore.repo import load_store
    from tests.emulators import make_s3_bucket

    repo = _s3_registry_repo(tmp_path, monkeypatch, moto_server.endpoint, make_s3_bucket(moto_server.endpoint))
    FeatureStore(repo_path=str(repo)).apply([Entity(name="user", join_keys=["user_id"])])  # vanilla Feast writes it
    store = load_store(repo)
    client = store.registry._registry_store.s3_client.meta.client
    assert type(store.registry._registry_store).__name__ == "BoundedS3RegistryStore"
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (feast_registry.CONNECT_S,
                                                                                      feast_registry.READ_S)
    assert [e.name for e in store.list_entities()] == ["user"]


def test_a_sql_registry_that_logs_in_and_never_answers_fails_the_load_within_its_deadline(tmp_path, monkeypatch):
    """An engine's first connection runs the dialect's own statements before any checkout: they are
    bounded too, so a registry server that completes the login and then stays silent ends the
    repo's load, naming the registry without its password."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import yaml

    from skyfeast.featurestore import registry_deadline
    from skyfeast.featurestore.repo import FeastRepoError, load_store

    monkeypatch.setattr(registry_deadline, "REGISTRY_USE_S", 1.5)
    with login_then_silent_server() as port:
        (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": "p", "provider": "local", "entity_key_serialization_version": 3,
            "registry": {"registry_type": "sql", "path": f"postgresql+psycopg://u:s3cret@127.0.0.1:{port}/feast"},
            "online_store": {"type": "sqlite", "path": "online.db"}}))
        t0 = time.monotonic()
        with pytest.raises(FeastRepoError) as ei:
            load_store(tmp_path)
        took = time.monotonic() - t0
    assert 1.4 < took < 6, took  # without the bound on a new connection: for ever
    assert str(ei.value) == (f"the Feast registry at postgresql+psycopg://u:***@127.0.0.1:{port}/feast stopped "
                             "answering: an operation took more than 1.5 s")


def test_a_postgres_cut_that_comes_as_the_block_ends_closes_the_connection():
    """The timer may shut the socket down just as a chunk's COMMIT was answered: the chunk is then
    reported failed (writing it again is harmless: newest wins), and the connection is closed, so
    the writer's next chunk connects again instead of meeting a dead socket."""
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from skyfeast.featurestore.writers.postgres import answering

    need_service("PostgreSQL", "127.0.0.1", 5432)
    conn = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    try:
        with pytest.raises(StoreUnreachableError, match="^cut$"):
            with answering(conn, 0.05, message="cut"):
                conn.execute("SELECT 1")
                time.sleep(0.5)  # the block ends without an error, after the cut
        assert conn.closed
    finally:
        conn.close()


def test_a_registry_pre_ping_is_bounded_too(pg_url, monkeypatch):
    """With ``pool_pre_ping`` (a user's engine kwarg), SQLAlchemy pings a pooled connection before the
    checkout event: the ping is armed as well, so a server gone silent fails the checkout in seconds."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from sqlalchemy import create_engine, text
    from sqlalchemy import exc as sa_exc

    from skyfeast.featurestore import registry_deadline

    registry_deadline.register()
    monkeypatch.setattr(registry_deadline, "REGISTRY_USE_S", 1.0)
    with forwarding_proxy(_host_port(pg_url, 5432)) as (port, frozen):
        engine = create_engine(pg_url.replace(":5432/", f":{port}/"), pool_pre_ping=True,
                               connect_args={"connect_timeout": 2}, plugins=[registry_deadline.PLUGIN],
                               skyfeast_registry="the registry")
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
            frozen.set()
            t0 = time.monotonic()
            with pytest.raises(sa_exc.SQLAlchemyError):  # the ping cut, then a new connection's timeout
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            took = time.monotonic() - t0
        finally:
            frozen.clear()
            engine.dispose()
    assert took < 8, took  # without the armed ping: for ever


def _gcs_registry_repo(path, monkeypatch, endpoint: str, bucket: str):
    import yaml

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "skyfeast-test")
    (path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "p", "provider": "local", "entity_key_serialization_version": 3,
        "registry": {"path": f"gs://{bucket}/registry.pb", "cache_ttl_seconds": 60},
        "online_store": {"type": "sqlite", "path": "online.db"}}))
    return path


def test_a_gcs_registry_file_is_read_and_written_by_feasts_store_with_our_timeouts(tmp_path, monkeypatch,
                                                                                  gcs_emulator):
    pytest.importorskip("google.cloud.storage", reason="the gcs extra is not installed")
    from feast import Entity, FeatureStore

    from skyfeast.featurestore.repo import load_store
    from tests.emulators import make_gcs_bucket

    repo = _gcs_registry_repo(tmp_path, monkeypatch, gcs_emulator.endpoint, make_gcs_bucket(gcs_emulator.endpoint))
    FeatureStore(repo_path=str(repo)).apply([Entity(name="user", join_keys=["user_id"])])  # vanilla Feast writes it
    store = load_store(repo)
    assert type(store.registry._registry_store).__name__ == "BoundedGCSRegistryStore"
    assert [e.name for e in store.list_entities()] == ["user"]
    store.apply([Entity(name="device", join_keys=["device_id"])])  # our store writes; vanilla Feast reads it
    assert sorted(e.name for e in FeatureStore(repo_path=str(repo)).list_entities()) == ["device", "user"]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_registry_file_endpoint_that_never_answers_fails_the_load_within_our_deadline(tmp_path, monkeypatch, scheme):
    """boto3's defaults (a 60 s connect and read, retried) and google-cloud-storage's (a 120 s retry
    budget for each of three calls) held a load for minutes; ours end it, as an outage (exit 1)."""
    pytest.importorskip("boto3" if scheme == "s3" else "google.cloud.storage", reason="the cloud extra is not installed")
    from skyfeast.adapters.storage import feast_registry
    from skyfeast.featurestore.repo import FeastRegistryUnreachable, load_store

    for name in ("CONNECT_S", "READ_S", "GCS_RETRY_S"):
        monkeypatch.setattr(feast_registry, name, 1.0)
    monkeypatch.setattr(feast_registry, "ATTEMPTS", 1)
    make = _s3_registry_repo if scheme == "s3" else _gcs_registry_repo
    with silent_server() as port:
        repo = make(tmp_path, monkeypatch, f"http://127.0.0.1:{port}", "bucket")
        t0 = time.monotonic()
        with pytest.raises(FeastRegistryUnreachable, match=f"cannot reach the Feast registry at {scheme}://bucket/"):
            load_store(repo)
        took = time.monotonic() - t0
    assert took < 10, took  # without our timeouts: minutes


def test_a_registry_server_that_refuses_is_bad_config_and_one_that_is_not_there_is_an_outage(tmp_path):
    """A server that answers and refuses (no such database) is the config's fault: FeastRepoError (exit 2).
    A port nothing listens on is an outage: FeastRegistryUnreachable (exit 1, a daemon is restarted)."""
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import yaml

    from skyfeast.featurestore.repo import FeastRegistryUnreachable, FeastRepoError, load_store
    from tests.conftest import PG_URL

    host, port = _host_port(PG_URL, 5432)
    need_service("PostgreSQL", host, port)

    def load(url: str):
        (tmp_path / "feature_store.yaml").write_text(yaml.safe_dump({
            "project": "p", "provider": "local", "entity_key_serialization_version": 3,
            "registry": {"registry_type": "sql", "path": url}, "online_store": {"type": "sqlite"}}))
        return load_store(tmp_path)

    with pytest.raises(FeastRepoError, match="skyfeast_no_such_database") as ei:
        load(f"postgresql+psycopg://postgres@{host}:{port}/skyfeast_no_such_database")
    assert not isinstance(ei.value, FeastRegistryUnreachable)
    with pytest.raises(FeastRegistryUnreachable, match="cannot reach the Feast registry"):
        load(f"postgresql+psycopg://postgres@127.0.0.1:{refusing_port()}/registry")
