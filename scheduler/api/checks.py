"""Checks of operator input shared by the CLI and the daemon's HTTP API: job names, times, windows.

Each raises a :class:`~skyfeast.scheduler.errors.UsageError` (:class:`~skyfeast.scheduler.errors.NotFound`
for an unknown job) naming the flag or field it was given as. Light: the CLI imports it for ``--help``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from skyfeast.scheduler.errors import NotFound, UsageError

UTC = timezone.utc


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


def job_named(cfg, name: str):
    """The job called ``name``; :class:`NotFound` (a :class:`UsageError`) listing the defined ones otherwise."""
    try:
        return cfg.job(name)
    except KeyError:
        raise NotFound(f"unknown job {name!r}; defined: {sorted(j.name for j in cfg.jobs)}") from None


def parse_window(text: str, flag: str):
    """``START/END`` (ISO-8601 instants) given to ``flag`` as a :class:`~skyfeast.scheduler.timing.windows.Window`."""
    from skyfeast.scheduler.timing.windows import Window

    start_s, sep, end_s = str(text).partition("/")
    if not sep:
        raise UsageError(f"{flag}: expected START/END, got {str(text)[:120]!r}")
    try:
        return Window(parse_time_arg(start_s, flag), parse_time_arg(end_s, flag))
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


__all__ = ["EARLIEST", "LATEST", "job_named", "parse_time_arg", "parse_window", "require_closed", "require_on_grid"]
