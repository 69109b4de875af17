"""Placement and failure policy: pure functions, no I/O.

``place`` orders the providers a job may run on. ``classify`` maps an
exception to a failure class; ``next_step`` decides what a run does after a
failed attempt. The runner performs I/O around these decisions.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum


class ProviderState(str, Enum):
    HEALTHY = "healthy"
    UNKNOWN = "unknown"
    DEGRADED = "degraded"
    HALF_OPEN = "half_open"
    DOWN = "down"


# lower is tried first; DOWN and cordoned providers are never placed
_STATE_RANK = {
    ProviderState.HEALTHY: 0,
    ProviderState.UNKNOWN: 0,
    ProviderState.DEGRADED: 1,
    ProviderState.HALF_OPEN: 2,
}


@dataclass(frozen=True)
class ProviderView:
    """What placement knows about a provider."""

    priority: int
    state: ProviderState = ProviderState.UNKNOWN
    cordoned: bool = False


def place(allowed: Sequence[str], providers: Mapping[str, ProviderView], locality: str | None = None) -> list[str]:
    """Ordered candidates for a job.

    Excludes unknown names, cordoned and DOWN providers. Orders by health
    rank, then data locality (the provider holding the job's input first),
    then priority (lower first), then name for determinism.
    """
    cands = []
    for name in dict.fromkeys(allowed):  # de-duplicate, keep order
        pv = providers.get(name)
        if pv is None or pv.cordoned or pv.state is ProviderState.DOWN:
            continue
        cands.append((_STATE_RANK[pv.state], 0 if name == locality else 1, pv.priority, name))
    return [c[-1] for c in sorted(cands)]


class FailureClass(str, Enum):
    USER_CODE = "user_code"
    DATA = "data"
    INFRASTRUCTURE = "infrastructure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Step(str, Enum):
    RETRY_SAME = "retry_same"
    FAIL_OVER = "fail_over"
    GIVE_UP = "give_up"


def next_step(failure: FailureClass, *, user_failures: int, retries: int, providers_left: int) -> Step:
    """After a failed attempt: retry in place, move to the next provider, or stop.

    ``user_failures`` counts user-code failures so far *including* this one.
    Infrastructure failures never consume the user-code retry budget.
    """
    if failure is FailureClass.INFRASTRUCTURE:
        return Step.FAIL_OVER if providers_left > 0 else Step.GIVE_UP
    if failure is FailureClass.USER_CODE and user_failures <= retries:
        return Step.RETRY_SAME
    return Step.GIVE_UP


def backoff(attempt: int, *, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter, in seconds, for retry number ``attempt`` (1-based)."""
    r = rng or random
    # clamp the exponent: 2 ** n for a large int n does not fit a float (OverflowError)
    return r.uniform(0, min(cap, base * 2.0 ** min(attempt - 1, 1023)))
