"""The daemon's HTTP surface without a daemon: metric names, per-daemon registries, the HA rule,
and /healthz, /readyz, /metrics served by the real uvicorn thread over stand-in state."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skyfeast.scheduler.app.http import HttpServer, bind, build_app
from skyfeast.scheduler.app.metrics import LEDGER_OPS, SPECS, Metrics
from skyfeast.scheduler.control.liveness import Liveness, staleness_bounds
from skyfeast.scheduler.control.policy import Breaker, ProviderState
from skyfeast.scheduler.errors import UsageError

FORBIDDEN_LABELS = {"run", "run_id", "window", "window_start", "window_end", "attempt", "attempt_id"}


def _job(name="user_features", kind="feature", view="user_features"):
    return SimpleNamespace(name=name, kind=kind, feature_view=view)


def _outcome(status, **kw):
    return SimpleNamespace(status=status, attempts=kw.get("attempts", 1), seconds=kw.get("seconds", 3.0),
                           partitions=kw.get("partitions", 4), rows_online=kw.get("rows_online", 100))


class _Pool:
    def __init__(self, states):
        self.cfg = SimpleNamespace(providers={k: None for k in states})
        self.states = states

    def breaker(self, name):
        return Breaker(self.states[name])


class _Repo:
    project = "quickstart"

    def freshness(self):
        return [{"feature_view": "user_features", "age_seconds": 42.0}, {"feature_view": "never", "age_seconds": None}]


def _exercised() -> Metrics:
    m = Metrics()
    m.attempt_ended("user_features", "aws", "failed", "infrastructure")
    m.failed_over("user_features", "aws", "gcp", "infrastructure")
    m.attempt_ended("user_features", "gcp", "succeeded", None)
    m.run_ended(_job(), _outcome("succeeded"))
    m.run_ended(_job("risk_score", "model", "user_risk"), _outcome("failed"))
    m.probed("aws", 0.02)
    m._timed(lambda: None, "claim")()
    m.attach(daemon=SimpleNamespace(is_leader=True, lease_renewed_at=time.monotonic()),
             pool=_Pool({"aws": ProviderState.DOWN, "gcp": ProviderState.HEALTHY}), repo=_Repo())
    return m


def _families(m: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def test_every_metric_is_named_by_the_rules():
    names = {s.name for s in SPECS}
    for spec in SPECS:
        assert spec.name.startswith(("skyfeast_", "feast_")), spec.name
        assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name
        assert not FORBIDDEN_LABELS & set(spec.labels), spec
        if spec.kind == "histogram" or "duration" in spec.name or "age" in spec.name:
            assert spec.name.endswith("_seconds"), spec.name
    families = _families(_exercised())
    # what is scraped is what is declared: every family, every label within its spec
    assert {f.name + ("_total" if f.type == "counter" else "") for f in families.values()} == names
    for fam in families.values():
        for sample in fam.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), sample
            if fam.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample


def test_values_reach_the_exposition():
    fams = _families(_exercised())

    def value(name, **labels):
        return next(s.value for f in fams.values() for s in f.samples if s.name == name and s.labels == labels)

    assert value("skyfeast_failovers_total", from_provider="aws", to_provider="gcp", cause="infrastructure") == 1
    assert value("skyfeast_attempts_total", provider="aws", outcome="failed") == 1
    assert value("skyfeast_runs_total", skyfeast_job="risk_score", status="failed") == 1
    assert value("skyfeast_chunks_written_total", feature_view="user_features") == 4
    assert value("skyfeast_online_rows_written_total", feature_view="user_features") == 100
    assert value("feast_materialization_result_total", feature_view="user_risk", status="failure") == 1
    assert value("feast_materialization_duration_seconds_count", feature_view="user_features") == 1
    assert value("feast_materialization_duration_seconds_bucket", feature_view="user_features", le="5.0") == 1
    assert value("feast_materialization_duration_seconds_bucket", feature_view="user_features", le="1.0") == 0
    assert value("feast_feature_freshness_seconds", feature_view="user_features", project="quickstart") == 42
    assert value("skyfeast_provider_state", provider="aws", state="down") == 1
    assert value("skyfeast_provider_state", provider="aws", state="healthy") == 0
    assert value("skyfeast_provider_state", provider="gcp", state="healthy") == 1
    assert value("skyfeast_leader") == 1
    assert value("skyfeast_ledger_query_duration_seconds_count", op="claim") == 1
    assert value("skyfeast_probe_duration_seconds_count", provider="aws") == 1


def test_two_daemons_in_one_process_keep_their_own_counts():
    import feast  # noqa: F401  (sets PROMETHEUS_MULTIPROC_DIR: shared mmap values for prometheus_client metrics)

    a, b = Metrics(), Metrics()
    a.failed_over("j", "aws", "gcp", "timeout")
    assert b"skyfeast_failovers_total{" in a.render()
    assert b"skyfeast_failovers_total{" not in b.render()


def test_a_standby_reports_health_and_leadership_but_no_dispatch_metrics():
    m = _exercised()
    m.attach(daemon=SimpleNamespace(is_leader=False, lease_renewed_at=None), pool=_Pool({"aws": ProviderState.HEALTHY}),
             repo=_Repo())
    fams = _families(m)
    dispatch = {s.name.removesuffix("_total") for s in SPECS if s.dispatch}
    assert not set(fams) & dispatch
    assert {"skyfeast_leader", "skyfeast_provider_state", "skyfeast_probe_duration_seconds",
            "skyfeast_ledger_query_duration_seconds"} <= set(fams)
    assert fams["skyfeast_leader"].samples[0].value == 0
    assert not fams["skyfeast_leader_lease_age_seconds"].samples  # a standby holds no lease


def test_time_ledger_times_the_named_statements_and_keeps_their_result():
    class Ledger:
        def claim_many(self, items, **kw):
            return ["claimed", items]

        def heartbeat(self, ids, lease):
            raise RuntimeError("down")

    m, led = Metrics(), Ledger()
    m.time_ledger(led)
    assert led.claim_many([1], trigger="x") == ["claimed", [1]]
    with pytest.raises(RuntimeError):
        led.heartbeat([1], None)
    series = m.snapshot()["skyfeast_ledger_query_duration_seconds"]
    assert set(series) == {("claim",), ("heartbeat",)} and set(LEDGER_OPS.values()) >= {"claim", "heartbeat"}


def test_freshness_slo_and_thread_health_gauges():
    from datetime import timedelta

    liveness, stop = Liveness(), threading.Event()
    m = Metrics()
    m.attach(daemon=SimpleNamespace(is_leader=True, lease_renewed_at=time.monotonic(), stop=stop), repo=_Repo(),
             liveness=liveness, bounds={"dispatch": 0.2, "health": 30.0},
             freshness_slo={"user_features": timedelta(hours=2)})
    liveness.beat("dispatch")
    liveness.beat("health")
    liveness.died("heartbeat", RuntimeError("boom"))
    series = m.snapshot()
    assert series["skyfeast_feature_freshness_slo_seconds"] == {("user_features", "quickstart"): 7200.0}
    assert series["skyfeast_thread_healthy"] == {("dispatch",): 1.0, ("health",): 1.0, ("heartbeat",): 0.0}
    time.sleep(0.3)  # past dispatch's bound: stalled, as /healthz says
    assert m.snapshot()["skyfeast_thread_healthy"][("dispatch",)] == 0.0
    stop.set()  # draining after SIGTERM: dispatch waits for running work instead of beating
    assert m.snapshot()["skyfeast_thread_healthy"][("dispatch",)] == 1.0
    m.attach(daemon=SimpleNamespace(is_leader=False, lease_renewed_at=None, stop=stop), repo=_Repo(),
             liveness=liveness, freshness_slo={"user_features": timedelta(hours=2)})
    assert "skyfeast_feature_freshness_slo_seconds" not in m.snapshot()  # a standby: beside the freshness it hides
    assert "skyfeast_thread_healthy" in m.snapshot()


# --------------------------------------------------------------------------- the server
class _Ledger:
    def __init__(self):
        self.hang = threading.Event()
        self.release = threading.Event()

    def schema_version(self):
        if self.hang.is_set():
            self.release.wait(10)
        return 7


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served(request):
    """The daemon's health and metrics app over stand-ins; ``@pytest.mark.parametrize("served", [S],
    indirect=True)`` gives it a request deadline of S seconds, ``[(S, N)]`` also a limit of N connections."""
    liveness, ledger, metrics = Liveness(), _Ledger(), _exercised()
    daemon = SimpleNamespace(is_leader=True, identity="host:1:abc", stop=threading.Event())
    param = getattr(request, "param", None)
    deadline, cap = param if isinstance(param, tuple) else (param, None)
    server = HttpServer(bind("127.0.0.1:0"), request_deadline=deadline, max_connections=cap)
    app = build_app(daemon=daemon, liveness=liveness, ledger=ledger, metrics=metrics,
                    bounds={"dispatch": 0.5, "health": 30.0})
    server.start(app)
    base = "http://%s:%d" % server.address
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(server.address, timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        yield SimpleNamespace(base=base, liveness=liveness, ledger=ledger, daemon=daemon, address=server.address,
                              app=app)
    finally:
        ledger.release.set()
        server.close()


def test_healthz_names_a_dead_or_stalled_thread(served):
    served.liveness.beat("dispatch")
    served.liveness.beat("health")
    code, body = _get(served.base + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    time.sleep(0.7)  # dispatch's bound here is 0.5 s
    code, body = _get(served.base + "/healthz")
    assert code == 503 and list(json.loads(body)["stalled"]) == ["dispatch"]
    served.liveness.beat("dispatch")
    served.liveness.died("health", RuntimeError("boom"))
    code, body = _get(served.base + "/healthz")
    assert code == 503 and json.loads(body)["dead"] == {"health": "RuntimeError: boom"}


def test_readyz_says_role_and_fails_fast_on_a_hung_ledger(served):
    code, body = _get(served.base + "/readyz")
    assert code == 200 and json.loads(body) == {"ready": True, "role": "leader", "identity": "host:1:abc",
                                                  "ledger": "ok"}
    served.daemon.is_leader = False
    served.ledger.hang.set()
    t0 = time.monotonic()
    code, body = _get(served.base + "/readyz")
    assert code == 503 and json.loads(body)["role"] == "standby" and time.monotonic() - t0 < 3
    code, body = _get(served.base + "/readyz")  # the hung query is not stacked up
    assert code == 503 and "still waiting" in json.loads(body)["error"]


def _until_closed(sock: socket.socket, limit: float = 8.0) -> tuple[bytes, float]:
    """Everything the server sends on ``sock`` until it closes it, and the seconds that took."""
    t0, got = time.monotonic(), b""
    sock.settimeout(limit)
    while True:
        try:
            part = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            break
        if not part:
            break
        got += part
    return got, time.monotonic() - t0


@pytest.mark.parametrize("served", [1.5], indirect=True)
def test_a_client_that_sends_no_whole_request_is_answered_408_and_closed(served):
    """uvicorn has no deadline of its own for a request's head: a connection that sent nothing, or half a
    head, was held for good. Each is answered 408 and closed once the request deadline (1.5 s here) has
    passed, within the once-a-second check; the server goes on answering meanwhile."""
    silent = socket.create_connection(served.address, timeout=5)
    half = socket.create_connection(served.address, timeout=5)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
    t0 = time.monotonic()
    code, _ = _get(served.base + "/healthz")
    assert code == 200
    try:
        for sock in (silent, half):
            got, _ = _until_closed(sock)
            took = time.monotonic() - t0
            assert got.startswith(b"HTTP/1.1 408 "), got
            assert got.endswith(b'\r\n\r\n{"error": "the request did not arrive within 1.5 s"}'), got
            assert 1.4 <= took <= 3.2, took  # checked once a second: cut at about 2 s
    finally:
        silent.close()
        half.close()


@pytest.mark.parametrize("served", [(None, 4)], indirect=True)
def test_connections_beyond_the_limit_are_closed_at_once_and_served_again_once_some_go(served, caplog):
    """Idle connections (each one a file descriptor until its request deadline) are capped: one more than
    the limit (4 here) is closed as soon as it is accepted, unread, with one warning; once a held one
    goes, the server answers again."""
    held = [socket.create_connection(served.address, timeout=5) for _ in range(4)]
    try:
        time.sleep(0.3)  # all four accepted
        with caplog.at_level("WARNING", logger="skyfeast.http"):
            for _ in range(2):
                with socket.create_connection(served.address, timeout=5) as extra:
                    got, took = _until_closed(extra)
                    assert got == b"" and took < 1.5, (got, took)
        warnings = [r.getMessage() for r in caplog.records if r.name == "skyfeast.http"]
        assert len(warnings) == 1 and warnings[0].startswith("closing new connections: 4 are open, the limit"), \
            warnings
        held.pop().close()
        time.sleep(0.3)  # the server has seen it go
        code, _ = _get(served.base + "/healthz")
        assert code in (200, 503)  # answered (503: the stand-in daemon's threads have not beaten)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("served", [1.5], indirect=True)
def test_the_request_deadline_starts_again_after_each_response(served):
    """A keep-alive client that sends its next request 1 s after each response (within the 1.5 s
    deadline, although 3 s after it connected) is answered every time."""
    with socket.create_connection(served.address, timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"}"):
                got += sock.recv(4096)
            assert got.startswith(b"HTTP/1.1 200 "), got
            time.sleep(1.0)


@pytest.mark.parametrize("served", [1.5], indirect=True)
def test_a_client_that_stops_reading_its_response_is_cut_off(served):
    """A client that asks for a large response and reads none of it: once the server's write buffer has
    stayed full for the deadline (1.5 s here), the connection is dropped (its handler waited for that
    client for good); the server goes on answering, and nothing is logged as a crash."""
    import logging

    from fastapi.responses import Response

    big = 64 * 2**20
    served.app.add_api_route("/big", lambda: Response(b"x" * big, media_type="application/octet-stream"))

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage() + (" [exc]" if record.exc_info else ""))

    seen = Records()
    loggers = [logging.getLogger(n) for n in ("skyfeast.http", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(seen)
        lg.setLevel(logging.INFO)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect(served.address)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while not any("stopped reading its response" in line for line in seen.lines):
            assert time.monotonic() < deadline, seen.lines
            time.sleep(0.1)
        got, _ = _until_closed(sock, limit=10)  # what was in flight, then the end: far from all of it
        sock.close()
        assert len(got) < big, len(got)
        code, _ = _get(served.base + "/healthz")
        assert code == 200
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(seen)
            lg.setLevel(level)
    assert not [line for line in seen.lines if "[exc]" in line or "Exception" in line], seen.lines


@pytest.mark.parametrize("served", [1.0], indirect=True)
def test_a_request_whose_handler_outlasts_the_request_deadline_is_answered_in_full(served):
    """The deadline is the client's, for sending its request: a whole request the server takes longer
    than that to answer (a hung ledger's /readyz: 1.5 s) gets its answer, not a 408."""
    served.ledger.hang.set()
    t0 = time.monotonic()
    code, body = _get(served.base + "/readyz")
    assert time.monotonic() - t0 >= 1.4
    assert code == 503 and "ledger" in json.loads(body)


def test_metrics_endpoint_serves_the_exposition(served):
    code, body = _get(served.base + "/metrics")
    assert code == 200 and b'skyfeast_failovers_total{cause="infrastructure",from_provider="aws"' in body
    req = urllib.request.Request(served.base + "/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text") and r.read().endswith(b"# EOF\n")


def test_bind_failures_are_one_line_usage_errors():
    taken = bind("127.0.0.1:0")
    try:
        with pytest.raises(UsageError, match="cannot listen there"):
            bind("127.0.0.1:%d" % taken.getsockname()[1])
    finally:
        taken.close()
    for bad in ("nope", "127.0.0.1:99999", ":80"):
        with pytest.raises(UsageError, match="HOST:PORT"):
            bind(bad)


def test_staleness_bounds_follow_the_config():
    from datetime import timedelta

    cfg = SimpleNamespace(daemon=SimpleNamespace(poll=timedelta(seconds=1), run_lease=timedelta(seconds=30),
                                                 ledger_statement_timeout=timedelta(seconds=30)),
                          health=SimpleNamespace(interval=timedelta(seconds=1), timeout=timedelta(seconds=2)))
    assert staleness_bounds(cfg) == {"dispatch": 33.0, "heartbeat": 60.0, "health": 54.0}


def test_the_fast_exposition_is_byte_for_byte_prometheus_clients():
    """/metrics writes the text format itself (prometheus_client's writer takes ~200 ms for
    10,000 jobs' series); it must equal what prometheus_client would write, escapes included."""
    from types import SimpleNamespace

    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

    m = Metrics()
    for i in range(300):
        job = SimpleNamespace(name='odd "name"\\\n' if i == 0 else f"job{i}", kind=("feature", "model")[i % 2],
                              feature_view=f"view{i % 3}")
        m.run_ended(job, SimpleNamespace(status=("succeeded", "failed", "upstream_failed")[i % 3],
                                         seconds=0.37 * i, rows_online=1_000_000 * i, partitions=2, attempts=1))
    m.probed("aws", 0.02)
    m.probed("gcp", 1e-7)
    m.attempt_ended("job1", "aws", "failed", "infrastructure")
    m.failed_over("job1", "aws", "gcp", "timeout")
    body = m.render()
    assert body == generate_latest(m.registry)
    assert b'skyfeast_job="odd \\"name\\"\\\\\\n"' in body
    assert m.exposition("text/plain") == (body, CONTENT_TYPE_PLAIN_0_0_4)
    assert m.exposition("")[0] == body  # what a plain scrape gets
    used = []
    real = m.render
    m.render = lambda: used.append(1) or real()
    m.exposition("text/plain")
    m.exposition("application/openmetrics-text; version=1.0.0")
    assert used == [1]  # the classic format is written by render(), OpenMetrics by prometheus_client

    assert m.exposition("application/openmetrics-text; version=1.0.0")[0].endswith(b"# EOF\n")
