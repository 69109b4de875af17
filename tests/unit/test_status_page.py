"""The status page (issue 16), in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium loads ``GET /`` from the real uvicorn thread over a real SQLite
ledger, seeded through the ledger's and the model registry's own methods: a failover from aws to
gcp and a failback, a failed run, a running run with chunks, a drill that failed over (its run and
its report), probes and a model. It signs in with the read token, checks what the page shows
(the drill's detection and recovery, and its bars in the timeline, marked as a drill's), cordons a
provider and triggers a window through the page's forms, and saves a screenshot. The stand-ins are
the daemon, its liveness and the Feast repo's freshness (a view 100 min old against a 2 h SLO).

Without chromium, chromedriver or selenium the browser test is skipped with the reason; under
``SKYFEAST_REQUIRE_SERVICES=1`` (``.ci/run``) it fails instead.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

import skyfeast.scheduler.config as config_pkg
import skyfeast.scheduler.ledger.core as ledger_core
from skyfeast.scheduler.api.auth import load_token
from skyfeast.scheduler.app.page import COOKIE, session_valid, session_value
from skyfeast.scheduler.app.page_model import freshness_rows, timeline
from skyfeast.scheduler.app.routes import Api
from skyfeast.scheduler.drills.records import drill_job
from tests.conftest import REQUIRE_SERVICES

UTC = timezone.utc
TOKEN = "tok-Pg4Wd8Rn2Ks6Vb1Y"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ERROR = "KeyError: 'user_id' <script>alert(1)</script>"
CONFIG = """project: p
feast: {repo: repo, freshness_slo: {fv: 2h}}
daemon: {http_token_env: SKYFEAST_HTTP_TOKEN, http_read_token: true}
providers:
  aws: {priority: 1, cluster: {type: local}, storage: {type: local, root: data}}
  gcp: {priority: 2, cluster: {type: local}, storage: {type: local, root: data-gcp}}
jobs:
  - name: hourly
    kind: feature
    schedule: {type: cron, expr: "0 * * * *"}
    source: {type: parquet, path: "events/*.parquet", timestamp_field: ts}
    transform: "t:f"
    feature_view: fv
"""


class _Freshness:
    """The Feast repo's freshness read (the page reads nothing else of the repo)."""

    def freshness(self):
        return [{"feature_view": "fv", "materialized_until": "2026-01-01T00:00:00+00:00", "age_seconds": 6000.0,
                 "intervals": 3}]


def need_browser():
    """Skip (or fail under SKYFEAST_REQUIRE_SERVICES=1) without chromium, chromedriver or selenium."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (the test extra)")
    if not missing:
        return
    msg = "missing " + ", ".join(missing)
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg} and SKYFEAST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{msg}: apt-get install chromium chromium-driver; pip install -e '.[test]'")


class Clock:
    """The ledger's clock, moved by the seeding so attempts spread over the last hours."""

    def __init__(self):
        self.t = datetime.now(UTC) - timedelta(hours=5)

    def __call__(self):
        return self.t

    def at(self, hours_ago: float) -> None:
        self.t = datetime.now(UTC) - timedelta(hours=hours_ago)


