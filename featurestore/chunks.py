"""Chunks of a window: how its rows are split by entity, which chunks are written, and
watching their tasks.

The one home of the mechanics that drop-in materialisation (:mod:`.materialize`) and the
scheduler's feature and model jobs share:

* :data:`INPUT_BLOCK` – the largest input partition a task reads at once;
* :class:`ChunkBook` – a run's resume state: its partitioning and the chunks written;
* :func:`fix_partitioning` – the first attempt fixes each book's partitioning: key
  ranges from a sample of the input for stores kept in key order
  (:mod:`.partitioning`), a hash of the join keys otherwise;
* :func:`by_chunk` – the rows regrouped so that partition ``i`` is chunk ``i``;
* :func:`watch` – futures' results as they finish, with a deadline and a cancel check.

Errors: :class:`TimeoutExpired` and :class:`Cancelled` (failure classes ``timeout`` and
``cancelled``, see :mod:`skyfeast.adapters.failures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from skyfeast.adapters.failures import FailureClass, ProviderDown
from skyfeast.featurestore.repo import WriteTarget

INPUT_BLOCK = "64MiB"
"""Largest input partition (uncompressed parquet) a task reads: a day of events in one file is
split by row groups instead of arriving as one multi-GB pandas frame."""


class TimeoutExpired(Exception):
    """The job's timeout passed before all chunks finished."""

    failure_class = FailureClass.TIMEOUT


class Cancelled(Exception):
    """The run was cancelled (shutdown or operator)."""

    failure_class = FailureClass.CANCELLED


@dataclass
class ChunkBook:
    """Resume state of a run: which partitions (chunks) are already written.

    ``partitions`` is fixed at a run's first attempt and reused by every later
    attempt, on any provider, so that chunk ``i`` always holds the same
    entities: a hash of the join keys picks the chunk, or, when ``ranges`` is
    set (:class:`skyfeast.featurestore.partitioning.KeyRanges`), the entity's
    slice of the serialised-key order.  ``record`` is called once per chunk as
    soon as it is written.
    """

    partitions: int | None = None
    ranges: Any = None
    join: str | None = None  # a composed model job's way of joining its upstreams (broadcast or shuffle)
    done: dict[int, dict] = field(default_factory=dict)
    record: Callable[[int, dict], None] = lambda i, stats: None


def n_workers(client) -> int:
    """Workers of ``client``'s cluster, at least 1 (an unreachable scheduler surfaces when work is submitted)."""
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except Exception:
        return 1


def fix_partitioning(client, items: Sequence[tuple[Any, WriteTarget, ChunkBook, int]]) -> list[BaseException | None]:
    """Fix the partitioning of every ``(ddf, target, book, wanted)`` whose book has none yet.

    ``wanted`` partitions, hash-split; for a store kept in key order, key ranges from
    a sample of ``ddf`` (all samples in one computation) instead, which may make
    fewer.  Books that already have a partitioning (a resumed run) keep it.  A key
    type Feast cannot serialise keeps the hash split: the writer names the problem.
    Returns, per item, None or the error that sampling raised (that book is left
    unfixed, so the next attempt samples again).
    """
    from skyfeast.featurestore.partitioning import keeps_key_order, key_ranges, sample_rows, serialised_keys

    errors: list[BaseException | None] = [None] * len(items)
    ranged = []
    for i, (ddf, target, book, wanted) in enumerate(items):
        if book.partitions is None:
            book.partitions = wanted
            if keeps_key_order(target):
                ranged.append(i)
    if not ranged:
        return errors
    try:
        with client.as_current():
            samples = client.compute([sample_rows(items[i][0], items[i][1]) for i in ranged], sync=True)
    except Exception:
        # one view's input failed the joint computation: sample each alone, so that only the views
        # whose input fails carry an error (a view's failure cancels that view only)
        samples = []
        for i in ranged:
            try:
                with client.as_current():
                    samples.append(client.compute(sample_rows(items[i][0], items[i][1]), sync=True))
            except Exception as exc:
                errors[i], items[i][2].partitions = exc, None
                samples.append(None)
    for i, sample in zip(ranged, samples):
        _, target, book, _ = items[i]
        if sample is None:  # its error is set above
            continue
        try:
            ranges = key_ranges(serialised_keys(sample.dropna(), target), book.partitions)
        except Exception:  # keys Feast cannot serialise (a transform may still convert them): hash chunks
            continue
        if ranges is not None:  # None: no rows in the range, any split will do
            book.ranges, book.partitions = ranges, ranges.partitions
    return errors


