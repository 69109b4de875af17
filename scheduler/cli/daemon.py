"""``skyfeast daemon``: run jobs on schedule until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging

from skyfeast.scheduler.cli.common import add_config, install_signal_handlers, safe_url, seconds_arg
from skyfeast.scheduler.errors import UsageError

log = logging.getLogger("skyfeast.cli")
EXIT_THREAD_DIED = 70  # EX_SOFTWARE, as for an internal error: the supervisor restarts the daemon
# with --http, a daemon whose thread died exits no sooner than this many seconds after the death
# (its drain counts), serving 503 on /healthz meanwhile, so that a probe (k8s, a load balancer) sees it
DEATH_LINGER = 3.0


def register(sub) -> None:
    p = sub.add_parser("daemon", help="run jobs on schedule until SIGINT/SIGTERM")
    add_config(p)
    p.add_argument("--ticks", type=int, help="exit after dispatching this many ticks (for drills and demos)")
    p.add_argument("--max-parallel", type=int, help="concurrent runs (default: daemon.max_parallel, 4)")
    p.add_argument("--grace", type=seconds_arg(0, 86400), help="seconds running work gets at shutdown (default: daemon.grace, 60)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve /healthz, /readyz, /metrics and the JSON API /api there (default: daemon.http, none)")
    p.set_defaults(func=cmd_daemon, starts_clusters=True)


def _reach_ledger(cfg):
    from skyfeast.scheduler.ledger import reach_ledger

    return reach_ledger(cfg)


def cmd_daemon(args: argparse.Namespace) -> int:
    from skyfeast.scheduler.config import load_config

    # the config first: parsing a large one (10,000 jobs) briefly takes ~150 MB, which the imports
    # below (Feast, Dask, pandas) then reuse instead of adding to the peak; the ledger's server is
    # reached while Feast's repo loads (the ledger module imported only then, after the parse)
    cfg = load_config(args.config, keep_source_map=False,  # ~40 MB at 10,000 jobs, unused by a daemon
                      meanwhile=_reach_ledger)
    if args.ticks is not None and args.ticks < 1:
        raise UsageError("--ticks must be at least 1")
    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    if args.grace is not None and args.grace < 0:
        raise UsageError("--grace must be zero or more seconds")
    address = args.http or cfg.daemon.http
    if not address:
        return _serve(cfg, args, None)
    from skyfeast.scheduler.api.auth import load_token
    from skyfeast.scheduler.app.http import bind

    token = load_token(cfg.daemon, cfg.base_dir)  # an unset variable or unreadable file: exit 2 now
    sock = bind(address)  # a port in use is exit 2 now, before the runtime opens and anything is dispatched
    try:
        return _serve(cfg, args, sock, token)
    finally:
        sock.close()


def _serve(cfg, args: argparse.Namespace, sock, token=None) -> int:
    import time

    from skyfeast.scheduler.app import build_daemon, open_runtime
    from skyfeast.scheduler.app.daemon import ThreadDied
    from skyfeast.scheduler.cli.console import ProgressReporter, err

    metrics = server = drills = None
    if sock is not None:
        from skyfeast.scheduler.app.metrics import Metrics

        metrics = Metrics()
    with ProgressReporter() as reporter, open_runtime(cfg, reporter, metrics) as rt:
        runner = rt.runner
        daemon = build_daemon(rt, max_parallel=args.max_parallel, grace=args.grace)
        if sock is not None:
            from skyfeast.scheduler.app.drills import DrillStarter

            drills = DrillStarter(rt.cfg, rt.runner, metrics)
            server = _start_http(sock, rt, daemon, metrics, token, drills)
            host, port = server.address
            guard = "token" if token is not None else "loopback clients only"
            err.print(f"skyfeast daemon: /healthz, /readyz, /metrics and /api on http://{host}:{port} "
                      f"(actions: {guard})", markup=False)

        def on_stop(sig: str) -> None:
            if daemon.stop.is_set():
                runner.stop.set()  # second signal: cancel running work now
            err.print(f"skyfeast: {sig} received, stopping (again to cancel running work)")
            daemon.stop.set()

        install_signal_handlers(on_stop)
        err.print(f"skyfeast daemon {runner.ledger.owner}: {len(cfg.jobs)} job(s), ledger {safe_url(cfg.state_url)}")
        try:
            daemon.serve(max_ticks=args.ticks)
        except Exception as exc:  # a dead thread, or the dispatch loop itself: never live on headless
            if not isinstance(exc, ThreadDied):
                rt.liveness.died("dispatch", exc)  # logs it; /healthz names it
            err.print(f"skyfeast daemon: {exc}; exiting so that a supervisor restarts it "
                      "(a standby takes over meanwhile)", markup=False)
            if server is not None and rt.liveness.failed_at is not None:
                time.sleep(max(0.0, min(DEATH_LINGER, rt.liveness.failed_at + DEATH_LINGER - time.monotonic())))
            return EXIT_THREAD_DIED
        finally:
            if drills is not None:  # a drill in progress lifts its fault and reports before the pool closes
                drills.close()
            if server is not None:
                server.close()
    failed = daemon.ended["failed"]
    err.print(f"skyfeast daemon stopped after {daemon.ticks} tick(s): {sum(daemon.ended.values())} run(s), {failed} failed")
    if daemon.deposed:
        err.print("skyfeast daemon: lost leadership to another daemon; exiting so a supervisor restarts it as standby")
        return 1
    return 1 if failed else 0


def _start_http(sock, rt, daemon, metrics, token=None, drills=None):
    from skyfeast.scheduler.app.http import HttpServer, build_app
    from skyfeast.scheduler.app.routes import Api
    from skyfeast.scheduler.control.liveness import staleness_bounds

    bounds = staleness_bounds(rt.cfg)
    metrics.attach(daemon=daemon, pool=rt.pool, repo=rt.repo, liveness=rt.liveness, bounds=bounds,
                   freshness_slo=rt.cfg.feast.freshness_slo, ledger=rt.ledger)
    api = Api(cfg=rt.cfg, ledger=rt.ledger, pool=rt.pool, repo=rt.repo, token=token, drills=drills)
    app = build_app(daemon=daemon, liveness=rt.liveness, ledger=rt.ledger, metrics=metrics, bounds=bounds, api=api)
    server = HttpServer(sock)
    server.start(app)
    return server