def _seed(ledger, registry, clock, monkeypatch):
    monkeypatch.setattr(ledger_core, "_now", clock)
    lease = timedelta(hours=1)
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def claim(job, hours_back):
        end = top - timedelta(hours=hours_back)
        rid, got = ledger.claim(job, end - timedelta(hours=1), end, trigger="schedule", lease=lease)
        assert got == "claimed"
        return rid

    clock.at(4.5)  # failover: aws fails, gcp finishes the run
    rid = claim("hourly", 4)
    a = ledger.start_attempt(rid, "aws")
    clock.at(4.2)
    ledger.finish_attempt(a, outcome="failed", failure_class="infrastructure", error="aws scheduler unreachable")
    a = ledger.start_attempt(rid, "gcp")
    clock.at(3.8)
    ledger.finish_success(rid, a, 100)
    clock.at(2.5)  # failback: aws again
    rid = claim("hourly", 2)
    a = ledger.start_attempt(rid, "aws")
    clock.at(2.2)
    ledger.finish_success(rid, a, 100)
    clock.at(1.5)  # a user-code failure
    failed = claim("hourly", 1)
    a = ledger.start_attempt(failed, "aws")
    clock.at(1.3)
    ledger.finish_attempt(a, outcome="failed", failure_class="user_code", error=ERROR)
    ledger.finish_run(failed, status="failed", failure_class="user_code", error=ERROR)
    clock.at(0.3)  # running, 2 of 4 chunks
    running = claim("hourly", 0)
    a = ledger.start_attempt(running, "aws")
    ledger.set_partitions(running, 4)
    ledger.record_chunk(running, 0, {"rows_out": 10}, a)
    ledger.record_chunk(running, 1, {"rows_out": 10}, a)
    clock.at(0.8)  # a kill drill of aws: its run fails over to gcp
    drill = claim(drill_job("hourly"), 6)
    a = ledger.start_attempt(drill, "aws")
    clock.at(0.75)
    ledger.finish_attempt(a, outcome="failed", failure_class="infrastructure", error="drill: scheduler killed")
    a = ledger.start_attempt(drill, "gcp")
    clock.at(0.6)
    ledger.finish_success(drill, a, 10)
    report_id = ledger.start_drill("hourly", "aws", "kill", deadline=datetime.now(UTC) + timedelta(minutes=30))
    ledger.set_drill_run(report_id, drill)
    ledger.finish_drill(report_id, {"ok": True, "detection_s": 0.42, "first_task_on_new_provider_s": 3.75},
                        outcome="passed", detection_s=0.42, recovery_s=3.75, run_id=drill)
    ledger.record_probe("aws", "healthy", workers=3, at=datetime.now(UTC) - timedelta(seconds=20))
    ledger.record_probe("gcp", "degraded", workers=1, error="storage slow", at=datetime.now(UTC) - timedelta(seconds=40))
    registry.register("churn", artifact_key=lambda v: f"models/churn/v{v}/model.joblib", sha256="0" * 64, size=7,
                      created_by="test")
    registry.promote("churn", 1, "champion", reason="first", actor="test")
    monkeypatch.setattr(ledger_core, "_now", lambda: datetime.now(UTC))
    return failed, running, drill, report_id


@pytest.fixture
def served(tmp_path, monkeypatch, http_app):
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import Ledger

    (tmp_path / "repo").mkdir()
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG)
    cfg = config_pkg.load_config(path, check_imports=False, check_feast=False)
    ledger = Ledger(cfg.state_url)
    pool = ProviderPool(cfg)
    api = Api(cfg=cfg, ledger=ledger, pool=pool, repo=_Freshness(),
              token=load_token(cfg.daemon, cfg.base_dir, {"SKYFEAST_HTTP_TOKEN": TOKEN}))
    ids = _seed(ledger, api.registry, Clock(), monkeypatch)
    app = http_app(api)
    yield SimpleNamespace(base=app.base, ledger=ledger, ids=ids)
    app.server.close()
    pool.close()
    ledger.close()


