"""Windows and fire times, computed with APScheduler 3.x triggers.

APScheduler is used for *timing only*: it tells when a schedule fires. The
window a fire processes is [previous fire, this fire). Run deduplication
lives in the ledger, never in APScheduler's job stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from skyfeast.scheduler.config import CronSchedule, IntervalSchedule, ParquetSource

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


def make_trigger(schedule: CronSchedule | IntervalSchedule) -> BaseTrigger:
    if isinstance(schedule, CronSchedule):
        minute, hour, day, month, dow = schedule.expr.split()
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_weekdays(dow),
                           timezone=schedule.timezone)
    anchor = parse_time(schedule.anchor)
    return IntervalTrigger(seconds=schedule.every.total_seconds(), start_date=anchor, timezone=UTC)


def next_fire(trigger: BaseTrigger, after: datetime) -> datetime | None:
    """First fire time strictly after ``after``."""
    # Always ask for "the first fire at or after a probe" (no previous fire time):
    # APScheduler 3's previous-fire path loses the DST fold and, inside the repeated
    # hour of a fall-back, returns the same instant forever.
    step = timedelta(microseconds=1)
    t = trigger.get_next_fire_time(None, after + step)
    while t is not None and t <= after:  # defensive: never spin on a trigger that answers backwards
        step = max(step * 2, timedelta(seconds=1))
        t = trigger.get_next_fire_time(None, after + step)
    return None if t is None else t.astimezone(UTC)


def fire_at_or_after(trigger: BaseTrigger, when: datetime) -> datetime | None:
    t = trigger.get_next_fire_time(None, when)
    return None if t is None else t.astimezone(UTC)


def previous_fire(trigger: BaseTrigger, before: datetime) -> datetime:
    """Last fire time strictly before ``before`` (searching back up to ~2 years)."""
    lookback = timedelta(minutes=1)
    while lookback < timedelta(days=800):
        t = fire_at_or_after(trigger, before - lookback)
        if t is not None and t < before:
            last = t
            while True:
                n = next_fire(trigger, last)
                if n is None or n >= before:
                    return last
                last = n
        lookback *= 2
    raise ValueError(f"schedule never fired in the two years before {before}")


def window_for_fire(schedule: CronSchedule | IntervalSchedule, fire: datetime) -> Window:
    if isinstance(schedule, IntervalSchedule):
        return Window(fire - schedule.every, fire)
    return Window(previous_fire(make_trigger(schedule), fire), fire)


def latest_window(schedule: CronSchedule | IntervalSchedule, now: datetime) -> Window:
    """The most recent *complete* window at ``now``: it ends at the last fire ≤ now."""
    trig = make_trigger(schedule)
    fire = fire_at_or_after(trig, now)
    last = fire if fire is not None and fire == now else previous_fire(trig, now)
    return window_for_fire(schedule, last)


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
