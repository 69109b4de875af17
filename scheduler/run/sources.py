"""Resolve a job's source pattern to object keys for one window."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone

from skyfeast.adapters.base import ObjectStore
from skyfeast.scheduler.errors import DataError

UTC = timezone.utc
_ALLOWED = {"start", "end", "date"}


def placeholders(pattern: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        raise DataError(f"source path {pattern!r}: {exc}") from None


def expand(pattern: str, start: datetime, end: datetime) -> list[str]:
    """Concrete glob patterns for [start, end).

    ``{start}``/``{end}`` take an optional strftime spec (``{start:%Y%m%d}``);
    ``{date}`` yields one pattern per UTC day the range touches (``%Y-%m-%d``,
    or its own spec: ``{date:%Y/%m/%d}``).
    """
    fields = placeholders(pattern)
    unknown = fields - _ALLOWED
    if unknown:
        raise DataError(f"source path {pattern!r} has unknown placeholder(s) {sorted(unknown)}; allowed: start, end, date")
    s, e = start.astimezone(UTC), end.astimezone(UTC)
    days: list[datetime] = [s]
    if "date" in fields:
        d = s.replace(hour=0, minute=0, second=0, microsecond=0)
        days = []
        while d < e:
            days.append(d)
            d += timedelta(days=1)
    out = []
    for d in days:
        out.append(_format(pattern, start=s, end=e, date=d))
    return list(dict.fromkeys(out))


class _Fmt(string.Formatter):
    def format_field(self, value, format_spec):  # type: ignore[override]
        if isinstance(value, datetime):
            if not format_spec:
                return value.strftime("%Y-%m-%d") if getattr(value, "_is_date", False) else value.strftime("%Y-%m-%dT%H:%M:%SZ")
            return value.strftime(format_spec)
        return super().format_field(value, format_spec)


class _Day(datetime):
    _is_date = True


def _format(pattern: str, *, start: datetime, end: datetime, date: datetime) -> str:
    day = _Day(date.year, date.month, date.day, tzinfo=UTC)
    return _Fmt().format(pattern, start=start, end=end, date=day)


def resolve(store: ObjectStore, pattern: str, start: datetime, end: datetime,
            window_start: datetime | None = None) -> list[str]:
    """Keys in ``store`` matching the expanded pattern; DataError if none.

    With ``window_start`` (the window's own start, where ``start`` may reach back a lookback), a ``{date}``
    pattern must match a file for every day the window itself touches: a window computed without its own
    day's input would publish features that look fresh and are not. Days of the lookback before the window
    may have none (data that began recently). A pattern that also holds ``{start}`` or ``{end}`` is not checked
    day by day."""
    keys: list[str] = []
    empty: set[str] = set()  # expanded patterns that matched nothing (each listed once: a LIST call on a bucket)
    for p in expand(pattern, start, end):
        found = store.glob(p)
        keys += found
        if not found:
            empty.add(p)
    keys = sorted(dict.fromkeys(keys))
    fields = placeholders(pattern)
    # a pattern with {start} or {end} beside {date} expands differently from a later start: checked only whole
    if keys and empty and window_start is not None and "date" in fields and not fields & {"start", "end"}:
        missing = [p for p in expand(pattern, max(start, window_start), end) if p in empty]
        if missing:
            w, e = window_start.astimezone(UTC), end.astimezone(UTC)
            raise DataError(f"no source file matches {missing[0]!r} under {store.url()}: the window "
                            f"{w:%Y-%m-%dT%H:%M:%SZ}/{e:%Y-%m-%dT%H:%M:%SZ} has no input for a day it covers "
                            f"(files of {len(keys)} other match(es) of {pattern!r} are there)")
    if not keys:
        s, e = start.astimezone(UTC), end.astimezone(UTC)
        raise DataError(f"no source files match {pattern!r} for {s:%Y-%m-%dT%H:%M:%SZ}/{e:%Y-%m-%dT%H:%M:%SZ} under {store.url()}")
    return keys
