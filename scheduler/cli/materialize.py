"""``skyfeast materialize``: a drop-in for ``feast materialize START END``, run on Dask.

Reads each feature view's parquet batch source for ``[--start, --end)``, keeps
the newest row per entity and writes Feast's online format from the Dask
workers (:mod:`skyfeast.featurestore.materialize`).  Runs on a LocalCluster of
``--workers`` processes, or with ``-c`` on that config's providers, preferred
first, failing over on infrastructure errors.  Without ``-c``, an input of at
most ``--in-process-rows`` rows (parquet metadata) is written in this process
with the same writers and no cluster (:mod:`skyfeast.featurestore.inprocess`).

The result is printed before any cluster is torn down.  Run as the process's own
command line, the cluster's processes are then killed without a graceful
shutdown and the process exits at once; called from Python
(:func:`cmd_materialize`), the cluster is closed normally.  Exit status: 0 every
view written and recorded, 1 a view failed, 2 bad arguments (raised as
:class:`~skyfeast.scheduler.errors.UsageError`).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from skyfeast.scheduler.cli.common import failed_status, parse_time_arg, print_json, progress_bar
from skyfeast.scheduler.errors import Unavailable, UsageError

IN_PROCESS_ROWS = 500_000
"""Inputs up to this many rows are written without a cluster (measured: docs/benchmarks.md)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "materialize", help="load Feast feature views for a time range into the online store, on Dask",
        description="Drop-in for `feast materialize START END`: reads each view's parquet source for "
                    "[--start, --end), writes the newest row per entity from Dask workers, records the interval "
                    "in the Feast registry. Never blocks readers (no MATERIALIZING state).",
        epilog="exit status: 0 every view materialised; 1 a view failed; 2 bad arguments or repo, or every view "
               "that failed failed on its input (a data or config failure: a missing source or column, a null key)")
    p.add_argument("--feast-repo", metavar="PATH",
                   help="Feast repo (directory of feature_store.yaml); required unless -c is given, whose feast.repo "
                        "is then the default")
    p.add_argument("--feature-view", action="append", default=[], metavar="FV",
                   help="feature view to materialise (repeatable; default: every online, enabled view)")
    p.add_argument("--start", required=True, metavar="T", help="ISO-8601, inclusive (naive times are UTC)")
    p.add_argument("--end", required=True, metavar="T", help="ISO-8601, exclusive")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="run on this skyfeast.yaml's providers (preferred first, failing over) instead of a "
                        "local cluster")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local cluster (default 2)")
    p.add_argument("--in-process-rows", type=int, default=IN_PROCESS_ROWS, metavar="N",
                   help="without -c, write inputs of at most N rows (estimated from parquet metadata) in this "
                        f"process, with the same writers, instead of starting a cluster (default {IN_PROCESS_ROWS:,}; "
                        "0: always start one)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    # distributed is imported only when a cluster is used (about a second of a small run's start)
    p.set_defaults(func=cmd_materialize)


def _repo(args: argparse.Namespace, cfg) -> Path:
    if args.feast_repo:
        repo, where = Path(args.feast_repo).expanduser(), "--feast-repo"
    elif cfg is not None:
        repo, where = cfg.feast_repo, f"{args.config}: feast.repo"
    else:
        raise UsageError("--feast-repo is required unless -c/--config names a skyfeast.yaml")
    if not repo.exists():
        raise UsageError(f"{where}: {repo} does not exist")
    if not (repo / "feature_store.yaml").is_file():
        raise UsageError(f"{where}: {repo} has no feature_store.yaml")
    return repo


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _view_dict(v) -> dict[str, Any]:
    return {"feature_view": v.feature_view, "status": "succeeded" if v.ok else "failed", "rows": v.rows,
            "values": v.values, "rows_in": v.rows_in, "partitions": v.partitions, "seconds": v.seconds,
            "rows_per_s": _rate(v.rows, v.seconds), "values_per_s": _rate(v.values, v.seconds), "error": v.error,
            "failure_class": v.failure_class}


def cmd_materialize(args: argparse.Namespace) -> int:
    started = time.time()
    start, end = parse_time_arg(args.start, "--start"), parse_time_arg(args.end, "--end")
    if end <= start:
        raise UsageError(f"--end ({end.isoformat()}) must be after --start ({start.isoformat()})")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.in_process_rows < 0:
        raise UsageError("--in-process-rows must be at least 0")
    cfg = None
    if args.config:
        from skyfeast.scheduler.config import load_config

        cfg = load_config(args.config, check_imports=False, check_feast=False)
    repo = _repo(args, cfg)

    from skyfeast.featurestore.materialize import MaterializeError, prepare_plans
    from skyfeast.featurestore.repo import FeastRegistryUnreachable, FeastRepoError

    t0 = time.monotonic()
    try:
        feast_repo, plans = prepare_plans(repo, args.feature_view or None, start, end)
    except FeastRegistryUnreachable as exc:
        raise Unavailable(str(exc)) from None  # exit 1: the server, not the input
    except (MaterializeError, FeastRepoError) as exc:
        raise UsageError(str(exc)) from None
    phases: dict[str, float | None] = {"started": started, "repo_loaded": time.time(), "cluster_ready": None}
    mode = "cluster"
    if cfg is None and args.in_process_rows > 0:
        from skyfeast.featurestore.inprocess import input_rows

        rows = input_rows(plans)
        if rows is not None and rows <= args.in_process_rows:
            mode = "in-process"

    with contextlib.ExitStack() as stack:  # the cluster, if one is started: torn down after the output
        if mode == "in-process":
            from skyfeast.featurestore.inprocess import run_in_process

            with _bar(args) as progress:
                per_view = run_in_process(plans, progress=progress, record=feast_repo.record_materialization)
            provider = "local"
        else:
            per_view, provider = _run_on_cluster(args, cfg, plans, feast_repo, stack, phases)
        from skyfeast.featurestore.materialize import make_result

        result = make_result(per_view, t0, provider)
        failed = None if result.ok else "; ".join(f"{v.feature_view}: {v.error}" for v in per_view.values()
                                                  if v.error)
        firsts = [v.first_write_at for v in per_view.values() if v.first_write_at is not None]
        lasts = [v.last_write_at for v in per_view.values() if v.last_write_at is not None]
        phases.update(first_write=min(firsts, default=None), last_write=max(lasts, default=None),
                      result=time.time())
        _report(args, result, failed, repo, start, end, mode, phases)
        if getattr(args, "process_exit", False) and cfg is None:
            # This is the process's own command line and the output is out: the local cluster's
            # processes are killed without a graceful shutdown (their work is done and recorded)
            # and main() ends the process at once (see skyfeast.scheduler.cli.main).  -c's
            # providers may be clusters elsewhere that only a graceful close releases: never so.
            for connector in _LOCAL_CLUSTERS:
                connector.abandon()
            stack.pop_all()
            args.exit_at_once = True
    return 0 if failed is None else failed_status([v.failure_class for v in per_view.values() if v.error])


_LOCAL_CLUSTERS: list = []  # local connectors this process started (abandoned at a fast exit)


@contextlib.contextmanager
def _bar(args: argparse.Namespace):
    bar = progress_bar("materialize", "partitions", quiet=args.json)
    task = bar.add_task("", total=None)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield progress


def _run_on_cluster(args, cfg, plans, feast_repo, stack: contextlib.ExitStack, phases: dict):
    """Every plan on the local cluster (started here) or on ``-c``'s providers, failing over."""
    import distributed  # noqa: F401  (its import configures its loggers: quiet them after)

    from skyfeast.featurestore.engine import quiet_dask
    from skyfeast.featurestore.materialize import run_with_failover
    from skyfeast.scheduler.cli.console import err
    from skyfeast.scheduler.cli.main import quiet_libraries

    if hasattr(args, "verbose"):  # main() set up logging before distributed was imported: redo its part
        quiet_libraries(args.verbose)

    def failover(provider: str, reason: str) -> None:
        err.print(f"skyfeast: provider {provider} failed ({reason}); trying the next one", markup=False)

    def timed(connect):
        def connect_and_note():
            client = connect()
            phases["cluster_ready"] = phases["cluster_ready"] or time.time()
            return client
        return connect_and_note

    stack.enter_context(quiet_dask())
    if cfg is not None:
        from skyfeast.scheduler.app import engine_providers

        providers = stack.enter_context(engine_providers(args.config))
    else:
        from skyfeast.adapters.clusters.local import LocalConnector
        from skyfeast.scheduler.control.providers import LOCAL_PRELOAD

        local = LocalConnector(workers=args.workers, threads=1, memory_limit="auto", name="materialize",
                               preload=LOCAL_PRELOAD)
        _LOCAL_CLUSTERS.append(local)
        stack.callback(_LOCAL_CLUSTERS.remove, local)
        stack.callback(local.close)
        providers = [("local", local.connect)]
    with _bar(args) as progress:
        return run_with_failover(plans, [(name, timed(connect)) for name, connect in providers],
                                 progress=progress, record=feast_repo.record_materialization, on_failover=failover)


def _report(args, result, failed: str | None, repo: Path, start, end, mode: str, phases: dict) -> None:
    views = [_view_dict(v) for _, v in sorted(result.per_view.items())]
    summary = {
        "ok": failed is None, "feast_repo": str(repo), "start": start.isoformat(), "end": end.isoformat(),
        "provider": result.provider, "mode": mode, "rows": result.rows, "values": result.values,
        "seconds": result.seconds, "rows_per_s": _rate(result.rows, result.seconds),
        "values_per_s": _rate(result.values, result.seconds), "views": views, "error": failed,
        "phases": phases,
    }
    if args.json:
        print_json(summary)
    else:
        _print_human(summary)


def _print_human(s: dict[str, Any]) -> None:
    from skyfeast.scheduler.cli.console import out, table

    out.print(table(f"materialize {s['start']} → {s['end']} ({s['provider']}, {s['mode']})",
                    ["feature view", "status", "rows", "values", "partitions", "seconds", "rows/s", "values/s", "error"],
                    [[v["feature_view"], v["status"], f"{v['rows']:,}", f"{v['values']:,}", v["partitions"],
                      f"{v['seconds']:.2f}", f"{v['rows_per_s']:,.0f}", f"{v['values_per_s']:,.0f}", v["error"]]
                     for v in s["views"]]))
    empty = [v["feature_view"] for v in s["views"] if v["status"] == "succeeded" and not v["rows_in"]]
    if empty:  # a range that misses the data: say so rather than only print zeros
        out.print(f"no source rows inside [{s['start']}, {s['end']}) for {', '.join(empty)}: the range is half-open "
                  "(as Feast's), so a row stamped exactly at --end is left out", markup=False)
    verdict = "materialised" if s["ok"] else "FAILED after writing"
    out.print(f"{verdict} {s['rows']:,} rows ({s['values']:,} feature values) in {s['seconds']:.2f}s: "
              f"{s['rows_per_s']:,.0f} rows/s, {s['values_per_s']:,.0f} values/s "
              "(wall clock, including Feast repo load and any cluster start)", markup=False)


__all__ = ["cmd_materialize", "register"]
