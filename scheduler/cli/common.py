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


EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # beyond: a typo, and schedules' date arithmetic overflows


def parse_time_arg(value: str, flag: str) -> datetime:
    """An ISO-8601 instant (or ``now``) given to ``flag``, between 1971 and 2200; :class:`UsageError`
    naming the flag otherwise."""
    from skyfeast.scheduler.timing.windows import parse_time

    try:
        t = parse_time(value)
    except (ValueError, OverflowError):
        raise UsageError(f"{flag}: {value[:60]!r} is not an ISO-8601 time (e.g. 2026-11-28T09:00:00Z)") from None
    if not EARLIEST <= t < LATEST:
        raise UsageError(f"{flag}: {value!r} is out of range ({EARLIEST:%Y} to {LATEST:%Y})")
    return t


def require_closed(window, flag: str) -> None:
    """:class:`UsageError` for a window that ends after now: its data is not all there yet, and its
    values, written with a future event time, would win over every real window after it."""
    now = datetime.now(UTC)
    if window.end > now:
        raise UsageError(f"{flag}: window {window} ends after now ({now:%Y-%m-%dT%H:%M:%SZ}); "
                         "a window runs once it has closed")


def require_on_grid(schedule, window, flag: str) -> None:
    """:class:`UsageError` for a window that is not one of ``schedule``'s windows."""
    from datetime import timedelta

    from skyfeast.scheduler.timing.windows import next_fires, window_for_fire

    fires = next_fires(schedule, window.end - timedelta(microseconds=1), 1)
    if fires != [window.end] or window_for_fire(schedule, window.end) != window:
        raise UsageError(f"{flag}: window {window} is not on the job's schedule; give one of its windows "
                         "(see `skyfeast plan`), or --allow-off-grid to run it anyway")


def parse_at(value: str | None) -> datetime:
    """``--at``: the given instant, or now."""
    return datetime.now(UTC) if value is None else parse_time_arg(value, "--at")


def job_named(cfg, name: str):
    """The job called ``name``; :class:`UsageError` listing the defined ones otherwise."""
    try:
        return cfg.job(name)
    except KeyError:
        raise UsageError(f"unknown job {name!r}; defined: {sorted(j.name for j in cfg.jobs)}") from None


def window_text(start: datetime | str, end: datetime | str) -> str:
    """A window as every human output of the CLI prints it: ``2026-03-02T11:00:00Z/2026-03-02T12:00:00Z``."""
    from skyfeast.scheduler.timing.windows import Window, parse_time

    return str(Window(*(parse_time(t) if isinstance(t, str) else t.astimezone(UTC) for t in (start, end))))


def yes_no(value: object) -> str:
    """``yes``/``no`` for a flag (None stays unknown: ``-``)."""
    return "-" if value is None else ("yes" if value else "no")


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
