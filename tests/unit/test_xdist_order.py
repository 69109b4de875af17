"""The suite's own xdist work units and their order (tests/conftest.py): the drills first, on one
worker, while the other workers run what the drills do not block."""

from __future__ import annotations

from tests.conftest import xdist_order, xdist_unit

IDS = [
    "tests/chaos/test_daemon_crash.py::test_a",
    "tests/chaos/test_drill.py::test_kill",
    "tests/chaos/test_group_failover.py::test_g",
    "tests/contract/test_ledger.py::test_c[sqlite]",
    "tests/integration/test_small.py::test_1",
    "tests/integration/test_big.py::test_1",
    "tests/integration/test_big.py::test_2",
    "tests/unit/test_windows.py::test_u",
    "tests/chaos/test_health.py::test_h",
    "tests/integration/test_unresponsive.py::test_silent",
    "tests/integration/test_bench_smoke.py::test_bench_a",
    "tests/integration/test_bench_smoke.py::test_bench_b",
]


def test_units_group_the_drills_the_other_chaos_tests_and_each_integration_file():
    assert [xdist_unit(n) for n in IDS] == [
        "chaos", "chaos-drills", "chaos-drills", IDS[3], "tests/integration/test_small.py",
        "tests/integration/test_big.py", "tests/integration/test_big.py", IDS[7], "chaos",
        "tests/integration/test_unresponsive.py", IDS[10], IDS[11]]  # the bench smokes: a unit per test


def test_order_is_drills_chaos_light_integration_singletons_then_long_integration_units_then_by_size():
    got = [IDS[i] for i in xdist_order(IDS)]
    assert got == [
        "tests/chaos/test_drill.py::test_kill",
        "tests/chaos/test_group_failover.py::test_g",
        "tests/chaos/test_daemon_crash.py::test_a",
        "tests/chaos/test_health.py::test_h",
        "tests/integration/test_unresponsive.py::test_silent",  # starts no cluster: beside the drills
        "tests/contract/test_ledger.py::test_c[sqlite]",
        "tests/unit/test_windows.py::test_u",
        "tests/integration/test_bench_smoke.py::test_bench_a",  # a unit a test, and long: first
        "tests/integration/test_bench_smoke.py::test_bench_b",
        "tests/integration/test_big.py::test_1",
        "tests/integration/test_big.py::test_2",
        "tests/integration/test_small.py::test_1",
    ]
    assert sorted(xdist_order(IDS)) == list(range(len(IDS)))  # a permutation: nothing lost or doubled
