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

from skyfeast.scheduler.api.checks import (  # noqa: F401  (shared with the HTTP API; re-exported for commands)
    EARLIEST,
    LATEST,
    job_named,
    parse_time_arg,
    require_closed,
    require_on_grid,
)
from skyfeast.scheduler.errors import UsageError  # noqa: F401

UTC = timezone.utc


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("SKYFEAST_CONFIG", "skyfeast.yaml"),
                   help="path of skyfeast.yaml (default: $SKYFEAST_CONFIG or ./skyfeast.yaml)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


# the largest id a ledger row can have: runs.id is an INTEGER, 32 bits in PostgreSQL (as the HTTP API's MAX_ID)
MAX_ID = 2**31 - 1
MAX_VERSION = 2**31 - 1  # a model version (a 32-bit integer column)
MAX_LIMIT = 1_000_000  # rows a listing may ask for


def int_arg(lo: int, hi: int):
    """An argparse ``type`` for an integer in ``[lo, hi]``: anything else is argparse's usage error (exit 2),
    never a number the ledger cannot store."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text[:40]} is out of range: {lo:,} to {hi:,}")
        return v
    return parse


def seconds_arg(lo: float, hi: float):
    """An argparse ``type`` for seconds in ``[lo, hi]``: NaN, infinities and out-of-range values are usage errors."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        if not lo <= v <= hi:  # also false for NaN
            raise argparse.ArgumentTypeError(f"{text[:40]} is out of range: {lo:g} to {hi:g} seconds")
        return v
    return parse


def parse_at(value: str | None) -> datetime:
    """``--at``: the given instant, or now."""
    return datetime.now(UTC) if value is None else parse_time_arg(value, "--at")


def window_text(start: datetime | str, end: datetime | str) -> str:
    """A window as every human output of the CLI prints it: ``2026-03-02T11:00:00Z/2026-03-02T12:00:00Z``."""
    from skyfeast.scheduler.timing.windows import Window, parse_time

    return str(Window(*(parse_time(t) if isinstance(t, str) else t.astimezone(UTC) for t in (start, end))))


def yes_no(value: object) -> str:
    """``yes``/``no`` for a flag (None stays unknown: ``-``)."""
    return "-" if value is None else ("yes" if value else "no")


#: failure classes (skyfeast.adapters.failures) that are the input's fault: bad data, bad config
INPUT_FAILURES = frozenset({"data", "config"})


def failed_status(classes: list[str | None]) -> int:
    """Exit status of a command whose runs failed with ``classes``: 2 (bad input: what the standard
    gives bad config, data or arguments) when every one of them failed on its input, 1 otherwise
    (the infrastructure, user code, a timeout or a cancellation: trying again may succeed)."""
    return 2 if classes and all(c in INPUT_FAILURES for c in classes) else 1


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def safe_url(url: str) -> str:
    """``url`` with its password masked, for output (:func:`skyfeast.scheduler.api.views.safe_url`)."""
    from skyfeast.scheduler.api.views import safe_url as _safe_url

    return _safe_url(url)


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
