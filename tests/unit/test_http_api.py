"""The daemon's JSON API (issue 16): /api reads equal the CLI's --json of the same ledger; actions
make the CLI's checks, need the token (or a loopback client without one), and are audited in the
ledger; no secret of the config reaches a response or a log line. The real uvicorn thread serves a
real SQLite ledger; the stand-ins are the daemon and its liveness."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

import skyfeast.scheduler.config as config_pkg
from skyfeast.scheduler.api.auth import Token, decide, is_loopback, load_token
from skyfeast.scheduler.app.metrics import Metrics
from skyfeast.scheduler.app.routes import Api
from skyfeast.scheduler.cli import main
from skyfeast.scheduler.errors import ConfigError, UsageError

UTC = timezone.utc
TOKEN = "tok-Zq8v1Lr6Wm3Xc9Ke"  # also a planted secret: it must never be printed
PG_PASSWORD = "pgPw-K7r2Tq9Vx4"
S3_SECRET = "s3Sk-Hb5Jm8Np1Rz6"
PLANTED = (TOKEN, PG_PASSWORD, S3_SECRET)
CONFIG = """project: p
feast: {repo: repo}
%(state)s
daemon: {%(daemon)s}
providers:
  aws: {priority: 1, cluster: {type: local}, storage: {type: local, root: data}}
  gcp: {priority: 2, cluster: {type: address, address: "tcp://127.0.0.1:9", connect_timeout: 1s}, storage: %(gcp)s}
jobs:
  - name: hourly
    kind: feature
    schedule: {type: cron, expr: "0 * * * *"}
    source: {type: parquet, path: "events/*.parquet", timestamp_field: ts}
    transform: "t:f"
    feature_view: fv