def _window_hours_ago(hours: int) -> str:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    return f"{(end - timedelta(hours=1)).isoformat()}/{end.isoformat()}"


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --------------------------------------------------------------------------- without a browser
def test_freshness_levels_and_timeline_geometry():
    slo = {"a": timedelta(hours=2), "b": timedelta(hours=2), "c": timedelta(hours=2), "gone": timedelta(hours=1)}
    rows = freshness_rows([{"feature_view": "a", "age_seconds": 60.0}, {"feature_view": "b", "age_seconds": 6000.0},
                           {"feature_view": "c", "age_seconds": 9000.0}, {"feature_view": "d", "age_seconds": 5.0}],
                          slo)
    assert [(r["feature_view"], r["level"]) for r in rows] == [("a", "ok"), ("b", "warn"), ("c", "late"),
                                                               ("d", "none"), ("gone", "late")]
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    runs = [{"id": 1, "job": "j", "attempt_log": [
        {"provider": "aws", "number": 1, "outcome": "failed", "started_at": "2026-03-02T09:00:00+00:00",
         "ended_at": "2026-03-02T10:30:00+00:00"},
        {"provider": "gcp", "number": 2, "outcome": None, "started_at": "2026-03-02T11:00:00+00:00", "ended_at": None},
        {"provider": "aws", "number": 0, "outcome": "succeeded", "started_at": "2026-03-01T01:00:00+00:00",
         "ended_at": "2026-03-01T02:00:00+00:00"}]},  # before the span: not drawn
        {"id": 2, "job": drill_job("j"), "attempt_log": [
            {"provider": "aws", "number": 1, "outcome": "failed", "started_at": "2026-03-02T07:00:00+00:00",
             "ended_at": "2026-03-02T07:30:00+00:00"},
            {"provider": "gcp", "number": 2, "outcome": "succeeded", "started_at": "2026-03-02T07:30:00+00:00",
             "ended_at": "2026-03-02T08:00:00+00:00"}]}]
    t = timeline(runs, ["aws", "gcp", "azure"], now, hours=6, width=600)
    lanes = {lane["provider"]: lane["bars"] for lane in t["lanes"]}
    assert list(lanes) == ["aws", "gcp", "azure"] and lanes["azure"] == []
    assert [(b["x"], b["w"], b["outcome"], b["drill"]) for b in lanes["aws"]] == [(300.0, 150.0, "failed", False),
                                                                                  (100.0, 50.0, "failed", True)]
    assert [(b["x"], b["w"], b["outcome"], b["drill"]) for b in lanes["gcp"]] == [(500.0, 100.0, "running", False),
                                                                                  (150.0, 50.0, "succeeded", True)]
    assert [tk["label"] for tk in t["ticks"]] == ["06:00", "07:00", "08:00", "09:00", "10:00", "11:00", "12:00"]


