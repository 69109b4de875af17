"""Windows and fire times.

The window a fire processes is [previous fire, this fire). Two libraries, each for
what it does well; neither keeps state (run deduplication lives in the ledger,
never in APScheduler's job stores):

* APScheduler 3 (named by the design) decides *when a schedule fires*: every fire the
  daemon dispatches, and both bounds of every window, are its fire times, with its
  daylight-saving behaviour. A wall time a fall-back repeats fires twice, once per
  UTC instant. A wall time a spring-forward skips fires, if at all, read with the
  offset before the change (``30 2 * * *`` in Berlin fires at 01:30Z on 2026-03-29);
  whether it fires depends on the path APScheduler takes to it (``9 1,2 * * *`` in
  New York has no 02:09 on 2026-03-08).
* cronsim walks a crontab *backwards*, which APScheduler 3 cannot, so it proposes
  where the previous fire is; APScheduler confirms (see :func:`previous_fire`). A
  window so starts at APScheduler's previous fire even where cronsim's DST rules
  (Debian cron's: the skipped 02:30 at 03:00, a repeated 02:30 once) differ.

Known APScheduler 3 defect (agronholm/apscheduler#529, still in 3.11.3): it steps a
day by adding 24 hours, so across a spring-forward a fire in the local hour(s) before
the change is followed by none the next day: ``0 0 * * *`` in America/New_York skips
2026-03-09 00:00 EDT, ``0 0 * * 1`` in Europe/Berlin skips 2026-03-30. The window of
the next fire starts at the skipped one, so events from the fire before it to the
skipped fire (a day of a daily job) fall in no window; see the xfail test
``test_apscheduler_fires_the_day_after_spring_forward`` in tests/unit/test_windows.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cronsim import CronSim, CronSimError

from skyfeast.scheduler.config import CronSchedule, IntervalSchedule, ParquetSource
from skyfeast.scheduler.errors import UsageError

UTC = timezone.utc


@dataclass(frozen=True, order=True)
class Window:
    """A half-open interval [start, end) of event time, in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")

    @property
    def tag(self) -> str:
        """Stable file-name-safe id, e.g. ``20261128T090000-20261128T100000``."""
        return f"{self.start.astimezone(UTC):%Y%m%dT%H%M%S}-{self.end.astimezone(UTC):%Y%m%dT%H%M%S}"

    @classmethod
    def from_tag(cls, tag: str) -> "Window | None":
        """The window of a :attr:`tag` (whole seconds), or None if ``tag`` is not one."""
        try:
            start, end = (datetime.strptime(t, "%Y%m%dT%H%M%S").replace(tzinfo=UTC) for t in tag.split("-"))
            return cls(start, end)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}/{self.end.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"

    def read_range(self, source: ParquetSource) -> tuple[datetime, datetime]:
        """Event-time range a parquet source is read over for this window."""
        if source.lookback is not None:
            return self.end - source.lookback, self.end
        return self.start, self.end


def parse_time(value: str) -> datetime:
    """ISO-8601 → aware UTC datetime. ``now`` is accepted. Naive times are UTC."""
    if value.strip().lower() == "now":
        return datetime.now(UTC)
    v = value.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(v)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


_CRON_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_dow(value: str, *, upper: bool = False) -> int:
    v = value.strip().lower()
    if v.isdigit() and int(v) <= 7:
        return int(v)
    if v in _CRON_DOW:
        return 7 if upper and v == "sun" else _CRON_DOW.index(v)
    raise ValueError(value)


def _crontab_weekdays(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as APScheduler 3 weekday names.

    APScheduler 3's ``from_crontab`` reads weekday numbers with 0 = Monday
    (its issue #286), so ``0 9 * * 1`` would fire on Tuesdays. Names mean the
    same to both. Fields this does not understand are passed through.
    """
    if field == "*":
        return field
    days: set[int] = set()
    try:
        for part in field.split(","):
            rng, slash, step = part.partition("/")
            every = int(step) if slash else 1
            if every < 1:
                raise ValueError(part)
            if rng == "*":
                lo, hi = 0, 6
            elif "-" in rng:
                a, b = rng.split("-", 1)
                lo, hi = _cron_dow(a), _cron_dow(b, upper=True)
            else:
                lo = _cron_dow(rng)
                hi = 6 if slash else lo
            if hi < lo:
                raise ValueError(part)
            days.update(d % 7 for d in range(lo, hi + 1, every))
    except ValueError:
        return field
    return ",".join(_CRON_DOW[d] for d in sorted(days))


class _CrontabTrigger(CronTrigger):
    """A CronTrigger that keeps, for cronsim, the crontab it fires on (weekdays as names)."""

    __slots__ = ("crontab",)


@lru_cache(maxsize=4096)
def _cron_trigger(expr: str, tz: str) -> _CrontabTrigger:
    # cached: window_for_fire runs per due job per tick, and a trigger is read-only once made
    minute, hour, day, month, dow = expr.split()
    days = _crontab_weekdays(dow)
    trig = _CrontabTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=days, timezone=tz)
    # cronsim reads a restricted day *and* weekday as "either" (cron's rule), APScheduler as
    # "both": its probes then keep the day and drop the weekday, a superset that stays sparse
    probe_days = "*" if days == ",".join(_CRON_DOW) or not day.startswith("*") else days
    trig.crontab = f"{minute} {hour} {day} {month} {probe_days}"
    return trig


def make_trigger(schedule: CronSchedule | IntervalSchedule) -> BaseTrigger:
    if isinstance(schedule, CronSchedule):
        return _cron_trigger(schedule.expr, schedule.timezone)
    anchor = parse_time(schedule.anchor)
    return IntervalTrigger(seconds=schedule.every.total_seconds(), start_date=anchor, timezone=UTC)


@lru_cache(maxsize=16384)
def next_fire(trigger: BaseTrigger, after: datetime) -> datetime | None:
    """First fire time strictly after ``after``.  Memoised: thousands of jobs that share a cron
    expression (one cached trigger) fire at the same instant, and a daemon's tick asks for each."""
    # Always ask for "the first fire at or after a probe" (no previous fire time):
    # APScheduler 3's previous-fire path loses the DST fold and, inside the repeated
    # hour of a fall-back, returns the same instant forever (agronholm/apscheduler#1021,
    # fixed in 3.11.1; still needed while the dependency allows 3.10).
    step = timedelta(microseconds=1)
    t = trigger.get_next_fire_time(None, after + step)
    while t is not None and t <= after:  # defensive: never spin on a trigger that answers backwards
        step = max(step * 2, timedelta(seconds=1))
        t = trigger.get_next_fire_time(None, after + step)
    return None if t is None else t.astimezone(UTC)


def fire_at_or_after(trigger: BaseTrigger, when: datetime) -> datetime | None:
    t = trigger.get_next_fire_time(None, when)
    return None if t is None else t.astimezone(UTC)


# previous_fire looks back this far (2**20 minutes, about two years) and no further
_HORIZON = timedelta(minutes=2**20)


class NeverFired(UsageError, ValueError):
    """A schedule with no fire before the time asked (an interval whose anchor is later, or a cron
    schedule with none in two years): a usage error (exit 2), and a ValueError to the callers that
    catch one."""


def _latest_each_day(fires: Iterator[datetime]) -> Iterator[datetime]:
    """The latest of each (local) day's fires, from fires in descending order.

    Where a crontab fire is no APScheduler fire because the day is not one (a probe
    crontab that dropped the weekday), no other fire of that day is, so one check a day
    does; it keeps e.g. ``* * 1-7 * 0`` to a few checks instead of one a minute.
    """
    day = None
    for t in fires:
        if t.date() != day:
            day = t.date()
            yield t


def _probes(trigger: BaseTrigger, before: datetime) -> Iterator[datetime]:
    """Decreasing instants before ``before``, down to and ending at ``before - _HORIZON``.

    For a cron trigger these are the crontab's own previous fires, from cronsim; else
    (interval triggers, or a crontab cronsim does not read, e.g. APScheduler's ``last``
    day) ``before`` minus 1, 2, 4 ... minutes.
    """
    horizon = before - _HORIZON
    probes: Iterator[datetime] = (before - timedelta(minutes=2**k) for k in range(20))
    crontab = getattr(trigger, "crontab", None)
    if crontab is not None:
        try:
            probes = _latest_each_day(CronSim(crontab, before.astimezone(trigger.timezone), reverse=True))
        except CronSimError:
            pass
    for p in probes:
        if p <= horizon:
            break
        yield p
    yield horizon


def previous_fire(trigger: BaseTrigger, before: datetime) -> datetime:
    """APScheduler's last fire time strictly before ``before`` (searching back up to ~2 years).

    Each probe p (see :func:`_probes`) is checked with APScheduler: its first fire at or
    after p, if before ``before``, is walked forward to the last one before ``before``.
    Probes only decide where to look, never what is a fire, so the answer is APScheduler's
    whatever cronsim proposes. When cronsim's previous fire is APScheduler's (always
    outside DST changes, unless day and weekday are both restricted) this is one cronsim
    step and two APScheduler calls; the search it replaces tried 1, 2, 4 ... minutes back.
    """
    for probe in _probes(trigger, before):
        t = fire_at_or_after(trigger, probe)
        if t is not None and t < before:
            last = t
            while True:
                n = next_fire(trigger, last)
                if n is None or n >= before:
                    return last
                last = n
    raise NeverFired(f"the schedule never fired in the two years before {before:%Y-%m-%dT%H:%M:%SZ} "
                     "(an interval schedule fires from its anchor on)")


def window_for_fire(schedule: CronSchedule | IntervalSchedule, fire: datetime) -> Window:
    if isinstance(schedule, IntervalSchedule):
        return Window(fire - schedule.every, fire)
    return _cron_window(schedule.expr, schedule.timezone, fire)


@lru_cache(maxsize=16384)
def _cron_window(expr: str, tz: str, fire: datetime) -> Window:
    return Window(previous_fire(_cron_trigger(expr, tz), fire), fire)


def latest_window(schedule: CronSchedule | IntervalSchedule, now: datetime) -> Window:
    """The most recent *complete* window at ``now``: it ends at the last fire ≤ now."""
    trig = make_trigger(schedule)
    fire = fire_at_or_after(trig, now)
    last = fire if fire is not None and fire == now else previous_fire(trig, now)
    return window_for_fire(schedule, last)


def job_window(job, now: datetime) -> Window:
    """:func:`latest_window` of ``job``'s schedule; a schedule that never fired names the job."""
    try:
        return latest_window(job.schedule, now)
    except NeverFired as exc:
        raise NeverFired(f"job {job.name!r}: {exc}") from None


def next_fires(schedule: CronSchedule | IntervalSchedule, after: datetime, n: int) -> list[datetime]:
    trig = make_trigger(schedule)
    out: list[datetime] = []
    t = after
    for _ in range(n):
        nxt = next_fire(trig, t)
        if nxt is None:
            break
        out.append(nxt)
        t = nxt
    return out