"""
FEATURE_STORE = """project: p
registry: data/registry.db
provider: local
online_store: {type: sqlite, path: data/online.db}
entity_key_serialization_version: 3
"""


def _project(tmp_path, *, state="", daemon="", gcp="{type: local, root: data-gcp}"):
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "feature_store.yaml").write_text(FEATURE_STORE)
    (tmp_path / "model.joblib").write_bytes(b"weights")
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG % {"state": state, "daemon": daemon, "gcp": gcp})
    return path


@pytest.fixture(autouse=True)
def no_feast_checks(monkeypatch):
    """The CLI commands load the config as the daemon does here: no Feast repo or user code checks."""
    real = config_pkg.load_config
    monkeypatch.setattr(config_pkg, "load_config", lambda p, **kw: real(p, check_imports=False, check_feast=False))


class Served:
    """The daemon's HTTP app (``http_app``) over a real ledger, provider pool and Feast repo for the
    config at ``path``. With ``drills``, ``POST /api/drills`` has a real runner to check drills
    against (no test here lets one start: that needs clusters, tests/chaos/test_http_drill.py)."""

    def __init__(self, http_app, path, *, ledger_url=None, environ=None, host="127.0.0.1", drills=False):
        from skyfeast.featurestore.repo import FeastRepo
        from skyfeast.scheduler.app.drills import DrillStarter
        from skyfeast.scheduler.control.providers import ProviderPool
        from skyfeast.scheduler.ledger import Ledger
        from skyfeast.scheduler.run.runner import Runner

        self.path = path
        self.cfg = config_pkg.load_config(path)
        self.ledger = Ledger(ledger_url or self.cfg.state_url)
        self.pool = ProviderPool(self.cfg)
        self.token = load_token(self.cfg.daemon, self.cfg.base_dir, environ or {})
        repo = FeastRepo(self.cfg.feast_repo)
        self.runner = Runner(self.cfg, self.ledger, repo, self.pool) if drills else None
        self.metrics = Metrics()
        self.metrics.time_ledger(self.ledger)
        api = Api(cfg=self.cfg, ledger=self.ledger, pool=self.pool, repo=repo, token=self.token,
                  drills=DrillStarter(self.cfg, self.runner, self.metrics) if drills else None)
        self.api = api
        self.app = http_app(api, host=host, metrics=self.metrics)
        self.server, self.base = self.app.server, self.app.base

    def call(self, method: str, path: str, body=None, *, token: str | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                code, text = r.status, r.read()
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read()
        self.seen.append(text)
        try:
            return code, json.loads(text)
        except ValueError:
            return code, text.decode()

    seen: list[bytes]

    def cli(self, capsys, *argv) -> object:
        code = main([argv[0], "-c", str(self.path), *argv[1:]]) if argv[0] != "models" else \
            main(["models", argv[1], "-c", str(self.path), *argv[2:]])
        got = capsys.readouterr()
        assert code == 0, got.err
        return json.loads(got.out) if "--json" in argv else got.out

    def close(self):
        self.server.close()
        if self.runner is not None:
            self.runner.close()
        self.pool.close()
        self.ledger.close()


@pytest.fixture
def serve(http_app):
    made = []

    def start(path, **kw):
        s = Served(http_app, path, **kw)
        s.seen = []
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


def _closed_window(hours_ago=3):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago - 1)
    return f"{(end - timedelta(hours=1)).isoformat()}/{end.isoformat()}"


# --------------------------------------------------------------------------- reads = the CLI's JSON
def test_reads_answer_what_the_cli_json_answers(tmp_path, serve, capsys):
    s = serve(_project(tmp_path))
    s.cli(capsys, "trigger", "hourly", "--window", _closed_window(), "--json")
    s.cli(capsys, "trigger", "hourly", "--window", _closed_window(5), "--json")
    s.cli(capsys, "cordon", "gcp", "--reason", "maintenance")
    s.cli(capsys, "models", "register", "churn", str(tmp_path / "model.joblib"), "--json")
    s.cli(capsys, "models", "register", "churn", str(tmp_path / "model.joblib"), "--json")
    s.cli(capsys, "models", "promote", "churn", "1", "--json")
    s.cli(capsys, "models", "promote", "churn", "2", "--json")

    assert s.call("GET", "/api/runs") == (200, s.cli(capsys, "runs", "--json"))
    assert s.call("GET", "/api/runs?job=hourly&status=queued&limit=1") == \
        (200, s.cli(capsys, "runs", "--job", "hourly", "--status", "queued", "--limit", "1", "--json"))
    at = "2026-03-02T10:30:00Z"
    assert s.call("GET", f"/api/plan?at={at}&count=2") == (200, s.cli(capsys, "plan", "--at", at, "-n", "2", "--json"))
    assert s.call("GET", "/api/models") == (200, s.cli(capsys, "models", "list", "--json"))
    assert s.call("GET", "/api/models/churn") == (200, s.cli(capsys, "models", "show", "churn", "--json"))
    assert s.call("GET", "/api/models/churn?version=1") == \
        (200, s.cli(capsys, "models", "show", "churn", "--version", "1", "--json"))
    assert s.call("GET", "/api/models/churn/history") == (200, s.cli(capsys, "models", "history", "churn", "--json"))

    code, api = s.call("GET", "/api/status")
    cli = s.cli(capsys, "status", "--json")
    assert code == 200 and set(api) == set(cli)
    for k in ("project", "ledger", "leader", "runs", "feature_views"):
        assert api[k] == cli[k], k
    live = {"storage_ok", "storage_error"}  # the CLI lists storage now; the API does not (no live probing)
    for a, c in zip(api["providers"], cli["providers"], strict=True):
        assert {k: v for k, v in a.items() if k not in live} == {k: v for k, v in c.items() if k not in live}
        assert a["storage_ok"] is None and c["storage_ok"] is True
    assert [p["cordoned"] for p in api["providers"]] == [False, True]


def test_bad_parameters_and_unknown_names(tmp_path, serve):
    s = serve(_project(tmp_path))
    code, body = s.call("GET", "/api/runs?job=nope")
    assert code == 404 and "unknown job 'nope'" in body["error"]
    for bad in ("status=finished", "limit=0", "limit=abc", "drills=maybe"):
        code, body = s.call("GET", "/api/runs?" + bad)
        assert code == 422 and body["error"] and body["detail"], bad
    assert s.call("GET", "/api/plan?at=yesterday")[0] == 400
    assert s.call("GET", "/api/models/nope")[0] == 404
    assert s.call("GET", "/api/models/nope/history")[0] == 404
    assert s.call("GET", "/api/actions?limit=100000")[0] == 422

    code, body = s.call("POST", "/api/trigger", {"job": "nope"})
    assert code == 404 and "unknown job" in body["error"]
    future = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    code, body = s.call("POST", "/api/trigger", {"job": "hourly",
                                                 "window": f"{(future - timedelta(hours=1)).isoformat()}/{future.isoformat()}"})
    assert code == 400 and "ends after now" in body["error"]
    code, body = s.call("POST", "/api/trigger", {"job": "hourly", "window": "2026-01-01T00:10:00Z/2026-01-01T01:10:00Z"})
    assert code == 400 and "not on the job's schedule" in body["error"]
    assert s.call("POST", "/api/trigger", {"job": "hourly", "window": "2026-01-01T00:10:00Z/2026-01-01T01:10:00Z",
                                           "allow_off_grid": True})[0] == 200
    assert s.call("POST", "/api/trigger", {"job": "hourly", "window": "garbage"})[0] == 400
    code, body = s.call("POST", "/api/trigger", {"job": "hourly", "token": "x"})
    assert code == 422 and "token" in body["error"]
    assert s.call("POST", "/api/trigger", raw=b"{not json")[0] == 422
    assert s.call("POST", "/api/runs/999/cancel")[0] == 404
    assert s.call("POST", "/api/runs/abc/cancel")[0] == 400
    assert s.call("POST", "/api/runs/%C2%B2/cancel")[0] == 400  # a digit to str.isdigit, not to int()
    code, body = s.call("POST", "/api/runs/99999999999999999999/cancel")  # beyond any ledger id
    assert code == 400 and "out of range" in body["error"]
    assert s.call("POST", "/api/providers/nope/cordon", {"reason": "x"})[0] == 404
    assert s.call("POST", "/api/models/nope/promote", {"version": 1})[0] == 404
    assert s.call("POST", "/api/models/nope/rollback", {})[0] == 404
    assert s.call("POST", "/api/models/nope/promote", {})[0] == 422  # version is required
    assert s.call("POST", "/api/models/nope/promote", {"version": 2**40})[0] == 422  # beyond any version
    assert s.call("GET", "/api/models/nope?version=99999999999999999999")[0] == 422


def test_bodies_methods_and_routes_that_do_not_fit_answer_in_the_api_format(tmp_path, serve):
    """JSON's own types only; a body over 64 KiB is refused before it is parsed; a method a path does not take
    is 405 and a path that does not exist 404, each as {"error": ...}; validation names at most five fields."""
    from skyfeast.scheduler.app.routes import MAX_BODY

    s = serve(_project(tmp_path))
    for body in ({"version": "1"}, {"version": True}):
        code, answer = s.call("POST", "/api/models/nope/promote", body)
        assert code == 422 and "version" in answer["error"], (body, answer)
    code, answer = s.call("POST", "/api/trigger", {"job": "hourly", "allow_off_grid": "yes"})
    assert code == 422 and "allow_off_grid" in answer["error"], answer
    code, answer = s.call("POST", "/api/providers/aws/cordon", raw=b'{"reason": "' + b"x" * MAX_BODY + b'"}')
    assert code == 413 and "at most 65,536" in answer["error"], answer
    code, answer = s.call("POST", "/api/providers/aws/cordon", {f"k{i}": 1 for i in range(1000)})
    assert code == 422 and answer["error"].endswith("; and 995 more") and answer["error"].count(";") == 5, answer
    for method in ("DELETE", "PUT", "PATCH"):
        code, answer = s.call(method, "/api/status")
        assert code == 405 and answer == {"error": "Method Not Allowed"}, (method, code, answer)
    assert s.call("GET", "/api/nothing-here") == (404, {"error": "Not Found"})
    # the refused actions are audited as refused; the body over the limit was never read, and is not
    assert [(a["action"], a["outcome"]) for a in s.ledger.actions(100)] == [
        ("cordon", "refused"), ("trigger", "refused"), ("promote", "refused"), ("promote", "refused")]


def test_health_probes_answer_while_api_reads_fill_the_thread_pool(tmp_path, serve):
    """Forty reads waiting for an API slot (all held here) fill the server's thread pool; /healthz and /readyz
    run on the event loop and still answer at once (they queued behind the reads, seconds, which a liveness
    probe counts as a dead daemon)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from skyfeast.scheduler.app.routes import MAX_CONCURRENT, SLOT_WAIT

    s = serve(_project(tmp_path))
    for _ in range(MAX_CONCURRENT):
        assert s.api._slots.acquire(timeout=1)
    try:
        with ThreadPoolExecutor(40) as flood:
            reads = [flood.submit(s.call, "GET", "/api/status") for _ in range(40)]
            time.sleep(1.0)  # the reads are in, each waiting for a slot
            for probe in ("/healthz", "/readyz"):
                t0 = time.monotonic()
                with urllib.request.urlopen(s.base + probe, timeout=30) as r:
                    assert r.status == 200
                assert time.monotonic() - t0 < SLOT_WAIT / 2, f"{probe} took {time.monotonic() - t0:.1f} s"
            assert {f.result()[0] for f in reads} == {503}  # the slots stayed taken: every read said busy
    finally:
        for _ in range(MAX_CONCURRENT):
            s.api._slots.release()


