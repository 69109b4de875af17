"""Human output: progress display and tables (rich, on stderr/stdout)."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:  # annotations only: the runner imports pandas and the executor (seconds on a loaded host)
    from skyfeast.scheduler.run.runner import Outcome
    from skyfeast.scheduler.timing.windows import Window

err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)

_STYLE = {"succeeded": "green", "failed": "red", "skipped": "yellow", "cancelled": "magenta", "running": "cyan", "interrupted": "yellow",
          "upstream_failed": "yellow", "partial": "yellow"}


class ProgressReporter:
    """Live bar per running run on a terminal; one log line per event otherwise (CI logs, pipes).

    With ``total`` (the runs of a ``skyfeast run``), one overall bar counts the ended runs and
    each run's own bar goes away once it ends; without a terminal each ended run's line is
    numbered (``[12/1000]``)."""

    def __init__(self, *, quiet: bool = False, total: int | None = None):
        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self.total = total
        self.ended = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._tasks: dict[tuple[str, Window], Any] = {}
        self._progress = Progress(
            TextColumn("[bold]{task.fields[job]}[/] {task.fields[window]} on {task.fields[provider]}"),
            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=total is not None,
        ) if self.live else None
        self._overall = None

    def __enter__(self) -> "ProgressReporter":
        if self._progress:
            if self.total is not None:
                self._overall = self._progress.add_task("", total=self.total, job="all runs", window="",
                                                        provider="0 failed")
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the live bars (before a summary is printed); ending twice is harmless."""
        if self._progress:
            self._progress.stop()

    def attempt(self, job: str, window: Window, provider: str, number: int) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._progress:
                key = (job, window)
                if key in self._tasks:
                    self._progress.update(self._tasks[key], provider=f"{provider} (attempt {number})", completed=0)
                else:
                    self._tasks[key] = self._progress.add_task("", total=None, job=job, window=str(window), provider=provider)
            else:
                err.print(escape(f"[{job}] {window}: attempt {number} on {provider}"))

    def progress(self, job: str, window: Window, done: int, total: int) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._progress and (job, window) in self._tasks:
                self._progress.update(self._tasks[(job, window)], completed=done, total=total)
            elif not self._progress and (done == total or done == 0):
                err.print(escape(f"[{job}] {window}: {done}/{total} partitions"))

    def finished(self, o: Outcome) -> None:
        with self._lock:
            self.ended += 1
            self.failed += o.status not in ("succeeded", "skipped")
        if self.quiet:
            return
        detail = o.reason or o.error or f"{o.rows:,} rows, {o.partitions} partitions, {o.seconds:.1f}s"
        count = f"[{self.ended}/{self.total}] " if self.total is not None else ""
        with self._lock:
            task = self._tasks.pop((o.job, o.window), None)
            if self._overall is not None:
                if task is not None:
                    self._progress.remove_task(task)
                self._progress.update(self._overall, completed=self.ended, provider=f"{self.failed} failed")
                if o.status in ("succeeded", "skipped"):
                    return  # the overall bar counts it; failures are printed
            err.print(escape(f"{count}[{o.job}] {o.window}: ") + f"[{_STYLE.get(o.status, 'white')}]{o.status}[/] "
                      + escape(detail))


def outcomes_table(outcomes: list[Outcome]) -> Table:
    t = Table(title="runs", title_justify="left")
    for col in ("job", "window", "status", "provider", "attempts", "rows", "seconds", "detail"):
        t.add_column(col, justify="right" if col in ("attempts", "rows", "seconds") else "left")
    for o in outcomes:
        t.add_row(escape(o.job), str(o.window), f"[{_STYLE.get(o.status, 'white')}]{o.status}[/]", o.provider or "-",
                  str(o.attempts), f"{o.rows:,}", f"{o.seconds:.1f}", escape(o.reason or o.error or ""))
    return t


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("-" if v is None else escape(str(v)) for v in r))
    return t


def plain_table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    """``table``'s content as aligned plain text: for listings of thousands of rows."""
    cells = [columns, *([("-" if v is None else str(v)) for v in r] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [title, *("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)]
    return "\n".join(lines) + "\n"


def is_tty() -> bool:
    return sys.stdout.isatty()
