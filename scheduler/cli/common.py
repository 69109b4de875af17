"""What every command module shares: its flags, argument parsing, JSON output, signals.

Command modules import from here, never from each other.  This module stays light
(argparse, json): ``skyfeast --help`` imports every command module.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime, timezone
from typing import Any

from skyfeast.scheduler.errors import UsageError

UTC = timezone.utc


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("SKYFEAST_CONFIG", "skyfeast.yaml"),
                   help="path of skyfeast.yaml (default: $SKYFEAST_CONFIG or ./skyfeast.yaml)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def parse_time_arg(value: str, flag: str) -> datetime:
    """An ISO-8601 instant (or ``now``) given to ``flag``; :class:`UsageError` naming the flag otherwise."""
    from skyfeast.scheduler.timing.windows import parse_time

    try:
        return parse_time(value)
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not an ISO-8601 time (e.g. 2026-11-28T09:00:00Z)") from None


def parse_at(value: str | None) -> datetime:
    """``--at``: the given instant, or now."""
    return datetime.now(UTC) if value is None else parse_time_arg(value, "--at")


def job_named(cfg, name: str):
    """The job called ``name``; :class:`UsageError` listing the defined ones otherwise."""
    try:
        return cfg.job(name)
    except KeyError:
        raise UsageError(f"unknown job {name!r}; defined: {sorted(j.name for j in cfg.jobs)}") from None


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def safe_url(url: str) -> str:
    """``url`` with its password masked, for output."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def install_signal_handlers(on_stop) -> None:
    import faulthandler

    # ops aid: `kill -USR1 <pid>` prints every thread's stack to stderr
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def handler(signum, _frame):
        on_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def progress_bar(label: str, unit: str = "", *, quiet: bool = False):
    """A rich bar on stderr for ``label`` (count and elapsed time); start it with ``with``.

    Disabled with ``quiet`` (``--json``) and when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from skyfeast.scheduler.cli.console import err

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    return Progress(*columns, TimeElapsedColumn(), console=err, disable=quiet or not err.is_terminal)