def test_a_caller_that_leaves_mid_body_is_not_logged_as_a_crash(tmp_path, serve):
    """An action's client that disconnects before its body has arrived: no "Exception in ASGI application"
    with a traceback in the daemon's log, and the server goes on answering."""
    import logging

    class Records(logging.Handler):  # on the loggers themselves: another test's CLI run may stop propagation
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    s = serve(_project(tmp_path))
    host, port = s.base.rsplit("/", 1)[-1].split(":")
    seen = Records()
    loggers = [logging.getLogger(n) for n in ("skyfeast.http", "uvicorn.error", "uvicorn")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(seen)
        lg.setLevel(logging.INFO)
    try:
        _leave_mid_body(host, int(port), s.base)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(seen)
            lg.setLevel(level)
    crashes = [r for r in seen.records if r.exc_info or "Exception in ASGI" in r.getMessage()]
    assert not crashes, [r.getMessage() for r in crashes]
    assert any("disconnected before sending its body" in r.getMessage() for r in seen.records), \
        [r.getMessage() for r in seen.records]


def _leave_mid_body(host: str, port: int, base: str) -> None:
    import socket
    import time

    for _ in range(2):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"POST /api/providers/gcp/uncordon HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{}")
            time.sleep(0.3)
    time.sleep(0.5)
    with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
        assert r.status == 200


