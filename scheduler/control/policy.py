"""Placement and failure policy: pure functions, no I/O.

``place`` orders the providers a job may run on; ``next_step`` decides what a
run does after a failed attempt, from the attempt's failure class (which
:func:`skyfeast.adapters.failures.classify` assigns); ``observe`` and
``placement_state`` fold probe results into a provider's circuit breaker. The
runner and the health monitor perform I/O around these decisions.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from skyfeast.adapters.failures import FailureClass


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


class Step(str, Enum):
    RETRY_SAME = "retry_same"
    FAIL_OVER = "fail_over"
    GIVE_UP = "give_up"


def next_step(failure: FailureClass, *, user_failures: int, retries: int, providers_left: int,
              repeated: bool = False) -> Step:
    """After a failed attempt: retry in place, move to the next provider, or stop.

    ``user_failures`` counts user-code failures so far *including* this one.
    Infrastructure failures never consume the user-code retry budget.  ``repeated``
    says this user-code failure is the previous one again (same exception, same
    message, same chunk): it is deterministic, so the remaining retries are not spent.
    """
    if failure is FailureClass.INFRASTRUCTURE:
        return Step.FAIL_OVER if providers_left > 0 else Step.GIVE_UP
    if failure is FailureClass.USER_CODE and user_failures <= retries and not repeated:
        return Step.RETRY_SAME
    return Step.GIVE_UP


def backoff(attempt: int, *, base: float = 1.0, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter, in seconds, for retry number ``attempt`` (1-based)."""
    r = rng or random
    # clamp the exponent: 2 ** n for a large int n does not fit a float (OverflowError)
    return r.uniform(0, min(cap, base * 2.0 ** min(attempt - 1, 1023)))


# --------------------------------------------------------------------------- circuit breaker
@dataclass(frozen=True)
class HealthRules:
    """How probe results become a provider state."""

    miss_budget: int = 3  # consecutive failed probes before a provider is DOWN
    blocklist_ttl: float = 30.0  # seconds a DOWN provider is left alone before a half-open probe
    failback_after: float = 30.0  # seconds a recovered provider must stay healthy before it is preferred again
    min_workers: int = 1


@dataclass(frozen=True)
class Breaker:
    state: ProviderState = ProviderState.UNKNOWN
    misses: int = 0
    since: float = 0.0  # monotonic time the current state began


def observe(b: Breaker, *, ok: bool, workers: int | None, now: float, rules: HealthRules,
            certain: bool = False) -> Breaker:
    """Next breaker state after one probe. ``ok`` False means no valid answer within the deadline.

    A single miss only degrades a provider, because a slow answer is not a dead
    provider; ``miss_budget`` consecutive misses open the circuit (DOWN). A
    ``certain`` failure (the connection was refused: the process is gone) opens
    it at once. After ``blocklist_ttl`` a DOWN provider is probed half-open; one
    good probe closes the circuit, a bad one re-opens it.
    """
    s = b.state
    if not ok:
        misses = b.misses + 1
        if s is ProviderState.HALF_OPEN or misses >= rules.miss_budget or certain:
            return b if s is ProviderState.DOWN else Breaker(ProviderState.DOWN, misses, now)
        return Breaker(ProviderState.DEGRADED, misses, b.since if s is ProviderState.DEGRADED else now)
    if s is ProviderState.DOWN:
        if now - b.since < rules.blocklist_ttl:
            return b
        return Breaker(ProviderState.HALF_OPEN, 0, now)
    target = ProviderState.HEALTHY if (workers or 0) >= rules.min_workers else ProviderState.DEGRADED
    return Breaker(target, 0, b.since if s is target else now)


def placement_state(b: Breaker, *, now: float, rules: HealthRules, was_down: bool) -> ProviderState:
    """What placement should see: a provider that recovered from DOWN ranks as DEGRADED
    until it has stayed healthy for ``failback_after`` (failback), so work returns to it
    only once it is stable."""
    if b.state is ProviderState.HEALTHY and was_down and now - b.since < rules.failback_after:
        return ProviderState.DEGRADED
    return b.state