def by_chunk(client, ddf, target: WriteTarget, book: ChunkBook) -> list:
    """``ddf`` regrouped by ``book``'s partitioning, as one ``Delayed`` per chunk: item ``i`` holds
    chunk ``i``'s entities.

    The graph is lowered here, with ``client`` current, because Dask picks the shuffle method
    when it lowers: outside, with no default client, it picks the "disk" shuffle (partd files
    in one worker's temporary directory: slower here, and wrong when workers do not share a disk)
    instead of this cluster's p2p shuffle."""
    with client.as_current():
        if book.ranges is not None:
            from skyfeast.featurestore.partitioning import range_shuffle

            return range_shuffle(ddf, target, book.ranges).to_delayed()
        return ddf.shuffle(on=list(target.join_keys), npartitions=book.partitions).to_delayed()


def watch(client, futures: Sequence, *, on_result: Callable[[Any, Any], None],
          on_error: Callable[[Any, BaseException], None] | None = None, deadline: float | None = None,
          cancelled: Callable[[], bool] | None = None) -> None:
    """Hand each future's result to ``on_result(future, result)`` as it finishes.

    A future that raised goes to ``on_error(future, exc)``; without ``on_error`` its
    exception propagates.  Past ``deadline`` (``time.monotonic()``) raises
    :class:`TimeoutExpired`; ``cancelled()`` returning True raises :class:`Cancelled`
    (it may raise :class:`~skyfeast.adapters.failures.ProviderDown` itself).  Any
    exception leaving cancels the unfinished futures, except ``ProviderDown``: a hung or
    lost scheduler would only block the cancel request.
    """
    from distributed import as_completed

    if not futures:
        return
    cancelled = cancelled or (lambda: False)
    pending = set(futures)
    try:
        ac = as_completed(futures, with_results=False, loop=client.loop)
        while pending:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutExpired(f"timed out with {len(pending)} of {len(futures)} chunks unfinished")
            if cancelled():
                raise Cancelled("cancelled while running")
            try:
                batch = ac.next_batch(block=False)
            except StopIteration:
                break
            if not batch:
                time.sleep(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
                continue
            for fut in batch:
                pending.discard(fut)
                try:
                    value = result(fut, deadline, cancelled)
                except (TimeoutExpired, Cancelled, ProviderDown):
                    raise
                except Exception as exc:  # includes FutureCancelledError (scheduler lost)
                    if on_error is None:
                        raise
                    on_error(fut, exc)
                    continue
                on_result(fut, value)
    except ProviderDown:
        raise
    except BaseException:
        if client.status == "running":
            client.cancel(list(pending), force=True)
        raise


def result(fut, deadline: float | None, cancelled: Callable[[], bool]):
    """``fut.result()`` that keeps checking the deadline and ``cancelled``: fetching a finished
    task's result from a scheduler that hung right after it finished would otherwise block forever.

    A fetch that takes longer than a second is not a failure by itself (a loaded scheduler can
    be that slow): it is retried until the deadline, or until ``cancelled`` says stop (or raises
    ProviderDown, when the health monitor opened the provider's circuit)."""
    while True:
        try:
            return fut.result(timeout=1.0)
        except TimeoutError:
            if fut.status == "error":
                raise  # the task itself raised a TimeoutError (its exception arrives with the task's state)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutExpired("timed out fetching a finished partition's result") from None
            if cancelled():
                raise Cancelled("cancelled while running") from None


__all__ = ["INPUT_BLOCK", "Cancelled", "ChunkBook", "TimeoutExpired", "by_chunk", "fix_partitioning", "n_workers",
           "result", "watch"]