def test_an_action_whose_body_never_arrives_is_answered_408_and_changes_nothing(tmp_path, serve, monkeypatch):
    """A POST that sends its head and part of its body, then nothing: the connection was held for good.
    Once the request deadline (1.5 s here) has passed it is answered 408 and closed, the action is not
    carried out, and the server goes on answering."""
    import socket
    import time

    import skyfeast.scheduler.app.http as http_mod

    monkeypatch.setattr(http_mod, "REQUEST_DEADLINE", 1.5)
    s = serve(_project(tmp_path))
    host, port = s.base.rsplit("/", 1)[-1].split(":")
    assert s.call("POST", "/api/providers/gcp/cordon", {"reason": "drill"})[0] == 200
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /api/providers/gcp/uncordon HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{}")
        t0, got = time.monotonic(), b""
        sock.settimeout(8)
        while part := sock.recv(4096):
            got += part
        took = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408 ") and got.endswith(b'"the request did not arrive within 1.5 s"}'), got
    # checked once a second: cut at about 2 s, the deadline counted from the connection, not restarted
    # when the head arrived (which cut it at about 3 s: a client had the deadline twice)
    assert 1.4 <= took <= 2.6, took
    code, body = s.call("GET", "/api/status")
    assert code == 200 and next(p for p in body["providers"] if p["name"] == "gcp")["cordoned"], body


def test_a_forwarded_for_header_does_not_change_who_the_caller_is(tmp_path, serve):
    """The TCP peer decides (docs/http.md): a local caller cannot pose as another address, in the refusal
    or in the log and audit, with X-Forwarded-For."""
    s = serve(_project(tmp_path))
    req = urllib.request.Request(s.base + "/api/providers/aws/cordon", data=b'{"reason": "x"}', method="POST",
                                 headers={"Content-Type": "application/json", "X-Forwarded-For": "8.8.8.8"})
    with urllib.request.urlopen(req, timeout=15) as r:
        assert r.status == 200
    (entry,) = s.ledger.actions(10)
    assert entry["source"] == "127.0.0.1", entry


# --------------------------------------------------------------------------- actions and their audit
def test_actions_change_the_ledger_and_are_audited(tmp_path, serve, capsys):
    s = serve(_project(tmp_path))
    s.cli(capsys, "models", "register", "churn", str(tmp_path / "model.joblib"), "--json")
    s.cli(capsys, "models", "register", "churn", str(tmp_path / "model.joblib"), "--json")

    code, queued = s.call("POST", "/api/trigger", {"job": "hourly", "window": _closed_window()})
    assert code == 200 and queued["status"] == "queued" and queued["job"] == "hourly"
    rid = queued["run_id"]
    assert s.call("POST", f"/api/runs/{rid}/cancel", {"reason": "wrong window"})[1]["status"] == "cancelled"
    assert s.ledger.get_run(rid).status == "cancelled"
    code, body = s.call("POST", "/api/providers/gcp/cordon", {"reason": "quota"})
    assert code == 200 and s.ledger.cordons()["gcp"] == {**s.ledger.cordons()["gcp"], "reason": "quota",
                                                          "by": "http:loopback"}
    assert s.call("POST", "/api/providers/gcp/uncordon", {"reason": "fixed"})[1]["was_cordoned"] is True
    assert s.ledger.cordons() == {}
    assert s.call("POST", "/api/models/churn/promote", {"version": 1, "reason": "first"})[1]["to_version"] == 1
    move = s.call("POST", "/api/models/churn/promote", {"version": 2, "alias": "champion"})[1]
    assert (move["from_version"], move["to_version"], move["actor"]) == (1, 2, "http:loopback")
    assert s.call("POST", "/api/models/churn/rollback", {"reason": "bad auc"})[1]["to_version"] == 1
    code, body = s.call("POST", "/api/models/churn/rollback", {"alias": "shadow"})
    assert code == 404
    assert s.call("POST", "/api/trigger", {"job": "nope"})[0] == 404

    code, body = s.call("GET", "/api/actions?limit=100")
    rows = body["actions"]
    assert [(r["action"], r["target"], r["outcome"]) for r in reversed(rows)] == [
        ("trigger", "hourly", "accepted"), ("cancel", str(rid), "accepted"), ("cordon", "gcp", "accepted"),
        ("uncordon", "gcp", "accepted"), ("promote", "churn", "accepted"), ("promote", "churn", "accepted"),
        ("rollback", "churn", "accepted"), ("rollback", "churn", "refused"), ("trigger", "nope", "refused")]
    assert all(r["actor"] == "loopback" and r["source"] == "127.0.0.1" for r in rows)
    assert rows[0]["error"].startswith("unknown job 'nope'") and rows[0]["params"]["job"] == "nope"
    assert rows[-1]["params"] == {"job": "hourly", "window": _closed_window(), "allow_off_grid": False}
    assert rows[-3]["params"] == {"reason": "quota"}
    assert s.call("GET", "/api/actions?limit=2")[1]["actions"] == rows[:2]


