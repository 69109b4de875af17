"""Each window's jobs as a DAG: a job's run starts once the runs of its upstreams in the batch ended,
and runs whose upstreams are done run at once (independent branches in parallel).

:class:`WindowDags` takes one batch of ``(job, window, run_id)`` items (a dispatch of the daemon, or
``skyfeast run``), and submits each item to a thread pool when it is ready: nobody waits in a pool
thread for another item, so ``max_parallel`` threads are never held by waiting runs.

After a run ends, its downstream runs start whatever its outcome: the runner records a downstream
of a failed run as ``upstream_failed`` without spending an attempt.  When ``run_one`` says stop
(shutting down, or the run was handed back), the items below it that have not started are given to
``release`` instead, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Item = tuple  # (job, window, run_id or None)


class WindowDags:
    def __init__(self, items: list[Item], *, submit: Callable[[Callable[[], None]], Any],
                 run_one: Callable[[Item], bool], release: Callable[[list[Item]], None]):
        self._items = {self._key(it): it for it in items}
        self._children: dict[tuple, list[tuple]] = {k: [] for k in self._items}
        self._pending: dict[tuple, int] = dict.fromkeys(self._items, 0)
        for k, (job, window, _) in self._items.items():
            for up in dict.fromkeys(job.upstreams):
                uk = (up, window)
                if uk in self._items:
                    self._children[uk].append(k)
                    self._pending[k] += 1
        self._submit, self._run_one, self._release = submit, run_one, release
        self._lock = threading.Lock()
        self._left = len(self._items)
        self._dropped: set[tuple] = set()
        self.done = threading.Event()
        if not self._items:
            self.done.set()

    @staticmethod
    def _key(it: Item) -> tuple:
        return it[0].name, it[1]

    def start(self) -> None:
        for k in [k for k, n in self._pending.items() if n == 0]:
            self._submit(self._task(k))

    def _task(self, k: tuple) -> Callable[[], None]:
        def task() -> None:
            go = False
            try:
                go = self._run_one(self._items[k])
            finally:
                self._ended(k, go)
        return task

    def _ended(self, k: tuple, go: bool) -> None:
        ready, dropped = [], []
        with self._lock:
            self._left -= 1
            if not go:  # nothing below this run starts: each not-yet-started descendant is released once
                stack = list(self._children[k])
                while stack:
                    c = stack.pop()
                    if c not in self._dropped:
                        self._dropped.add(c)
                        dropped.append(c)
                        stack += self._children[c]
            for c in self._children[k]:
                self._pending[c] -= 1
                if self._pending[c] == 0 and c not in self._dropped:
                    ready.append(c)
            self._left -= len(dropped)
            finished = self._left == 0
        if dropped:
            self._release([self._items[c] for c in dropped])
        for c in ready:
            self._submit(self._task(c))
        if finished:
            self.done.set()
