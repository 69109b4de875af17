"""Dispatch-path benchmark: 10,000 jobs on one daemon, no Dask work.

    python bench/scheduler_scale.py [--feature-jobs 8000] [--model-jobs 2000] [--ticks 2] [--state URL] [--jump]

Builds a config with N feature jobs and M model jobs (each model job reads a
feature job), all on ``* * * * *`` cron schedules (the worst case: every job
fires on the same second), against a real Feast repo (the quickstart's). The
daemon runs in this process with an executor that only records the run as
succeeded, so what is measured is the scheduler: trigger timing, batch claims
in the ledger, chaining, heartbeats and completion writes.

Prints (and with --json emits) daemon start time, peak RSS, p50/p99 lag
between a fire's due time and its ledger row, and ledger inserts/s; targets on
a 2-core machine: start <= 10 s, RSS <= 400 MB, p99 lag <= 1 s, >= 1,000
inserts/s on SQLite.

``--jump``: the first measured minute boundary comes 3 s after the daemon is ready, on a
daemon clock that runs at real speed, shifted (``_common.JumpClock``), instead of up to a
minute later on the wall clock; lags are measured from each due instant as the daemon's clock
showed it. The smoke test uses it (tests/unit/test_dispatch_scale.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _common import JumpClock  # noqa: E402  (bench/ is on sys.path when run as a script)

UTC = timezone.utc
JUMP_LEAD = 3.0  # --jump: seconds from the daemon's election to the first measured boundary


def build_project(dest: Path, n_feature: int, n_model: int, state: str | None) -> Path:
    shutil.copytree(ROOT / "examples" / "quickstart", dest,
                    ignore=shutil.ignore_patterns("data", "__pycache__", ".skyfeast"))
    subprocess.run([str(Path(sys.executable).parent / "feast"), "apply"], cwd=dest / "feature_repo",
                   check=True, capture_output=True)
    jobs = []
    for i in range(n_feature):
        jobs.append({"name": f"f{i}", "kind": "feature", "schedule": {"type": "cron", "expr": "* * * * *"},
                     "source": {"type": "parquet", "path": "events/*.parquet"},
                     "transform": "transforms:user_features", "feature_view": "user_features", "catchup": "none"})
    for i in range(n_model):
        jobs.append({"name": f"m{i}", "kind": "model", "schedule": {"type": "cron", "expr": "* * * * *"},
                     "source": {"type": "job", "job": f"f{i % max(n_feature, 1)}"},
                     "model": {"artifact": "models/risk_model.joblib", "scorer": "transforms:risk_score"},
                     "feature_view": "user_risk", "catchup": "none"})
    cfg = {"project": "bench", "feast": {"repo": "feature_repo"},
           "daemon": {"max_parallel": 8, "run_lease": "60s", "poll": "1s", "leader_lease": "10s"},
           "providers": {"local": {"cluster": {"type": "local", "workers": 1},
                                   "storage": {"type": "local", "root": "data"}}},
           "jobs": jobs}
    if state:
        cfg["state"] = state
    path = dest / "skyfeast.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _serve_and_scrape(cfg, ledger, daemon, metrics, scrapes: list[float]):
    """The daemon's HTTP server as `skyfeast daemon --http` builds it, and a thread that scrapes
    ``/metrics`` every second, appending each answer's seconds to ``scrapes``."""
    import urllib.request

    from skyfeast.featurestore.repo import FeastRepo
    from skyfeast.scheduler.app.http import HttpServer, bind, build_app
    from skyfeast.scheduler.app.routes import Api
    from skyfeast.scheduler.control.liveness import Liveness, staleness_bounds
    from skyfeast.scheduler.control.providers import ProviderPool

    pool, repo, liveness = ProviderPool(cfg), FeastRepo(cfg.feast_repo), daemon.liveness
    bounds = staleness_bounds(cfg)
    metrics.attach(daemon=daemon, pool=pool, repo=repo, liveness=liveness, bounds=bounds,
                   freshness_slo=cfg.feast.freshness_slo)
    api = Api(cfg=cfg, ledger=ledger, pool=pool, repo=repo, token=None)
    server = HttpServer(bind("127.0.0.1:0"))
    server.start(build_app(daemon=daemon, liveness=liveness if isinstance(liveness, Liveness) else Liveness(),
                           ledger=ledger, metrics=metrics, bounds=bounds, api=api))
    url = "http://%s:%d/metrics" % server.address
    stop = threading.Event()

    def scrape():
        while not stop.wait(1.0):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            scrapes.append(time.perf_counter() - t)

    threading.Thread(target=scrape, name="bench-scraper", daemon=True).start()
    return server, stop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feature-jobs", type=int, default=8000)
    ap.add_argument("--model-jobs", type=int, default=2000)
    ap.add_argument("--ticks", type=int, default=2, help="minute boundaries to measure (default 2)")
    ap.add_argument("--state", help="ledger URL (default: SQLite in the temp project)")
    ap.add_argument("--http", action="store_true",
                    help="also serve the daemon's HTTP endpoints (metrics fed by every run) and scrape "
                         "/metrics every second; prints the scrape latency (target <= 50 ms)")
    ap.add_argument("--jump", action="store_true",
                    help="make the first minute boundary due 3 s after the daemon is ready (a shifted daemon "
                         "clock) instead of waiting for the wall clock's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.feature_jobs < 1 or args.model_jobs < 0 or args.ticks < 1:
        ap.error("--feature-jobs and --ticks must be at least 1, --model-jobs at least 0")

    tmp = Path(tempfile.mkdtemp(prefix="skyfeast-bench-"))
    cfg_path = build_project(tmp / "p", args.feature_jobs, args.model_jobs, args.state)

    t0 = time.perf_counter()
    from skyfeast.scheduler.config import load_config

    cfg = load_config(cfg_path, keep_source_map=False)  # before the daemon's imports, as `skyfeast daemon` does
    from skyfeast.scheduler.app.daemon import Daemon
    from skyfeast.scheduler.ledger import Ledger
    from skyfeast.scheduler.run.runner import Outcome

    ledger = Ledger(cfg.state_url)
    insert_time = [0.0]
    inserted = [0]
    real_claim_many = ledger.claim_many

    def timed_claim_many(items, **kw):
        s = time.perf_counter()
        out = real_claim_many(items, **kw)
        insert_time[0] += time.perf_counter() - s
        inserted[0] += len(out)
        return out

    ledger.claim_many = timed_claim_many

    metrics = None
    if args.http:
        from skyfeast.scheduler.app.metrics import Metrics

        metrics = Metrics()
        metrics.time_ledger(ledger)

    def execute(job, window, run_id):
        ledger.finish_run(run_id, status="succeeded", rows=0)
        out = Outcome(job.name, window, "succeeded", run_id=run_id)
        if metrics is not None:
            metrics.run_ended(job, out)
        return out

    daemon = Daemon(cfg, ledger, execute, cancel=threading.Event())
    clock = JumpClock(datetime.now(UTC), lead=JUMP_LEAD) if args.jump else None
    if clock is not None:
        daemon.clock = clock  # read from serve() on
    scrapes: list[float] = []
    server = None
    if args.http:
        server, scraper_stop = _serve_and_scrape(cfg, ledger, daemon, metrics, scrapes)
    ready = threading.Event()
    real_plan = daemon._plan_after_election

    def plan_and_mark():
        if clock is not None:  # the next minute boundary, due on the daemon's clock JUMP_LEAD s from now
            clock.jump((clock() + timedelta(minutes=1)).replace(second=0, microsecond=0))
        real_plan()
        ready.set()

    daemon._plan_after_election = plan_and_mark
    thread = threading.Thread(target=daemon.serve, kwargs={"max_ticks": args.ticks}, daemon=True)
    thread.start()
    ready.wait(120)
    start_s = time.perf_counter() - t0
    print(f"daemon ready in {start_s:.2f} s with {len(cfg.jobs):,} jobs; waiting for {args.ticks} minute boundary(ies)",
          file=sys.stderr)
    thread.join(timeout=60 * args.ticks + 120)
    if server is not None:
        scraper_stop.set()
        server.close()
    # wait for completions to drain
    expected = len(cfg.jobs) * args.ticks
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with ledger.engine.connect() as conn:
            import sqlalchemy as sa

            from skyfeast.scheduler.ledger.schema import runs_t

            done = conn.execute(sa.select(sa.func.count()).where(runs_t.c.status == "succeeded")).scalar_one()
        if done >= expected:
            break
        time.sleep(1)
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(runs_t.c.window_end, runs_t.c.created_at)).all()
    shift = clock.offset if clock is not None else timedelta(0)  # daemon clock - wall clock
    lags = [(c - (e - shift)).total_seconds() for e, c in rows]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # raw ledger insert rate on the same backend: 10k windows in one batch claim
    bench_ledger = Ledger(cfg.state_url)
    base = datetime(2000, 1, 1, tzinfo=UTC)
    items = [(f"raw{i}", base, base + timedelta(minutes=1)) for i in range(10_000)]
    s = time.perf_counter()
    bench_ledger.claim_many(items, trigger="bench", lease=timedelta(seconds=60))
    raw_rate = len(items) / (time.perf_counter() - s)
    bench_ledger.close()

    result = {
        "jobs": len(cfg.jobs), "ticks": args.ticks, "runs": len(rows), "succeeded": done,
        "ledger": cfg.state_url.split("://")[0], "jump": args.jump,
        "start_seconds": round(start_s, 2), "peak_rss_mb": round(rss_mb, 1),
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p99_s": round(pct(lags, 99), 3) if lags else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "dispatch_inserts_per_s": round(inserted[0] / insert_time[0]) if insert_time[0] else None,
        "raw_batch_inserts_per_s": round(raw_rate),
        "targets": {"start_seconds": 10, "peak_rss_mb": 400, "lag_p99_s": 1.0, "inserts_per_s": 1000},
    }
    if args.http:
        result["http"] = {"scrapes": len(scrapes),
                          "metrics_p50_ms": round(1000 * statistics.median(scrapes), 1) if scrapes else None,
                          "metrics_max_ms": round(1000 * max(scrapes), 1) if scrapes else None,
                          "target_ms": 50}
    ledger.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    ok = (start_s <= 10 and rss_mb <= 400 and lags and pct(lags, 99) <= 1.0 and raw_rate >= 1000
          and done >= expected)
    if args.http:
        ok = ok and bool(scrapes) and statistics.median(scrapes) <= 0.050
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