def test_actions_need_the_token_when_one_is_configured(tmp_path, serve):
    s = serve(_project(tmp_path, daemon="http_token_env: SKYFEAST_HTTP_TOKEN"),
              environ={"SKYFEAST_HTTP_TOKEN": TOKEN})
    body = {"reason": "x"}
    code, answer = s.call("POST", "/api/providers/gcp/cordon", body)
    assert code == 401 and "bearer token" in answer["error"]
    assert s.call("POST", "/api/providers/gcp/cordon", body, token=TOKEN + "x")[0] == 401
    assert s.call("POST", "/api/providers/nope/cordon", body)[0] == 401  # nothing learned about the target
    assert s.call("POST", "/api/providers/gcp/cordon", raw=b"junk")[0] == 401  # nor about the body
    assert s.ledger.actions() == []  # refused before authentication: not audited (logged)
    assert s.call("POST", "/api/providers/gcp/cordon", body, token=TOKEN)[0] == 200
    assert [(a["actor"], a["outcome"]) for a in s.ledger.actions()] == [("token", "accepted")]
    assert s.call("GET", "/api/runs")[0] == 200  # reads stay open without http_read_token


def test_reads_can_need_the_token_too(tmp_path, serve):
    (tmp_path / "token").write_text(TOKEN + "\n")
    os.chmod(tmp_path / "token", 0o600)
    s = serve(_project(tmp_path, daemon="http_token_file: token, http_read_token: true"))
    for path in ("/api/status", "/api/runs", "/api/plan", "/api/models", "/api/actions"):
        assert s.call("GET", path)[0] == 401, path
        assert s.call("GET", path, token="wrong-token-of-length")[0] == 401, path
        assert s.call("GET", path, token=TOKEN)[0] == 200, path
    assert s.call("GET", "/healthz")[0] == 200 and s.call("GET", "/metrics")[0] == 200  # probes stay open


def test_without_a_token_only_loopback_clients_may_act():
    def act(client):
        return decide(action=True, client=client, authorization=None, token=None)

    assert act("127.0.0.1").allowed and act("127.0.0.1").actor == "loopback"
    assert act("::1").allowed and act("::ffff:127.0.0.1").allowed
    for other in ("10.0.0.5", "192.168.1.2", "2001:db8::1", "::ffff:10.0.0.1", "0.0.0.0", None, "", "localhost",
                  "127.0.0.2", "127.8.9.1", "::ffff:127.0.0.2"):
        d = act(other)
        assert (d.allowed, d.status) == (False, 403) and "loopback" in d.error, other
    assert decide(action=False, client="10.0.0.5", authorization=None, token=None).allowed
    token = Token(TOKEN)
    assert not decide(action=True, client="127.0.0.1", authorization=None, token=token).allowed  # a token: for all
    assert decide(action=True, client="10.0.0.5", authorization=f"Bearer {TOKEN}", token=token).actor == "token"
    assert decide(action=True, client="10.0.0.5", authorization=f"bearer  {TOKEN} ", token=token).allowed
    assert decide(action=True, client="10.0.0.5", authorization=f"Basic {TOKEN}", token=token).status == 401
    assert not decide(action=False, client="1.2.3.4", authorization=None, token=token, read_token=True).allowed
    assert TOKEN not in repr(token) + str(token) and not is_loopback("not-an-ip")