def test_the_page_needs_the_read_token_and_never_takes_it_in_the_url(served):
    code, body = _get(served.base + "/")
    assert code == 401 and 'type="password"' in body and "aws" not in body
    assert _get(served.base + "/?token=" + TOKEN)[0] == 401
    code, body = _get(served.base + "/status", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200 and 'data-provider="gcp"' in body
    assert ERROR not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # escaped
    assert TOKEN not in body
    token = SimpleNamespace(value=lambda: TOKEN)
    assert session_valid(token, session_value(token, 4_000_000_000))
    assert not session_valid(token, session_value(token, 1_000))  # expired
    assert not session_valid(SimpleNamespace(value=lambda: TOKEN + "x"), session_value(token, 4_000_000_000))
    assert not session_valid(token, "4000000000.00") and not session_valid(token, None)


# --------------------------------------------------------------------------- in Chromium
def test_the_status_page_in_chromium(served, tmp_path):
    need_browser()
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,2200", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # the page reloads itself (after the action, and every 10 s): look again when it did
        wait = WebDriverWait(driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        driver.get(served.base + "/")
        driver.find_element(By.ID, "login-token").send_keys(TOKEN)
        driver.find_element(By.ID, "login-submit").click()
        wait.until(ec.presence_of_element_located((By.ID, "providers")))

        def reloaded(probe):
            """``probe``, read as not yet when the page reloads under it: chromedriver then reports an
            element of the old document by this message, not as StaleElementReferenceException."""
            def look(d):
                try:
                    return probe(d)
                except WebDriverException as exc:
                    if "does not belong to the document" not in (exc.msg or ""):
                        raise
                    return False
            return look

        cookie = driver.get_cookie(COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

        def row(table, text):
            return [r for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tr") if text in r.text]

        states = {r.get_attribute("data-provider"): r.find_element(By.CSS_SELECTOR, ".state").text
                  for r in driver.find_elements(By.CSS_SELECTOR, "#providers tr[data-provider]")}
        assert states == {"aws": "healthy", "gcp": "degraded"}
        assert "storage slow" in row("providers", "gcp")[0].text and "3" in row("providers", "aws")[0].text
        failed, running, drill_run, report_id = served.ids
        assert ERROR in row("failures", str(failed))[0].text  # shown as text, not run as markup
        assert "2 / 4" in row("running", str(running))[0].text
        fresh = driver.find_element(By.CSS_SELECTOR, '#freshness tr[data-view="fv"]')
        assert fresh.find_element(By.CSS_SELECTOR, "[data-level]").get_attribute("data-level") == "warn"
        assert "1h40m" in fresh.text and "2h00m" in fresh.text
        assert "champion → v1" in row("models", "churn")[0].text
        drill = driver.find_element(By.CSS_SELECTOR, f'#drills tr[data-drill="{report_id}"]')
        assert "kill of aws" in drill.text and "passed" in drill.text and str(drill_run) in drill.text
        assert (drill.find_element(By.CSS_SELECTOR, ".detection").text,
                drill.find_element(By.CSS_SELECTOR, ".recovery").text) == ("0.4 s", "3.8 s")

        def bars():
            return {lane.get_attribute("data-provider"): sorted(
                (b.get_attribute("data-outcome"), b.get_attribute("data-drill"))
                for b in lane.find_elements(By.CSS_SELECTOR, "rect.bar"))
                for lane in driver.find_elements(By.CSS_SELECTOR, "#timeline g.lane")}

        # the drill's failover is drawn, hatched and outlined apart from production's bars
        assert bars() == {"aws": [("failed", "false"), ("failed", "false"), ("failed", "true"), ("running", "false"),
                                  ("succeeded", "false")],
                          "gcp": [("succeeded", "false"), ("succeeded", "true")]}
        drill_bar = driver.find_element(By.CSS_SELECTOR, f'#timeline rect.bar.drill[data-run="{drill_run}"]')
        assert drill_bar.get_attribute("stroke-dasharray") and drill_bar.is_displayed()
        assert len(driver.find_elements(By.CSS_SELECTOR, "#timeline rect.hatch")) == 2
        assert "a drill's run" in driver.find_element(By.ID, "timeline-legend").text

        Select(driver.find_element(By.ID, "cordon-provider")).select_by_value("gcp")
        driver.find_element(By.ID, "cordon-reason").send_keys("quota <b>exhausted</b>")
        driver.find_element(By.ID, "action-token").send_keys(TOKEN)
        driver.find_element(By.ID, "cordon-button").click()
        wait.until(reloaded(lambda d: "cordoned" in d.find_element(
            By.CSS_SELECTOR, '#providers tr[data-provider="gcp"] .cordon').text))
        assert "quota <b>exhausted</b>" in row("providers", "gcp")[0].text and "http:token" in row("providers", "gcp")[0].text
        assert "cordoned" not in row("providers", "aws")[0].find_element(By.CSS_SELECTOR, ".cordon").text

        # a second action: trigger a window of the job (the page reloaded: the token is typed again)
        window = _window_hours_ago(4)  # a window the seeding left alone
        Select(driver.find_element(By.ID, "trigger-job")).select_by_value("hourly")
        driver.find_element(By.ID, "trigger-window").send_keys(window)
        driver.find_element(By.ID, "action-token").send_keys(TOKEN)
        driver.find_element(By.ID, "trigger-button").click()
        result = wait.until(reloaded(lambda d: d.find_element(By.ID, "trigger-result").text))
        assert result.startswith("trigger: run ") and result.endswith(" queued"), result
        queued = int(result.split()[2])
        # and a refused one: the error is shown as the API says it
        driver.find_element(By.ID, "cancel-run").send_keys("999999")
        driver.find_element(By.ID, "cancel-button").click()
        assert wait.until(reloaded(lambda d: d.find_element(By.ID, "cancel-result").text)) == "no run with id 999999"
        shot = tmp_path / "status-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"status page screenshot: {shot}")
    finally:
        driver.quit()
    assert served.ledger.cordons()["gcp"]["reason"] == "quota <b>exhausted</b>"
    run = served.ledger.get_run(queued)
    assert (run.job, run.status, f"{run.window_start.isoformat()}/{run.window_end.isoformat()}") == \
        ("hourly", "queued", window)
    audit = served.ledger.actions()
    assert [(a["action"], a["target"], a["actor"], a["outcome"]) for a in reversed(audit)] == [
        ("cordon", "gcp", "token", "accepted"), ("trigger", "hourly", "token", "accepted"),
        ("cancel", "999999", "token", "refused")]
