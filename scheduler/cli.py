"""``skyfeast`` command line.

Exit status: 0 success; 1 a run failed; 2 bad config, data or arguments
(one readable message, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from typing import Any

from scheduler import __version__
from scheduler.errors import UsageError, UserError

UTC = timezone.utc
EPILOG = """exit status: 0 ok, 1 a run failed, 2 bad config/data/arguments.
docs: README.md and docs/config.md"""


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("SKYFEAST_CONFIG", "skyfeast.yaml"),
                   help="path of skyfeast.yaml (default: $SKYFEAST_CONFIG or ./skyfeast.yaml)")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="skyfeast", description="Schedule feature and model jobs on Dask "
                                 "clusters across clouds and materialise them into Feast.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"skyfeast {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for Dask logs)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a config file (and the Feast repo it names)")
    _add_config(p)

    sub.add_parser("schema", help="print the JSON Schema of skyfeast.yaml")

    p = sub.add_parser("plan", help="next fire times, windows and placement of each job")
    _add_config(p)
    _add_json(p)
    p.add_argument("-n", "--count", type=int, default=3, help="fire times per job (default 3)")
    p.add_argument("--at", help="pretend the time is this ISO-8601 instant (default: now)")

    p = sub.add_parser("run", help="run jobs now for their latest complete window, wait, summarise")
    _add_config(p)
    _add_json(p)
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="job to run (repeatable; default: all). Upstream jobs are not added implicitly")
    p.add_argument("--once", action="store_true",
                   help="run one window per job and exit (the default; accepted for scripts)")
    p.add_argument("--at", help="run the window that is latest at this ISO-8601 instant (default: now)")
    p.add_argument("--force", action="store_true", help="re-run windows that already succeeded")

    p = sub.add_parser("daemon", help="run jobs on schedule until SIGINT/SIGTERM")
    _add_config(p)
    p.add_argument("--ticks", type=int, help="exit after dispatching this many ticks (for drills and demos)")
    p.add_argument("--max-parallel", type=int, help="concurrent runs (default: daemon.max_parallel, 4)")
    p.add_argument("--grace", type=float, help="seconds running work gets at shutdown (default: daemon.grace, 60)")

    p = sub.add_parser("status", help="providers, latest runs and feature view freshness")
    _add_config(p)
    _add_json(p)
    p.add_argument("--limit", type=int, default=10, help="latest runs to show (default 10)")
    p.add_argument("--probe", action="store_true", help="connect to every cluster and count workers "
                   "(starts local clusters)")

    p = sub.add_parser("trigger", help="ask the daemon to run one window of a job (queued in the ledger)")
    _add_config(p)
    _add_json(p)
    p.add_argument("job")
    p.add_argument("--window", metavar="START/END", help="ISO-8601 bounds (default: the job's latest complete window)")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to this long for the run to finish")

    p = sub.add_parser("backfill", help="run every window of a job between two times (resumable)")
    _add_config(p)
    _add_json(p)
    p.add_argument("job")
    p.add_argument("--start", required=True, help="ISO-8601; windows starting at or after this")
    p.add_argument("--end", required=True, help="ISO-8601; windows ending at or before this")
    p.add_argument("--parallel", type=int, default=1, help="windows at once (default 1)")
    p.add_argument("--force", action="store_true", help="re-run windows that already succeeded")

    p = sub.add_parser("cancel", help="cancel a queued or running run")
    _add_config(p)
    p.add_argument("run_id", type=int)

    p = sub.add_parser("drill", help="failover drill: break a provider mid-run and measure the recovery")
    _add_config(p)
    _add_json(p)
    p.add_argument("--provider", required=True, help="provider to break (must be the job's preferred one)")
    p.add_argument("--mode", choices=["kill", "hang", "partition", "storage-outage"], default=None,
                   help="kill: SIGKILL its scheduler; hang: SIGSTOP it (default: the scenario's, else kill)")
    p.add_argument("--job", help="job to run during the drill (default: the first feature job that can fail over)")
    p.add_argument("--scenario", help="YAML scenario with mode and SLOs (see ops/drills/)")

    p = sub.add_parser("cordon", help="keep new runs off a provider (persisted in the ledger)")
    _add_config(p)
    p.add_argument("provider")
    p.add_argument("--reason", help="shown in `skyfeast status`")

    p = sub.add_parser("uncordon", help="let new runs use a cordoned provider again")
    _add_config(p)
    p.add_argument("provider")

    p = sub.add_parser("reconcile", help="copy offline outputs written during failovers to the primary storage",
                       description="Copies every part file that a failed-over run wrote outside the primary "
                                   "provider's storage (offline.primary) to the same key there, removes stale "
                                   "parts, and writes the primary's manifest, so that Feast historical retrieval "
                                   "sees every window. The daemon's leader also does this every "
                                   "offline.reconcile_every. Exit 1 when something is still pending.")
    _add_config(p)
    _add_json(p)
    p.add_argument("--limit", type=int, default=None, help="runs per pass (default: offline.reconcile_batch)")
    p.add_argument("--all", action="store_true", help="repeat passes until nothing is pending or a pass fails")

    p = sub.add_parser("runs", help="list runs from the ledger")
    _add_config(p)
    _add_json(p)
    p.add_argument("--job")
    p.add_argument("--status", choices=["queued", "running", "interrupted", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)

    from scheduler.commands_materialize import add_parser as add_materialize_parser

    add_materialize_parser(sub)
    return ap


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    import distributed  # noqa: F401  (configures its loggers on import; override them below)

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Dask logs reconnect attempts of clients whose cluster we shut down ourselves, with tracebacks;
    # skyfeast reports failures of runs in its own words, so only -vv shows those libraries' logs
    quiet = logging.CRITICAL if verbose < 2 else logging.INFO
    for name in list(logging.root.manager.loggerDict):  # children too: dask config sets their levels
        if name.split(".")[0] in ("distributed", "dask", "feast", "tornado", "asyncio", "apscheduler"):
            logging.getLogger(name).setLevel(quiet)
    for noisy in ("distributed", "dask", "feast", "tornado", "asyncio", "apscheduler"):
        logging.getLogger(noisy).setLevel(quiet)
    logging.getLogger("skyfeast").setLevel(level)


def _parse_at(value: str | None) -> datetime:
    from scheduler.windows import parse_time

    if value is None:
        return datetime.now(UTC)
    try:
        return parse_time(value)
    except ValueError:
        raise UsageError(f"--at: {value!r} is not an ISO-8601 time (e.g. 2026-11-28T09:00:00Z)") from None


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    from scheduler import commands

    try:
        return commands.dispatch(args)
    except UserError as exc:
        sys.stderr.write(f"skyfeast: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("skyfeast: interrupted\n")
        return 130
    except Exception as exc:
        from featurestore.repo import FeastRepoError

        if isinstance(exc, FeastRepoError):
            sys.stderr.write(f"skyfeast: error: {exc}\n")
            return 2
        if args.debug:
            raise
        sys.stderr.write(f"skyfeast: internal error: {type(exc).__name__}: {exc}\n"
                         "(re-run with --debug for a traceback, and please report it)\n")
        return 70


def install_signal_handlers(on_stop) -> None:
    import faulthandler

    # ops aid: `kill -USR1 <pid>` prints every thread's stack to stderr
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def handler(signum, _frame):
        on_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
