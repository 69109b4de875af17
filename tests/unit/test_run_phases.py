"""Task seconds by phase (skyfeast.featurestore.phases): which task counts where, and only the run's own."""

from __future__ import annotations

import json

import pytest

from skyfeast.featurestore.phases import collect, graph_keys, phase_of, task_seconds


@pytest.mark.parametrize(("key", "phase"), [
    (("read_parquet-operation-28e4ebad", 3), "read"),
    (("readparquetfsspec-1f2e", 0), "read"),
    ("read_inputs-0f8c2a1e-77aa", "read"),
    (("shuffle-transfer-468af7e9", 2), "shuffle"),
    (("p2pshuffle-468af7e9", 1), "shuffle"),
    ("shuffle-barrier-468af7e9", "shuffle"),
    (("diskshuffle-9a", 0), "shuffle"),
    ("feature_partition-3c1d2b9a-aaaa", "transform"),
    ("model_partition_from_file-77", "transform"),
    ("group_partition_from_file-77", "transform"),
    ("stage_chunk-8d6c", "stage"),
    ("publish_online-1b2c", "online"),
    ("publish_offline-1b2c", "offline"),
    ("finalize-abc", "other"),
    ((), "other"),
])
def test_phase_of(key, phase):
    assert phase_of(key) == phase


def _rec(key, *spans):
    return {"key": key, "startstops": [{"action": a, "start": s, "stop": e} for a, s, e in spans]}


def test_task_seconds_counts_only_the_runs_keys_and_splits_transfers():
    ours = {("read_parquet-operation-1", 0), ("p2pshuffle-2", 0), "stage_chunk-3", "publish_online-4"}
    records = [
        _rec(("read_parquet-operation-1", 0), ("compute", 10.0, 11.5)),
        _rec(("p2pshuffle-2", 0), ("transfer", 11.5, 11.75), ("compute", 11.75, 12.0)),
        _rec("stage_chunk-3", ("compute", 12.0, 12.5), ("disk-read", 12.5, 13.0)),
        _rec("publish_online-4", ("compute", 13.0, 15.0)),
        _rec("stage_chunk-other-run", ("compute", 0.0, 100.0)),  # another run's task: not counted
        {"key": "publish_online-4"},  # no startstops: ignored
        _rec("publish_online-4", ("compute", 20.0, 19.0)),  # clock went backwards: 0, not negative
        {"key": "stage_chunk-3", "startstops": [{"action": "compute", "start": None, "stop": 1.0}]},
        _rec("stage_chunk-3", ("compute", 0.0, float("nan")), ("compute", float("-inf"), 1.0)),
    ]
    got = task_seconds(records, ours)
    assert got == {"read": 1.5, "shuffle": 0.25, "stage": 0.5, "online": 2.0, "transfer": 0.25}
    assert list(got) == ["read", "shuffle", "stage", "online", "transfer"]  # PHASES order
    json.dumps(got, allow_nan=False)  # what ``skyfeast run --json`` prints


def test_graph_keys_of_delayed_and_plain_values():
    import dask

    a = dask.delayed(lambda x: x + 1, pure=False)(1)
    b = dask.delayed(lambda x: x * 2, pure=False)(a)
    keys = graph_keys([b, 42])
    assert a.key in keys and b.key in keys and len(keys) == 2


class _Broken:
    def sync(self, *a, **kw):
        raise OSError("scheduler gone")

    scheduler = type("R", (), {"get_task_stream": None})()


def test_collect_is_best_effort():
    into = {"read": 1.0}
    assert collect(_Broken(), 0.0, {"k"}, into=into) == {"read": 1.0}
    assert collect(_Broken(), 0.0, set()) == {}
