"""Circuit breaker: probe results → provider state (pure)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from skyfeast.scheduler.control.policy import Breaker, HealthRules, ProviderState, observe, placement_state

R = HealthRules(miss_budget=3, blocklist_ttl=10, failback_after=20, min_workers=1)
H, DEG, DOWN, HALF = ProviderState.HEALTHY, ProviderState.DEGRADED, ProviderState.DOWN, ProviderState.HALF_OPEN


def run(probes, rules=R, start=Breaker()):
    b, states = start, []
    for t, (ok, workers, *certain) in enumerate(probes):
        b = observe(b, ok=ok, workers=workers, now=float(t), rules=rules, certain=bool(certain and certain[0]))
        states.append(b.state)
    return b, states


def test_misses_within_budget_only_degrade():
    _, states = run([(True, 2), (False, None), (False, None), (True, 2)])
    assert states == [H, DEG, DEG, H]


def test_budget_of_consecutive_misses_opens_the_circuit():
    b, states = run([(True, 2), (False, None), (False, None), (False, None)])
    assert states == [H, DEG, DEG, DOWN] and b.since == 3.0


def test_refused_connection_opens_at_once():
    _, states = run([(True, 2), (False, None, True)])
    assert states == [H, DOWN]


def test_down_is_held_for_the_blocklist_ttl_then_half_open_then_healthy():
    b = Breaker(DOWN, 3, since=0.0)
    assert observe(b, ok=True, workers=2, now=9.9, rules=R).state is DOWN
    half = observe(b, ok=True, workers=2, now=10.0, rules=R)
    assert half.state is HALF
    assert observe(half, ok=True, workers=2, now=11.0, rules=R).state is H
    assert observe(half, ok=False, workers=None, now=11.0, rules=R).state is DOWN


def test_too_few_workers_is_degraded_not_down():
    _, states = run([(True, 0), (True, 0), (True, 0), (True, 0)])
    assert states == [DEG] * 4


def test_failback_waits_until_healthy_long_enough():
    recovered = Breaker(H, 0, since=100.0)
    assert placement_state(recovered, now=110.0, rules=R, was_down=True) is DEG
    assert placement_state(recovered, now=120.0, rules=R, was_down=True) is H
    assert placement_state(recovered, now=101.0, rules=R, was_down=False) is H


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=40),
       st.integers(1, 5))
def test_never_down_without_budget_many_consecutive_misses(probes, budget):
    rules = HealthRules(miss_budget=budget, blocklist_ttl=1e9, failback_after=0, min_workers=1)
    b = Breaker()
    streak = 0
    for t, (ok, workers) in enumerate(probes):
        prev = b
        b = observe(b, ok=ok, workers=workers if ok else None, now=float(t), rules=rules)
        streak = 0 if ok else streak + 1
        if b.state is DOWN and prev.state is not DOWN:
            assert streak >= budget  # opened only by a full budget of consecutive misses
        if prev.state is DOWN:
            assert b.state is DOWN  # TTL is effectively infinite here: stays open
