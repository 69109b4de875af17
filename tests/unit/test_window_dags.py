"""WindowDags: each window's jobs in dependency order, independent branches at once, and the runs
below a stop released once (scheduler/app/dag.py), with a real thread pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from skyfeast.scheduler.app.dag import WindowDags


@dataclass(frozen=True)
class J:
    name: str
    upstreams: list[str] = field(default_factory=list)


DIAMOND = [J("a"), J("b", ["a"]), J("c", ["a"]), J("d", ["b", "c"]), J("solo")]


def _run(jobs, *, windows=("w1",), stop_at=None, workers=4, hold=0.3):
    spans, released, lock = {}, [], threading.Lock()

    def run_one(item) -> bool:
        job, window, _ = item
        t0 = time.monotonic()
        time.sleep(hold)
        with lock:
            spans[(job.name, window)] = (t0, time.monotonic())
        return job.name != stop_at

    with ThreadPoolExecutor(max_workers=workers) as pool:
        dags = WindowDags([(j, w, None) for w in windows for j in jobs], submit=pool.submit, run_one=run_one,
                          release=lambda items: released.extend((j.name, w) for j, w, _ in items))
        dags.start()
        assert dags.done.wait(30)
    return spans, released


def test_a_diamond_runs_in_order_with_its_two_branches_at_once():
    spans, released = _run(DIAMOND)
    assert released == []
    s = {k[0]: v for k, v in spans.items()}
    assert s["b"][0] >= s["a"][1] and s["c"][0] >= s["a"][1]
    assert s["d"][0] >= max(s["b"][1], s["c"][1])
    assert s["b"][0] < s["c"][1] and s["c"][0] < s["b"][1], "the independent branches b and c overlapped"
    assert s["solo"][0] < s["a"][1], "a job with no upstream did not wait"


def test_windows_are_separate_dags():
    spans, _ = _run([J("a"), J("b", ["a"])], windows=("w1", "w2"))
    assert spans[("a", "w2")][0] < spans[("a", "w1")][1]  # both windows' roots at once
    assert spans[("b", "w1")][0] >= spans[("a", "w1")][1] and spans[("b", "w2")][0] >= spans[("a", "w2")][1]


def test_a_stop_releases_every_run_below_it_once_and_nothing_else():
    spans, released = _run(DIAMOND, stop_at="b")
    assert sorted(released) == [("d", "w1")]  # below b; c is not below b and still ran
    assert {k[0] for k in spans} == {"a", "b", "c", "solo"}


def test_an_upstream_outside_the_batch_does_not_hold_a_job_back():
    spans, released = _run([J("b", ["a"]), J("c", ["b"])])  # a is not in this batch (it ran earlier)
    assert set(k[0] for k in spans) == {"b", "c"} and released == []
