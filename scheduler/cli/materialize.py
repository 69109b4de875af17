"""``skyfeast materialize``: a drop-in for ``feast materialize START END``, run on Dask.

Reads each feature view's parquet batch source for ``[--start, --end)``, keeps
the newest row per entity and writes Feast's online format from the Dask
workers (:mod:`skyfeast.featurestore.materialize`).  Runs on a LocalCluster of
``--workers`` processes, or with ``-c`` on that config's providers, preferred
first, failing over on infrastructure errors.  Exit status: 0 every view
written and recorded, 1 a view failed, 2 bad arguments (raised as
:class:`~skyfeast.scheduler.errors.UsageError`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skyfeast.scheduler.cli.common import parse_time_arg, print_json, progress_bar
from skyfeast.scheduler.errors import UsageError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "materialize", help="load Feast feature views for a time range into the online store, on Dask",
        description="Drop-in for `feast materialize START END`: reads each view's parquet source for "
                    "[--start, --end), writes the newest row per entity from Dask workers, records the interval "
                    "in the Feast registry. Never blocks readers (no MATERIALIZING state).")
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
    p.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.set_defaults(func=cmd_materialize)


def _repo(args: argparse.Namespace, cfg) -> Path:
    if args.feast_repo:
        repo = Path(args.feast_repo).expanduser()
    elif cfg is not None:
        repo = cfg.feast_repo
    else:
        raise UsageError("--feast-repo is required unless -c/--config names a skyfeast.yaml")
    if not (repo / "feature_store.yaml").is_file():
        raise UsageError(f"--feast-repo: {repo} has no feature_store.yaml")
    return repo


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _view_dict(v) -> dict[str, Any]:
    return {"feature_view": v.feature_view, "status": "succeeded" if v.ok else "failed", "rows": v.rows,
            "values": v.values, "rows_in": v.rows_in, "partitions": v.partitions, "seconds": v.seconds,
            "rows_per_s": _rate(v.rows, v.seconds), "values_per_s": _rate(v.values, v.seconds), "error": v.error}


def cmd_materialize(args: argparse.Namespace) -> int:
    import contextlib

    from skyfeast.featurestore.materialize import (
        MaterializeError,
        MaterializeFailed,
        materialize_with_failover,
    )
    from skyfeast.featurestore.repo import FeastRepoError

    start, end = parse_time_arg(args.start, "--start"), parse_time_arg(args.end, "--end")
    if end <= start:
        raise UsageError(f"--end ({end.isoformat()}) must be after --start ({start.isoformat()})")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    cfg = None
    if args.config:
        from skyfeast.scheduler.config import load_config

        cfg = load_config(args.config, check_imports=False, check_feast=False)
    repo = _repo(args, cfg)

    from skyfeast.scheduler.cli.console import err

    bar = progress_bar("materialize", "partitions", quiet=args.json)
    task = bar.add_task("", total=None)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    def failover(provider: str, reason: str) -> None:
        err.print(f"skyfeast: provider {provider} failed ({reason}); trying the next one", markup=False)

    from skyfeast.featurestore.engine import quiet_dask
    from skyfeast.scheduler.app import engine_providers

    failed = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_dask())
        if cfg is not None:
            providers = stack.enter_context(engine_providers(args.config))
        else:
            from skyfeast.adapters.clusters.local import LocalConnector
            from skyfeast.scheduler.control.providers import LOCAL_PRELOAD

            local = LocalConnector(workers=args.workers, threads=1, memory_limit="auto", name="materialize",
                                   preload=LOCAL_PRELOAD)
            stack.callback(local.close)
            providers = [("local", local.connect)]
        stack.enter_context(bar)
        try:
            result = materialize_with_failover(repo, args.feature_view or None, start, end, providers=providers,
                                               progress=progress, on_failover=failover)
        except MaterializeFailed as exc:
            result, failed = exc.result, exc
        except (MaterializeError, FeastRepoError) as exc:
            raise UsageError(str(exc)) from None
    views = [_view_dict(v) for _, v in sorted(result.per_view.items())]
    summary = {
        "ok": failed is None, "feast_repo": str(repo), "start": start.isoformat(), "end": end.isoformat(),
        "provider": result.provider, "rows": result.rows, "values": result.values, "seconds": result.seconds,
        "rows_per_s": _rate(result.rows, result.seconds), "values_per_s": _rate(result.values, result.seconds),
        "views": views, "error": str(failed) if failed else None,
    }
    if args.json:
        print_json(summary)
    else:
        _print_human(summary)
    return 0 if failed is None else 1


def _print_human(s: dict[str, Any]) -> None:
    from skyfeast.scheduler.cli.console import out, table

    out.print(table(f"materialize {s['start']} → {s['end']} ({s['provider']})",
                    ["feature view", "status", "rows", "values", "partitions", "seconds", "rows/s", "values/s", "error"],
                    [[v["feature_view"], v["status"], f"{v['rows']:,}", f"{v['values']:,}", v["partitions"],
                      f"{v['seconds']:.2f}", f"{v['rows_per_s']:,.0f}", f"{v['values_per_s']:,.0f}", v["error"]]
                     for v in s["views"]]))
    verdict = "materialised" if s["ok"] else "FAILED after writing"
    out.print(f"{verdict} {s['rows']:,} rows ({s['values']:,} feature values) in {s['seconds']:.2f}s: "
              f"{s['rows_per_s']:,.0f} rows/s, {s['values_per_s']:,.0f} values/s "
              "(wall clock, including Feast repo load and cluster start)", markup=False)


__all__ = ["cmd_materialize", "register"]