def test_token_settings_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not both"):
        config_pkg.load_config(_project(tmp_path, daemon="http_token_env: A, http_token_file: f"))
    with pytest.raises(ConfigError, match="http_read_token needs a token"):
        config_pkg.load_config(_project(tmp_path, daemon="http_read_token: true"))
    with pytest.raises(ConfigError, match="http_token_env"):
        config_pkg.load_config(_project(tmp_path, daemon="http_token_env: 'not a name'"))
    d = config_pkg.load_config(_project(tmp_path, daemon="http_token_env: SKY_T")).daemon
    with pytest.raises(UsageError, match="SKY_T is not set"):
        load_token(d, tmp_path, {})
    with pytest.raises(UsageError, match="shorter than 16") as short:
        load_token(d, tmp_path, {"SKY_T": "tiny-secret"})
    assert "tiny-secret" not in str(short.value)
    assert load_token(d, tmp_path, {"SKY_T": f"  {TOKEN}\n"}).matches(TOKEN)
    d = config_pkg.load_config(_project(tmp_path, daemon="http_token_file: tok")).daemon
    with pytest.raises(UsageError, match="cannot read"):
        load_token(d, tmp_path, {})
    (tmp_path / "tok").write_text(TOKEN)
    os.chmod(tmp_path / "tok", 0o644)
    with pytest.raises(UsageError, match="chmod 600") as loose:
        load_token(d, tmp_path, {})
    assert TOKEN not in str(loose.value)
    os.chmod(tmp_path / "tok", 0o600)
    assert load_token(d, tmp_path, {}).matches(TOKEN)


# --------------------------------------------------------------------------- no secret leaks
def _planted_pg_url(pg_url: str) -> str:
    """``pg_url`` (a fresh schema of the session's PostgreSQL database) as user postgres with the planted
    password, and the password again as ``sslpassword``. The test server trusts local connections, so
    this URL connects for real whatever the password; a server that checks it skips the test."""
    from sqlalchemy.engine import make_url

    from skyfeast.scheduler.ledger import Ledger, LedgerError
    from tests.conftest import REQUIRE_SERVICES

    url = make_url(pg_url).set(drivername="postgresql+psycopg", username="postgres", password=PG_PASSWORD)
    url = url.update_query_dict({"sslpassword": PG_PASSWORD}).render_as_string(hide_password=False)
    try:
        Ledger(url).close()
    except LedgerError as exc:
        msg = f"PostgreSQL refuses the planted password (it needs trust auth for this test): {exc}"
        if REQUIRE_SERVICES:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return url


