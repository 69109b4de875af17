"""Placement, failure policy and backoff: pure functions, tested exhaustively."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfeast.adapters.failures import FailureClass
from skyfeast.scheduler.control.policy import (
    Breaker,
    HealthRules,
    ProviderState,
    ProviderView,
    Step,
    backoff,
    next_step,
    observe,
    place,
    placement_state,
)

H, U, DG, HO, DN = (ProviderState.HEALTHY, ProviderState.UNKNOWN, ProviderState.DEGRADED,
                    ProviderState.HALF_OPEN, ProviderState.DOWN)
RANK = {H: 0, U: 0, DG: 1, HO: 2}
NAMES = ["aws", "gcp", "azure", "onprem", "edge", "lab"]


# --------------------------------------------------------------------------- place: examples
def test_place_empty_inputs():
    assert place([], {}) == []
    assert place([], {"aws": ProviderView(1)}) == []
    assert place(["aws"], {}) == []


def test_place_orders_by_priority_then_name():
    views = {"b": ProviderView(10, H), "a": ProviderView(10, H), "c": ProviderView(5, H)}
    assert place(["a", "b", "c"], views) == ["c", "a", "b"]


def test_place_health_rank_beats_priority():
    views = {
        "half": ProviderView(0, HO),
        "degraded": ProviderView(0, DG),
        "healthy": ProviderView(99, H),
        "unknown": ProviderView(50, U),
    }
    assert place(list(views), views) == ["unknown", "healthy", "degraded", "half"]


def test_place_healthy_and_unknown_rank_equal():
    views = {"h": ProviderView(2, H), "u": ProviderView(1, U)}
    assert place(["h", "u"], views) == ["u", "h"]


def test_place_excludes_down_cordoned_and_unknown_names():
    views = {
        "down": ProviderView(0, DN),
        "cord": ProviderView(0, H, cordoned=True),
        "cord_down": ProviderView(0, DN, cordoned=True),
        "ok": ProviderView(100, DG),
    }
    assert place(["down", "cord", "cord_down", "ghost", "ok"], views) == ["ok"]


def test_place_only_allowed_providers():
    views = {"aws": ProviderView(1, H), "gcp": ProviderView(0, H)}
    assert place(["aws"], views) == ["aws"]


def test_place_deduplicates_allowed():
    views = {"aws": ProviderView(1, H), "gcp": ProviderView(2, H)}
    assert place(["gcp", "aws", "gcp", "aws"], views) == ["aws", "gcp"]


def test_place_locality_first_among_equally_healthy():
    views = {"aws": ProviderView(1, H), "gcp": ProviderView(2, H), "az": ProviderView(3, U)}
    assert place(["aws", "gcp", "az"], views, locality="az") == ["az", "aws", "gcp"]
    assert place(["aws", "gcp", "az"], views, locality="gcp") == ["gcp", "aws", "az"]


def test_place_locality_does_not_beat_health():
    views = {"aws": ProviderView(1, H), "gcp": ProviderView(0, DG)}
    assert place(["aws", "gcp"], views, locality="gcp") == ["aws", "gcp"]


def test_place_locality_ignored_when_not_placeable():
    views = {"aws": ProviderView(2, H), "gcp": ProviderView(1, H, cordoned=True), "az": ProviderView(1, DN)}
    assert place(["aws", "gcp", "az"], views, locality="gcp") == ["aws"]
    assert place(["aws", "gcp", "az"], views, locality="az") == ["aws"]
    assert place(["aws"], views, locality="nowhere") == ["aws"]


def test_place_locality_not_allowed_is_not_added():
    views = {"aws": ProviderView(1, H), "gcp": ProviderView(0, H)}
    assert place(["aws"], views, locality="gcp") == ["aws"]


@pytest.mark.parametrize("state", [H, U, DG, HO])
def test_place_every_placeable_state(state):
    assert place(["p"], {"p": ProviderView(0, state)}) == ["p"]


def test_place_does_not_mutate_inputs():
    allowed = ["b", "a", "b"]
    views = {"a": ProviderView(1), "b": ProviderView(0)}
    before = (list(allowed), dict(views))
    place(allowed, views, "a")
    assert (allowed, views) == before


def test_provider_view_defaults():
    pv = ProviderView(7)
    assert pv.state is ProviderState.UNKNOWN and pv.cordoned is False and pv.priority == 7


# --------------------------------------------------------------------------- place: properties
views_st = st.dictionaries(
    keys=st.sampled_from(NAMES),
    values=st.builds(
        ProviderView,
        priority=st.integers(0, 5),  # small range: plenty of ties so name/locality decide
        state=st.sampled_from(list(ProviderState)),
        cordoned=st.booleans(),
    ),
    max_size=len(NAMES),
)
allowed_st = st.lists(st.sampled_from(NAMES + ["ghost", "nope"]), max_size=12)
locality_st = st.none() | st.sampled_from(NAMES + ["ghost"])


def _key(name, views, locality):
    pv = views[name]
    return (RANK[pv.state], 0 if name == locality else 1, pv.priority, name)


@settings(max_examples=300, deadline=None)
@given(allowed=allowed_st, views=views_st, locality=locality_st)
def test_place_properties(allowed, views, locality):
    out = place(allowed, views, locality)

    # subset of allowed, no duplicates
    assert set(out) <= set(allowed)
    assert len(out) == len(set(out))
    # never cordoned, DOWN, or unknown names
    for name in out:
        assert name in views
        assert not views[name].cordoned
        assert views[name].state is not ProviderState.DOWN
    # every placeable allowed provider is there (nothing healthy dropped)
    placeable = {n for n in allowed if n in views and not views[n].cordoned and views[n].state is not DN}
    assert set(out) == placeable
    # sorted by (state rank, locality first, priority, name)
    keys = [_key(n, views, locality) for n in out]
    assert keys == sorted(keys)
    # deterministic, and independent of allowed order / duplicates
    assert place(allowed, views, locality) == out
    assert place(list(reversed(allowed)) + allowed, dict(reversed(list(views.items()))), locality) == out


@settings(max_examples=200, deadline=None)
@given(allowed=allowed_st, views=views_st, locality=st.sampled_from(NAMES))
def test_place_locality_first_among_equally_healthy_property(allowed, views, locality):
    out = place(allowed, views, locality)
    if locality not in out:
        return
    rank = RANK[views[locality].state]
    same_rank = [n for n in out if RANK[views[n].state] == rank]
    assert same_rank[0] == locality
    # only strictly healthier providers precede it
    for n in out[: out.index(locality)]:
        assert RANK[views[n].state] < rank


# --------------------------------------------------------------------------- next_step
FC = FailureClass


@pytest.mark.parametrize("providers_left", [0, 1, 5])
@pytest.mark.parametrize("user_failures", [0, 1, 3, 100])
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_infrastructure_fails_over_while_providers_remain(providers_left, user_failures, retries):
    step = next_step(FC.INFRASTRUCTURE, user_failures=user_failures, retries=retries, providers_left=providers_left)
    assert step is (Step.FAIL_OVER if providers_left > 0 else Step.GIVE_UP)


@pytest.mark.parametrize(
    "retries,user_failures,expected",
    [
        (0, 1, Step.GIVE_UP),  # no retries: the first failure ends it
        (1, 1, Step.RETRY_SAME),  # == retries: still within budget
        (1, 2, Step.GIVE_UP),  # retries + 1: budget spent
        (3, 1, Step.RETRY_SAME),
        (3, 2, Step.RETRY_SAME),
        (3, 3, Step.RETRY_SAME),
        (3, 4, Step.GIVE_UP),
        (3, 10, Step.GIVE_UP),
        (100, 100, Step.RETRY_SAME),
        (100, 101, Step.GIVE_UP),
    ],
)
@pytest.mark.parametrize("providers_left", [0, 1])
def test_user_code_retry_budget(retries, user_failures, expected, providers_left):
    # user-code failures never fail over: the same code fails the same way elsewhere
    step = next_step(FC.USER_CODE, user_failures=user_failures, retries=retries, providers_left=providers_left)
    assert step is expected


@pytest.mark.parametrize("failure", [FC.DATA, FC.CONFIG, FC.TIMEOUT, FC.CANCELLED])
@pytest.mark.parametrize("retries,user_failures", [(0, 0), (0, 1), (3, 1), (3, 3), (3, 4)])
@pytest.mark.parametrize("providers_left", [0, 1])
def test_data_timeout_cancelled_give_up(failure, retries, user_failures, providers_left):
    step = next_step(failure, user_failures=user_failures, retries=retries, providers_left=providers_left)
    assert step is Step.GIVE_UP


@pytest.mark.parametrize("failure", list(FailureClass))
@pytest.mark.parametrize("providers_left", [0, 1])
def test_next_step_total_over_failure_classes(failure, providers_left):
    step = next_step(failure, user_failures=1, retries=1, providers_left=providers_left)
    assert isinstance(step, Step)
    expected = {
        FC.USER_CODE: Step.RETRY_SAME,
        FC.INFRASTRUCTURE: Step.FAIL_OVER if providers_left else Step.GIVE_UP,
        FC.DATA: Step.GIVE_UP,
        FC.CONFIG: Step.GIVE_UP,
        FC.TIMEOUT: Step.GIVE_UP,
        FC.CANCELLED: Step.GIVE_UP,
    }[failure]
    assert step is expected


# That a job failing in user code runs exactly retries + 1 times, all on one provider, is
# tested on the real retry loop: tests/unit/test_runner.py (Runner with a fake executor).
@settings(max_examples=300, deadline=None)
@given(retries=st.integers(0, 100), user_failures=st.integers(1, 250), providers_left=st.integers(0, 5))
def test_user_code_retries_in_place_exactly_while_within_budget(retries, user_failures, providers_left):
    step = next_step(FC.USER_CODE, user_failures=user_failures, retries=retries, providers_left=providers_left)
    assert step is (Step.RETRY_SAME if user_failures <= retries else Step.GIVE_UP)


@settings(max_examples=200, deadline=None)
@given(retries=st.integers(0, 100), user_failures=st.integers(0, 250), providers_left=st.integers(0, 5),
       repeated=st.booleans())
def test_infrastructure_ignores_the_user_code_budget(retries, user_failures, providers_left, repeated):
    # however many user-code failures came before, an infrastructure failure moves on
    step = next_step(FC.INFRASTRUCTURE, user_failures=user_failures, retries=retries, providers_left=providers_left,
                     repeated=repeated)
    assert step is (Step.FAIL_OVER if providers_left else Step.GIVE_UP)


@pytest.mark.parametrize("retries,user_failures", [(1, 1), (3, 2), (100, 2)])
@pytest.mark.parametrize("providers_left", [0, 1])
def test_repeated_user_code_failure_gives_up_with_budget_left(retries, user_failures, providers_left):
    # the same failure again is deterministic: the remaining retries are not spent ...
    assert next_step(FC.USER_CODE, user_failures=user_failures, retries=retries, providers_left=providers_left,
                     repeated=True) is Step.GIVE_UP
    # ... whereas a different one, within the budget, is retried
    assert next_step(FC.USER_CODE, user_failures=user_failures, retries=retries, providers_left=providers_left,
                     repeated=False) is Step.RETRY_SAME


def test_enum_values_are_stable():
    # values are persisted in the ledger
    assert {f.value for f in FailureClass} == {"user_code", "data", "config", "infrastructure", "timeout",
                                                "cancelled"}
    assert {s.value for s in ProviderState} == {"healthy", "unknown", "degraded", "half_open", "down"}


# --------------------------------------------------------------------------- backoff
@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(1, 200),
    base=st.floats(0.001, 10.0),
    cap=st.floats(0.0, 120.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_backoff_within_bounds(attempt, base, cap, seed):
    d = backoff(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= d <= min(cap, base * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 64, 1100, 10_000])
def test_backoff_default_bounds(attempt):
    rng = random.Random(attempt)
    for _ in range(50):
        d = backoff(attempt, rng=rng)
        assert 0.0 <= d <= min(30.0, 2.0 ** min(attempt - 1, 64))


def test_backoff_large_attempt_is_capped_not_overflowing():
    assert 0.0 <= backoff(5000, base=1.0, cap=30.0, rng=random.Random(0)) <= 30.0


@pytest.mark.parametrize("attempt,base,cap,bound", [
    (1, 1.0, 30.0, 1.0),
    (2, 1.0, 30.0, 2.0),
    (4, 0.5, 30.0, 4.0),
    (5, 1.0, 30.0, 16.0),
    (6, 1.0, 30.0, 30.0),  # 32 capped
    (3, 10.0, 25.0, 25.0),  # 40 capped
    (2000, 1.0, 7.5, 7.5),
])
def test_backoff_is_a_uniform_draw_from_the_given_rng(attempt, base, cap, bound):
    """Full jitter: a draw from ``rng`` (not the global ``random``) over [0, min(cap, base * 2**(attempt-1))]."""
    random.seed(1234)
    global_state = random.getstate()
    for seed in range(20):
        assert backoff(attempt, base=base, cap=cap, rng=random.Random(seed)) == \
            random.Random(seed).uniform(0.0, bound)
    assert random.getstate() == global_state  # the module-level generator was not consumed


@pytest.mark.parametrize("attempt,cap,bound", [(3, 30.0, 4.0), (5, 30.0, 16.0), (6, 30.0, 30.0), (40, 30.0, 30.0),
                                               (3, 2.5, 2.5)])
def test_backoff_seeded_samples_fill_the_jitter_range_up_to_the_cap(attempt, cap, bound):
    rng = random.Random(attempt)
    ds = [backoff(attempt, base=1.0, cap=cap, rng=rng) for _ in range(1000)]
    assert all(0.0 <= d <= bound for d in ds)
    # spread over the whole range: not clustered at the top ("equal jitter") nor at zero
    assert min(ds) < 0.02 * bound and max(ds) > 0.98 * bound
    assert 0.4 * bound < sum(ds) / len(ds) < 0.6 * bound


def test_backoff_uses_full_jitter():
    rng = random.Random(7)
    ds = [backoff(5, base=1.0, cap=30.0, rng=rng) for _ in range(2000)]
    assert min(ds) < 1.0 and max(ds) > 15.0  # spread over [0, 16], not clustered at the top


def test_backoff_grows_then_caps():
    class Top(random.Random):
        def uniform(self, a, b):
            return b

    top = Top()
    assert [backoff(n, base=1.0, cap=30.0, rng=top) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(3, base=0.5, cap=100, rng=top) == 2.0
    assert backoff(1, base=1.0, cap=0.0, rng=top) == 0.0


def test_backoff_default_rng():
    d = backoff(2)
    assert 0.0 <= d <= 2.0


# --------------------------------------------------------------------------- breaker times and failback
# (state transitions per probe are in test_breaker.py; these pin the ``since`` clock that the
# blocklist TTL and the failback delay are measured from, and how placement sees it)
RULES = HealthRules(miss_budget=2, blocklist_ttl=10.0, failback_after=30.0, min_workers=1)


def test_misses_while_down_do_not_extend_the_blocklist():
    down = Breaker(DN, 2, since=100.0)
    b = down
    for t in (101.0, 105.0, 109.9):
        b = observe(b, ok=False, workers=None, now=t, rules=RULES)
        assert b == down  # the TTL runs from the moment the circuit opened
    assert observe(b, ok=True, workers=1, now=109.9, rules=RULES).state is DN
    assert observe(b, ok=True, workers=1, now=110.0, rules=RULES) == Breaker(HO, 0, since=110.0)


def test_failed_half_open_probe_reopens_with_a_fresh_blocklist():
    half = Breaker(HO, 0, since=10.0)
    b = observe(half, ok=False, workers=None, now=12.0, rules=RULES)
    assert (b.state, b.since) == (DN, 12.0)
    assert observe(b, ok=True, workers=1, now=21.9, rules=RULES).state is DN
    assert observe(b, ok=True, workers=1, now=22.0, rules=RULES).state is HO


def test_degraded_since_is_kept_across_misses_and_reset_on_recovery():
    rules = HealthRules(miss_budget=3, blocklist_ttl=10.0, failback_after=30.0, min_workers=1)
    b = observe(Breaker(H, 0, since=0.0), ok=False, workers=None, now=5.0, rules=rules)
    assert b == Breaker(DG, 1, since=5.0)
    b = observe(b, ok=False, workers=None, now=6.0, rules=rules)  # a second miss, within the budget
    assert b == Breaker(DG, 2, since=5.0)
    b = observe(b, ok=True, workers=0, now=7.0, rules=rules)  # answers, but no workers: still degraded
    assert b == Breaker(DG, 0, since=5.0)
    assert observe(b, ok=True, workers=3, now=8.0, rules=rules) == Breaker(H, 0, since=8.0)


def test_recovered_provider_regains_its_priority_only_after_failback_delay():
    """p1 (priority 1) goes down and recovers; p2 (priority 2) stays healthy. Work returns to
    p1 exactly ``failback_after`` seconds after p1 became healthy, however often it is probed."""
    b = Breaker(H, 0, since=0.0)
    for t in (1.0, 2.0):
        b = observe(b, ok=False, workers=None, now=t, rules=RULES)
    assert b.state is DN
    b = observe(b, ok=True, workers=2, now=12.0, rules=RULES)
    assert b.state is HO
    b = observe(b, ok=True, workers=2, now=13.0, rules=RULES)
    assert (b.state, b.since) == (H, 13.0)
    for t in range(14, 44):  # healthy probes do not restart the failback clock
        b = observe(b, ok=True, workers=2, now=float(t), rules=RULES)
    assert b.since == 13.0

    def order(now: float) -> list[str]:
        views = {"p1": ProviderView(1, placement_state(b, now=now, rules=RULES, was_down=True)),
                 "p2": ProviderView(2, H)}
        return place(["p1", "p2"], views)

    assert order(13.0) == ["p2", "p1"]
    assert order(42.9) == ["p2", "p1"]
    assert order(43.0) == ["p1", "p2"]
    # a provider that was never down is preferred as soon as it is healthy
    assert place(["p1", "p2"], {"p1": ProviderView(1, placement_state(b, now=13.0, rules=RULES, was_down=False)),
                                "p2": ProviderView(2, H)}) == ["p1", "p2"]


@pytest.mark.parametrize("state", [U, DG, HO, DN])
def test_placement_state_passes_non_healthy_states_through(state):
    b = Breaker(state, 0, since=0.0)
    assert placement_state(b, now=1.0, rules=RULES, was_down=True) is state
