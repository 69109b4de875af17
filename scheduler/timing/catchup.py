"""Which fires a (re)started daemon owes: pure, no I/O.

``due_fires`` returns the fires in ``(last_fire, now]`` that a job should
still run, following its ``catchup`` policy:

* ``none``   – only a fire that is due right now (within ``grace``) runs; missed ones are skipped;
* ``latest`` – only the most recent missed fire runs;
* ``all``    – every missed fire runs, oldest first.

Fires older than ``now - max_catchup`` are never returned. ``last_fire`` is
the newest fire this job was already dispatched for (from the ledger), or
``None`` on a job's first start, in which case nothing is owed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from apscheduler.triggers.base import BaseTrigger

from skyfeast.scheduler.timing.windows import next_fire

Policy = Literal["none", "latest", "all"]


def due_fires(trigger: BaseTrigger, *, last_fire: datetime | None, now: datetime, policy: Policy,
              max_catchup: timedelta, grace: timedelta = timedelta(seconds=5), limit: int = 10_000) -> list[datetime]:
    if last_fire is None:
        return []
    horizon = now - max_catchup
    fires: list[datetime] = []
    t = last_fire
    while len(fires) < limit:
        nxt = next_fire(trigger, t)
        if nxt is None or nxt > now:
            break
        if nxt >= horizon:
            fires.append(nxt)
        t = nxt
    if policy == "all":
        return fires
    if policy == "latest":
        return fires[-1:]
    return [f for f in fires if now - f <= grace]