def test_no_planted_secret_reaches_a_response_or_a_log_line(tmp_path, serve, capfd, pg_url):
    """A PostgreSQL password in the state URL of a real PostgreSQL ledger, an S3 secret key, and the
    token: every endpoint, including the error paths, /metrics and the status page, and every log line
    at DEBUG, are grepped for them."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    keep = Keep(logging.DEBUG)
    keep.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(n) for n in ("skyfeast", "uvicorn", "uvicorn.error", "fastapi"))]
    old_levels = [lg.level for lg in loggers]
    root.addHandler(keep)
    for lg in loggers:  # the CLI's main sets the skyfeast logger's level: every line counts here
        lg.setLevel(logging.DEBUG)
    try:
        state_url = _planted_pg_url(pg_url)
        assert PG_PASSWORD in state_url
        path = _project(
            tmp_path, state=f"state: '{state_url}'",
            daemon="http_token_env: SKYFEAST_HTTP_TOKEN",
            gcp="{type: s3, bucket: planted-bucket, endpoint_url: 'http://127.0.0.1:9', connect_timeout: 1s, "
                f"access_key_id: AKIDPLANTED, secret_access_key: '{S3_SECRET}', session_token: '{S3_SECRET}x'}}")
        # the daemon's ledger is the real PostgreSQL database the planted URL names
        s = serve(path, environ={"SKYFEAST_HTTP_TOKEN": TOKEN}, drills=True)
        assert s.ledger.is_pg and s.ledger.url == state_url
        for tok in (None, TOKEN, TOKEN[:-1] + "!", "Basic " + TOKEN):
            for method, p, body in [
                ("GET", "/api/status", None), ("GET", "/api/runs?job=hourly", None), ("GET", "/api/runs?job=nope", None),
                ("GET", "/api/runs?limit=-1", None), ("GET", "/api/plan", None), ("GET", "/api/plan?at=x", None),
                ("GET", "/api/models", None), ("GET", "/api/models/nope", None),
                ("GET", "/api/models/nope/history", None), ("GET", "/api/actions", None),
                ("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/metrics", None), ("GET", "/nope", None),
                ("GET", "/", None), ("GET", "/status", None), ("GET", "/api/drills", None),
                ("GET", "/api/drills/1", None), ("GET", "/api/drills/x", None),
                ("POST", "/api/drills", {"provider": "aws", "at": "x"}), ("POST", "/api/drills", {"provider": "gcp"}),
                ("POST", "/api/drills", {"provider": "nope"}),
                ("POST", "/api/trigger", {"job": "hourly", "window": _closed_window()}),
                ("POST", "/api/trigger", {"job": "hourly", "token": TOKEN}), ("POST", "/api/trigger", {"job": "x"}),
                ("POST", "/api/runs/1/cancel", None), ("POST", "/api/runs/9999/cancel", None),
                ("POST", "/api/providers/gcp/cordon", {"reason": "r"}),
                ("POST", "/api/providers/gcp/uncordon", {"reason": "r"}),
                ("POST", "/api/providers/nope/cordon", None), ("POST", "/api/models/nope/promote", {"version": 1}),
                ("POST", "/api/models/nope/rollback", {}), ("POST", "/api/trigger", b"{bad"),
            ]:
                if isinstance(body, bytes):
                    s.call(method, p, raw=body, token=tok)
                else:
                    s.call(method, p, body, token=tok)
        code, status = s.call("GET", "/api/status")
        assert code == 200 and status["ledger"].startswith("postgresql+psycopg://postgres:***@127.0.0.1")
        assert "sslpassword=%2A%2A%2A" in status["ledger"]  # masked, URL-quoted
        code, page = s.call("GET", "/")
        assert code == 200 and "planted-bucket" not in page and "Drills" in page  # the page was served
        assert status["providers"][1]["storage"] == "s3://planted-bucket"
        assert len(s.ledger.actions(1000)) > 10
        audit = json.dumps(s.ledger.actions(1000))
    finally:
        root.removeHandler(keep)
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)
    out, err = capfd.readouterr()
    everything = "\n".join([*(b.decode(errors="replace") for b in s.seen), *records, out, err, audit])
    assert any("refused POST /api/trigger" in r for r in records)  # the log was captured
    assert any("action cordon gcp by token" in r for r in records)
    for secret in PLANTED:
        assert secret not in everything, f"planted secret {secret[:5]}... leaked"


def test_a_cross_site_form_post_cannot_act_through_a_local_browser(tmp_path, serve):
    """Without a token, loopback clients may act; a page from another site, open in a browser on
    this host, could POST a form (or text/plain) to 127.0.0.1 without a CORS preflight. Actions
    take only JSON, which a browser sends cross-site only after a preflight this server refuses."""
    s = serve(_project(tmp_path))
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"):
        req = urllib.request.Request(s.base + "/api/providers/gcp/cordon", data=b'{"reason": "csrf"}',
                                     method="POST", headers={"Content-Type": ctype})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=15)
        assert err.value.code == 415, ctype
    assert s.ledger.cordons() == {}
    assert s.call("GET", "/api/actions?limit=10")[1]["actions"] == []
    code, _ = s.call("POST", "/api/providers/gcp/cordon", {"reason": "json"})  # Content-Type: application/json
    assert code == 200 and s.ledger.cordons()["gcp"]["reason"] == "json"



def test_an_action_from_another_address_is_refused_without_a_token(tmp_path, serve):
    """A real connection from 127.0.0.2 (a second address, as another host or container would
    be) is refused; the same action from 127.0.0.1 is accepted. Reads stay open to both."""
    import http.client

    s = serve(_project(tmp_path), host="127.0.0.2")
    host, port = s.server.address

    def post(source: str) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(host, port, timeout=15, source_address=(source, 0))
        try:
            conn.request("POST", "/api/providers/gcp/cordon", body=json.dumps({"reason": source}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    code, body = post("127.0.0.2")
    assert code == 403 and "loopback" in body["error"], body
    assert s.ledger.cordons() == {}
    code, body = post("127.0.0.1")
    assert code == 200 and s.ledger.cordons()["gcp"]["reason"] == "127.0.0.1", body
    conn = http.client.HTTPConnection(host, port, timeout=15, source_address=("127.0.0.2", 0))
    conn.request("GET", "/api/status")
    assert conn.getresponse().status == 200
    conn.close()


# --------------------------------------------------------------------------- drills
def test_a_drill_request_is_checked_before_anything_starts(tmp_path, serve):
    """POST /api/drills refuses what cannot be drilled with the status the CLI's error carries, and
    audits it; no drill report is made. (A drill that starts: tests/chaos/test_http_drill.py.)"""
    s = serve(_project(tmp_path), drills=True)
    for body, status, says in [
        ({"provider": "nope"}, 404, "unknown provider 'nope'"),
        ({"provider": "aws", "job": "nope"}, 404, "unknown job 'nope'"),
        ({"provider": "aws", "mode": "melt"}, 422, "mode"),
        ({"provider": "aws", "at": "yesterday"}, 400, "at: 'yesterday' is not an ISO-8601 time"),
        ({"provider": "aws", "at": "1900-01-01T00:00:00Z"}, 400, "out of range"),
        ({"provider": "aws", "at": "2030-01-01T00:00:00Z"}, 400, "ends after now"),  # a drill breaks a provider
        ({"provider": "gcp"}, 409, "not 'hourly''s preferred provider now"),
        ({"provider": "aws", "fault": "x"}, 422, "fault"),
        ({}, 422, "provider"),
        ({"provider": ""}, 422, "provider"),
    ]:
        code, answer = s.call("POST", "/api/drills", body)
        assert (code, says in answer["error"]) == (status, True), (body, code, answer)
        assert "Traceback" not in json.dumps(answer)
    assert s.call("POST", "/api/drills", raw=b"{not json")[0] == 422
    assert s.ledger.drill_reports(10) == []
    audit = s.ledger.actions(100)
    assert {(a["action"], a["outcome"]) for a in audit} == {("drill", "refused")} and len(audit) == 11
    assert audit[-1]["target"] == "nope" and audit[-1]["params"] == {"provider": "nope", "mode": "kill", "job": None,
                                                                     "at": None}

    # one drill at a time, across processes: a drill another process runs (per the ledger) blocks it
    other = s.ledger.start_drill("hourly", "aws", "kill", deadline=datetime.now(UTC) + timedelta(minutes=30))
    code, answer = s.call("POST", "/api/drills", {"provider": "aws"})
    assert code == 409 and f"drill {other} (kill of aws) is running" in answer["error"], answer
    assert s.ledger.drill_reports(10)[0]["id"] == other and len(s.ledger.drill_reports(10)) == 1


def test_drill_history_and_its_metrics_come_from_the_ledger(tmp_path, serve):
    from prometheus_client.parser import text_string_to_metric_families

    s = serve(_project(tmp_path))
    soon = datetime.now(UTC) + timedelta(minutes=30)
    kill = s.ledger.start_drill("hourly", "aws", "kill", deadline=soon)
    s.ledger.set_drill_run(kill, 5)
    s.ledger.finish_drill(kill, {"ok": True, "detection_s": 0.6, "first_task_on_new_provider_s": 3.2},
                          outcome="passed", detection_s=0.6, recovery_s=3.2, run_id=5)
    hang = s.ledger.start_drill("hourly", "aws", "hang", deadline=soon)
    s.ledger.finish_drill(hang, {"ok": False, "error": "the run did not finish"}, outcome="failed",
                          detection_s=9.5, recovery_s=None)
    running = s.ledger.start_drill("hourly", "gcp", "kill", deadline=soon)

    code, body = s.call("GET", "/api/drills")
    assert code == 200 and [d["id"] for d in body["drills"]] == [running, hang, kill]
    assert body["running_here"] is None
    assert [d["outcome"] for d in body["drills"]] == ["running", "failed", "passed"]
    code, one = s.call("GET", f"/api/drills/{kill}")
    assert code == 200 and (one["detection_s"], one["recovery_s"], one["run_id"], one["mode"]) == (0.6, 3.2, 5, "kill")
    assert s.call("GET", "/api/drills?limit=1")[1]["drills"][0]["id"] == running
    assert s.call("GET", "/api/drills/999")[0] == 404
    for bad in ("abc", "0", "99999999999"):
        code, answer = s.call("GET", f"/api/drills/{bad}")
        assert code == 422 and answer["error"], bad
    assert s.call("GET", "/api/drills?limit=0")[0] == 422
    code, answer = s.call("POST", "/api/drills", {"provider": "aws"})  # a server without a runtime
    assert code == 503 and "no drills" in answer["error"]

    def samples():
        _, text = s.call("GET", "/metrics")
        return {(x.name, x.labels.get("provider"), x.labels.get("mode")): x.value
                for fam in text_string_to_metric_families(text) for x in fam.samples if "drill" in x.name}

    got = samples()
    assert got[("skyfeast_drill_detection_seconds", "aws", "kill")] == 0.6
    assert got[("skyfeast_drill_recovery_seconds", "aws", "kill")] == 3.2
    assert got[("skyfeast_drill_passed", "aws", "kill")] == 1.0
    assert got[("skyfeast_drill_detection_seconds", "aws", "hang")] == 9.5
    assert got[("skyfeast_drill_passed", "aws", "hang")] == 0.0
    assert ("skyfeast_drill_recovery_seconds", "aws", "hang") not in got  # it never recovered: no sample
    assert not any(p == "gcp" for _, p, _ in got)  # a running drill is no measurement yet
    ended = datetime.fromisoformat(s.ledger.drill_report(kill)["ended_at"]).timestamp()
    assert abs(got[("skyfeast_drill_end_timestamp_seconds", "aws", "kill")] - ended) < 1e-3
    s.app.daemon.is_leader = False  # a standby reports no drills (its leader does, from the same ledger)
    assert samples() == {}
