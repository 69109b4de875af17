"""Run a (job, window): claim it in the ledger, place it, execute, fail over, record.

One :class:`Runner` per daemon or CLI invocation; ``run_window`` is
thread-safe and may be called concurrently for different windows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from skyfeast.adapters.failures import FailureClass, ProviderDown, classify, describe
from skyfeast.featurestore.chunks import ChunkBook
from skyfeast.featurestore.repo import FeastRepo
from skyfeast.scheduler.config import Config, FeatureJob, ModelJob
from skyfeast.scheduler.control.liveness import Liveness
from skyfeast.scheduler.control.policy import ProviderState, Step, backoff, next_step, place
from skyfeast.scheduler.control.providers import ProviderPool
from skyfeast.scheduler.errors import DataError
from skyfeast.scheduler.ledger import PENDING, Ledger
from skyfeast.scheduler.ledger.core import DONE
from skyfeast.scheduler.run.executor import GroupMember, ModelGroupError, run_feature_job, run_group_job, run_model_job
from skyfeast.scheduler.run.heartbeat import Heartbeat
from skyfeast.scheduler.run.joins import join_way
from skyfeast.scheduler.run.offline import owner_of, write_manifest
from skyfeast.scheduler.run.sources import resolve
from skyfeast.scheduler.run.usercode import import_callable
from skyfeast.scheduler.timing.windows import Window

log = logging.getLogger("skyfeast.runner")


@dataclass
class Outcome:
    job: str
    window: Window
    status: str  # succeeded | partial | failed | cancelled | skipped | upstream_failed
    run_id: int | None = None
    provider: str | None = None
    attempts: int = 0
    rows: int = 0
    rows_online: int = 0
    partitions: int = 0
    seconds: float = 0.0
    failure_class: str | None = None
    error: str | None = None
    reason: str | None = None
    # seconds per phase of the successful attempt: the executor's (plan, submit, compute, write),
    # then registry (Feast's interval) and record (manifest and the ledger's success write)
    phases: dict[str, float] = field(default_factory=dict)
    # the successful attempt's task seconds on the workers, summed over tasks, by phase: read,
    # shuffle, transform, stage, online, offline, transfer, other (skyfeast.featurestore.phases)
    work: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()}
        return d


class Reporter(Protocol):
    def attempt(self, job: str, window: Window, provider: str, number: int) -> None: ...
    def progress(self, job: str, window: Window, done: int, total: int) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...


class NullReporter:
    def attempt(self, job, window, provider, number):  # noqa: D401 - protocol impl
        pass

    def progress(self, job, window, done, total):
        pass

    def finished(self, outcome):
        pass


class RunObserver(Protocol):
    """Told where attempts and runs end (the daemon's metrics); must be cheap and must not raise."""

    def attempt_ended(self, job: str, provider: str, outcome: str, failure_class: str | None) -> None: ...
    def failed_over(self, job: str, from_provider: str, to_provider: str, cause: str) -> None: ...
    def run_ended(self, job: FeatureJob | ModelJob, outcome: Outcome) -> None: ...


class NullObserver:
    def attempt_ended(self, job, provider, outcome, failure_class):
        pass

    def failed_over(self, job, from_provider, to_provider, cause):
        pass

    def run_ended(self, job, outcome):
        pass


class Runner:
    def __init__(self, cfg: Config, ledger: Ledger, repo: FeastRepo, pool: ProviderPool,
                 reporter: Reporter | None = None, stop: threading.Event | None = None,
                 liveness: Liveness | None = None, observer: RunObserver | None = None):
        self.cfg = cfg
        self.ledger = ledger
        self.repo = repo
        self.pool = pool
        self.reporter = reporter or NullReporter()
        self.observer = observer or NullObserver()
        self.stop = stop or threading.Event()
        self.liveness = liveness or Liveness()
        self.heartbeat = Heartbeat(ledger, cfg.daemon.run_lease, self.liveness)
        self._registry_lock = threading.Lock()
        self._progress_at: dict[str, float] = {}  # provider -> last time one of its tasks finished

    def close(self) -> None:
        self.heartbeat.close()

    # ------------------------------------------------------------------ public
    def run_window(self, job: FeatureJob | ModelJob, window: Window, *, trigger: str = "manual",
                   force: bool = False, drill_as: str | None = None) -> Outcome:
        """Claim (job, window) in the ledger and run it; a window someone else owns is skipped.

        ``drill_as`` makes it a drill run: claimed and recorded under that job name, so the
        production run of the window is neither claimed nor rewritten; computed and staged as
        usual, but nothing is published (no online or offline write, no Feast interval)."""
        run_id, why = self.ledger.claim(drill_as or job.name, window.start, window.end, trigger=trigger,
                                        lease=self.cfg.daemon.run_lease, force=force)
        if run_id is None:
            out = Outcome(job.name, window, "skipped", reason=f"already {why}")
            self.reporter.finished(out)
            return out
        return self.execute_claimed(job, window, run_id, drill=drill_as is not None)

    def execute_claimed(self, job: FeatureJob | ModelJob, window: Window, run_id: int, *,
                        drill: bool = False) -> Outcome:
        """Run a window this process already claimed; resumes from the chunks the ledger holds."""
        t0 = time.monotonic()
        cancel = self.heartbeat.register(run_id)
        try:
            out = self._execute(job, window, run_id, cancel, drill)
        finally:
            self.heartbeat.unregister(run_id)
        out.seconds = round(time.monotonic() - t0, 3)
        self.reporter.finished(out)
        if not drill:
            self.observer.run_ended(job, out)
        return out

    # ------------------------------------------------------------------ internals
    def _execute(self, job, window: Window, run_id: int, cancel: threading.Event, drill: bool = False) -> Outcome:
        waiting = self._upstream_pending(job, window)
        if waiting:
            # its input is still being computed (e.g. a new leader picked both runs up separately):
            # hand the run back instead of failing it; the next poll claims it again
            self.ledger.release_runs([run_id])
            return Outcome(job.name, window, "skipped", run_id=run_id, reason=waiting)
        failed_up = self._upstream_failed(job, window)
        if failed_up:
            # no attempt is spent on input that cannot exist; the upstream's success requeues it
            if not self.ledger.finish_run(run_id, status="upstream_failed", error=failed_up):
                log.warning("run %s was taken over by another process before it could be recorded", run_id)
            return Outcome(job.name, window, "upstream_failed", run_id=run_id, reason=failed_up)
        locality = self._locality(job, window)
        candidates = place(self.cfg.allowed_providers(job), self.pool.views(), locality)
        out = Outcome(job.name, window, "failed", run_id=run_id)
        if not candidates:
            return self._fail(out, FailureClass.INFRASTRUCTURE, "no provider is available for this job")
        user_failures = 0
        last_user_error: str | None = None
        idx = 0
        cancelled = lambda: self.stop.is_set() or cancel.is_set()  # noqa: E731
        while idx < len(candidates):
            provider = candidates[idx]
            aid = self.ledger.start_attempt(run_id, provider)
            out.attempts += 1
            out.provider = provider
            self.reporter.attempt(job.name, window, provider, out.attempts)
            t_attempt = time.perf_counter()
            try:
                res = self._attempt(job, window, provider, self._book(run_id, aid),
                                    self._watchdog(provider, cancelled), publish=not drill, run_id=run_id)
            except Exception as exc:  # classified below; nothing escapes a run
                fclass = classify(exc)
                err = describe(exc)
                log.warning("%s %s on %s: %s failure: %s", job.name, window, provider, fclass.value, err)
                self.ledger.finish_attempt(aid, outcome="failed", failure_class=fclass.value, error=err)
                self.observer.attempt_ended(job.name, provider, "failed", fclass.value)
                if fclass is FailureClass.INFRASTRUCTURE:
                    self.pool.mark(provider, ProviderState.DEGRADED)
                repeated = False
                if fclass is FailureClass.USER_CODE:
                    user_failures += 1
                    repeated, last_user_error = err == last_user_error, err
                step = next_step(fclass, user_failures=user_failures, retries=job.retries,
                                 providers_left=len(candidates) - idx - 1, repeated=repeated)
                if step is not Step.GIVE_UP and cancelled():  # a retry or failover was due: resume it later
                    return self._fail(out, FailureClass.CANCELLED, f"cancelled after a {fclass.value} failure: {err}")
                if step is Step.RETRY_SAME:
                    wait = threading.Event()
                    delay = backoff(user_failures)
                    deadline = time.monotonic() + delay
                    while time.monotonic() < deadline and not cancelled():
                        wait.wait(0.1)
                    if cancelled():
                        return self._fail(out, FailureClass.CANCELLED, "cancelled during retry backoff")
                    continue
                if step is Step.FAIL_OVER:
                    self.observer.failed_over(job.name, provider, candidates[idx + 1], fclass.value)
                    idx += 1
                    continue
                return self._fail(out, fclass, err)
            t_registry = time.perf_counter()
            try:
                if not drill:  # a drill published nothing: no interval, no manifest, nothing to copy
                    with self._registry_lock:
                        self.repo.record_materialization(job.feature_view, window.start, window.end, coalesce=True)
            except Exception as exc:  # data is written; only Feast's bookkeeping failed: retryable
                err = f"rows written, but recording the interval in the Feast registry failed: {exc}"
                self.ledger.finish_attempt(aid, outcome="failed", failure_class="infrastructure", error=err)
                self.observer.attempt_ended(job.name, provider, "failed", "infrastructure")
                return self._fail(out, FailureClass.INFRASTRUCTURE, err)
            t_record = time.perf_counter()
            copy = not drill and self._write_manifest(job, window, run_id, provider, res)
            status, partial = "succeeded", None
            if getattr(job, "group", None) is not None:
                self.ledger.finish_models(run_id)
                if res.failed_models:
                    status = "partial"
                    partial = (f"{len(res.failed_models)} of {len(res.failed_models) + res.models_written} models "
                               f"failed, their fields were not written: {_failures(res.failed_models)}")
            if not self.ledger.finish_success(run_id, aid, res.rows_out, copy_to_primary=copy,
                                              published=res.published, status=status, error=partial):
                log.warning("run %s was taken over by another process before it could be recorded", run_id)
            elif not drill:
                self._requeue_downstream(job, window)
            self.observer.attempt_ended(job.name, provider, "succeeded", None)
            phases = {**res.phases, "registry": t_record - t_registry, "record": time.perf_counter() - t_record}
            # the runner's own share of planning: placement, listing the source, importing user code
            phases["plan"] = phases.get("plan", 0.0) + max(0.0, t_registry - t_attempt - sum(res.phases.values()))
            out.phases = {k: round(v, 4) for k, v in phases.items()}
            out.work = dict(res.work)
            out.status = status
            out.error = partial
            out.rows, out.rows_online, out.partitions = res.rows_out, res.rows_online, res.partitions
            return out
        return out  # unreachable: the loop returns

    def _write_manifest(self, job, window: Window, run_id: int, provider: str, res) -> bool:
        """Write the window's manifest next to the outputs; True if any part is off the primary
        storage (the reconciler must copy it there)."""
        stores = self.pool.stores()
        primary = self.cfg.primary_provider
        owners = [owner_of(url, stores) for url in res.files]
        try:
            write_manifest(self.pool.store(provider), job=job.name, feature_view=job.feature_view, window=window,
                           run_id=run_id, provider=provider, files=res.files, rows=res.rows_out)
        except Exception as exc:  # the ledger holds the same list; the reconciler rewrites it on the primary
            log.warning("%s %s: cannot write the manifest on %s: %s", job.name, window, provider, exc)
        return any(o is None or o[0] != primary for o in owners)

    def _upstream_files(self, up_run, upstream, window: Window, provider: str) -> list[tuple[str, dict]]:
        """(url, storage options) of every part file the upstream run wrote, on whichever
        provider's storage each chunk landed (a failed-over run's parts can span two)."""
        recorded = sorted(c["file"] for c in self.ledger.chunks(up_run.id).values() if c.get("file"))
        if recorded:
            stores = self.pool.stores()
            out = []
            for url in recorded:
                hit = owner_of(url, stores)
                if hit is None:
                    raise DataError(f"upstream part {url} is on no configured provider's storage")
                out.append((url, stores[hit[0]].storage_options))
            return out
        store = self.pool.store(up_run.provider or provider)  # runs recorded before chunk files existed
        return [(store.url(k), store.storage_options)
                for k in store.glob(f"offline/{upstream.feature_view}/{window.tag}-part*.parquet")]

    def _watchdog(self, provider: str, cancelled):
        """What executors poll while they wait: True to cancel; raises ProviderDown when the
        health monitor opened the provider's circuit (a hung or partitioned cluster never
        fails its futures by itself)."""
        h = self.cfg.health
        # a provider whose tasks keep finishing is not hung, whatever a slow probe says
        quiet_for = h.timeout.total_seconds() * h.miss_budget + h.interval.total_seconds()
        started = time.monotonic()

        def check() -> bool:
            if self.pool.breaker(provider).state is ProviderState.DOWN and \
                    time.monotonic() - max(started, self._progress_at.get(provider, 0.0)) > quiet_for:
                raise ProviderDown(f"provider {provider} was marked down by the health monitor "
                                   f"and finished no task for {quiet_for:.0f}s")
            return cancelled()
        return check

    def _book(self, run_id: int, attempt_id: int) -> ChunkBook:
        run = self.ledger.get_run(run_id)
        book = ChunkBook(partitions=run.partitions if run else None, done=self.ledger.chunks(run_id))
        if book.partitions is not None:
            stored = self.ledger.key_ranges(run_id)
            if stored is not None:
                from skyfeast.featurestore.partitioning import KeyRanges

                book.ranges = KeyRanges.from_json(json.loads(stored))
            book.join = self.ledger.join_way(run_id)

        def record(i: int, stats: dict) -> None:
            if book.partitions is not None and (run is None or run.partitions is None):
                ranges = None if book.ranges is None else json.dumps(book.ranges.to_json())
                self.ledger.set_partitions(run_id, book.partitions, ranges, book.join)
            self.ledger.record_chunk(run_id, i, stats, attempt_id)

        book.record = record
        return book

    def _fail(self, out: Outcome, fclass: FailureClass, err: str) -> Outcome:
        status = "cancelled" if fclass is FailureClass.CANCELLED else "failed"
        out.status, out.failure_class, out.error = status, fclass.value, err
        if fclass is FailureClass.CANCELLED and self.stop.is_set():
            # shutdown, not an operator's cancel: the attempt is recorded as cancelled, and the
            # run is released with its chunks so that the next daemon (or run) resumes it
            self.ledger.release_runs([out.run_id])
            out.reason = "released for resume after shutdown"
            return out
        if not self.ledger.finish_run(out.run_id, status=status, failure_class=fclass.value, error=err):
            log.warning("run %s was taken over by another process before it could be recorded", out.run_id)
        return out

    def _output_values(self, upstream, up_run) -> int | None:
        """About how many values ``up_run`` of ``upstream`` wrote: its rows times its view's columns
        (keys, features, event time); None if either is unknown."""
        if up_run.rows_written is None:
            return None
        try:
            target = self.repo.write_target(upstream.feature_view)
        except Exception:  # the view is checked before any run; a registry hiccup only costs the estimate
            return None
        return up_run.rows_written * (len(target.join_keys) + len(target.features) + 1)

    def _upstream_pending(self, job, window: Window) -> str | None:
        for name in job.upstreams:
            up = self.ledger.find_run(name, window.start, window.end)
            if up is not None and up.status in PENDING:
                return f"waiting for upstream {name!r} (run {up.id} is {up.status})"
        return None

    def _upstream_failed(self, job, window: Window) -> str | None:
        for name in job.upstreams:
            up = self.ledger.find_run(name, window.start, window.end)
            if up is not None and up.status in ("failed", "cancelled", "upstream_failed"):
                return f"upstream {name!r} {up.status.replace('_', ' ')} (run {up.id})"
        return None

    def _requeue_downstream(self, job, window: Window) -> None:
        """Downstream runs of this window that were held back by an earlier failure of this job
        go back to the queue (a daemon runs them); best effort, as they can be re-run by hand.
        A downstream with another upstream still failed is marked upstream_failed again when run."""
        downstream = [j.name for j in self.cfg.jobs if job.name in j.upstreams]
        try:
            ids = self.ledger.requeue_upstream_failed(downstream, window.start, window.end)
        except Exception as exc:
            log.warning("%s %s: cannot requeue its downstream runs: %s", job.name, window, exc)
            return
        if ids:
            log.info("%s %s succeeded: %d downstream run(s) queued again", job.name, window, len(ids))

    def _source_replica(self, job: FeatureJob, provider: str):
        """(store, path) of the source replica this provider reads: its own, or (``cross_cloud``)
        the first replica, in placement order, on a provider that is not down."""
        src = job.source
        own = src.replica_path(provider)
        if own is not None:
            return self.pool.store(provider), own
        if not src.cross_cloud:
            raise DataError(f"provider {provider!r} holds no replica of {job.name!r}'s source and "
                            "cross_cloud is false")
        for other in place(list(src.replicas or {}), self.pool.views()):
            return self.pool.store(other), src.replicas[other]
        raise ProviderDown(f"no provider holding a replica of {job.name!r}'s source is available")

    def _locality(self, job, window: Window) -> str | None:
        if job.source.type == "job":  # where the first upstream's output is
            up = self.ledger.find_run(job.upstreams[0], window.start, window.end)
            return up.provider if up and up.status in DONE else None
        if job.source.replicas:  # the first listed replica is the preferred place to read it
            return next(iter(job.source.replicas))
        return None

    def _attempt(self, job, window: Window, provider: str, book: ChunkBook, cancelled, publish: bool = True,
                 run_id: int | None = None):
        deadline = time.monotonic() + job.timeout.total_seconds()
        target = self.repo.write_target(job.feature_view)
        store = self.pool.store(provider)

        def progress(done: int, total: int) -> None:
            self._progress_at[provider] = time.monotonic()
            self.reporter.progress(job.name, window, done, total)

        if isinstance(job, FeatureJob):
            start, end = window.read_range(job.source)
            src_store, src_path = self._source_replica(job, provider)
            # an unreachable storage must fail over, not look like a window with no input files
            src_store.check()
            keys = resolve(src_store, src_path, start, end,
                           window_start=window.start if job.source.require_window_days else None)
            fn = import_callable(job.transform, self.cfg.base_dir)
            client = self.pool.client(provider)
            return run_feature_job(client=client, store=store, job=job, window=window, target=target, transform=fn,
                                   keys=keys, deadline=deadline, progress=progress, cancelled=cancelled, book=book,
                                   source_store=src_store, stores=self.pool.stores(), publish=publish)
        parts = []  # each upstream's part files: the first one's give the chunks, the others are joined
        # what the other upstreams wrote for the window, rows x columns: only join: auto weighs it
        other_values: int | None = 0 if job.source.join == "auto" else None
        for name in job.upstreams:
            upstream = self.cfg.job(name)
            up_run = self.ledger.find_run(upstream.name, window.start, window.end)
            if up_run is None or up_run.status not in DONE:
                raise DataError(
                    f"upstream job {upstream.name!r} has no successful run for window {window}; run it first"
                )
            files = self._upstream_files(up_run, upstream, window, provider)
            if not files:
                raise DataError(f"upstream job {upstream.name!r} wrote no rows for window {window}")
            if parts and other_values is not None:
                values = self._output_values(upstream, up_run)
                other_values = None if values is None else other_values + values
            parts.append((f"{up_run.id}@{up_run.ended_at}", files))
        inputs, joins = parts[0][1], tuple(parts[1:])
        join = join_way(job.source.join, other_values)  # used at the run's first attempt only (the book keeps it)
        if job.group is not None:
            members = self._group_members(job, run_id, provider, target)
            client = self.pool.client(provider)

            def failed_before(errors: dict[str, str]) -> dict[str, str]:
                self.ledger.fail_models(run_id, errors)
                return {m: e or "failed" for m, _, _, outcome, e in self.ledger.run_models(run_id)
                        if outcome == "failed"}

            res = run_group_job(client=client, store=store, job=job, window=window, target=target, members=members,
                                inputs=inputs, joins=joins, join=join, deadline=deadline, failed_before=failed_before,
                                progress=progress, cancelled=cancelled, book=book, stores=self.pool.stores(), publish=publish)
            res.models_written = len(members) - len(res.failed_models)
            return res
        fn = import_callable(job.model.scorer, self.cfg.base_dir)
        client = self.pool.client(provider)
        return run_model_job(client=client, store=store, job=job, window=window,
                             target=target, scorer=fn, inputs=inputs, joins=joins, join=join, deadline=deadline,
                             progress=progress, cancelled=cancelled, book=book, stores=self.pool.stores(), publish=publish)


    def _group_members(self, job: ModelJob, run_id: int, provider: str, target) -> list[GroupMember]:
        """The versions this run scores with (pinned at its first attempt, so every attempt on any provider
        uses the same ones), with their artifacts on ``provider``'s storage (copied there, checked, from
        another provider's if missing)."""
        from skyfeast.featurestore.models import ModelRegistry, RegistryError, read_verified
        from skyfeast.featurestore.models.groups import field_of, problems, select

        reg = ModelRegistry(self.ledger.engine)
        g = job.group
        try:
            pinned = self.ledger.run_models(run_id)
            if not pinned:
                chosen = select(reg, models=g.models, prefix=g.prefix, tag=g.tag, alias=g.alias)
                pinned = self.ledger.pin_models(run_id, [(v.model, v.version, v.sha256) for v in chosen])
            versions = reg.versions_of((m, v) for m, v, *_ in pinned)
        except RegistryError as exc:
            raise ModelGroupError(f"model group of job {job.name!r}: {exc}") from None
        bad = problems(versions, view=job.feature_view, view_fields=set(target.features),
                       versions_field=g.versions_field)
        if bad:
            raise ModelGroupError(f"model group of job {job.name!r}: " + "; ".join(bad[:5])
                                  + (f"; and {len(bad) - 5} more" if len(bad) > 5 else ""))
        store = self.pool.store(provider)
        have = set(store.list("models/"))
        for v in versions:
            if v.artifact_key in have:
                continue
            data = None
            for name, other in self.pool.stores().items():
                if name == provider:
                    continue
                try:
                    data = read_verified(other, v)
                    break
                except Exception:  # not there, corrupt there, or that storage is down: try the next
                    continue
            if data is None:
                raise ModelGroupError(f"model {v.model!r} version {v.version}: artifact {v.artifact_key} is on no "
                                      f"provider's storage with sha256 {v.sha256}")
            store.write_bytes(v.artifact_key, data)
            log.info("copied model %s version %s to provider %s", v.model, v.version, provider)
        return [GroupMember(v.model, v.version, field_of(v), v.flavour, tuple(v.features), v.sha256, v.size,
                            store.url(v.artifact_key)) for v in versions]


def _failures(failed: dict[str, str], limit: int = 5) -> str:
    items = [f"{n} ({e})" for n, e in sorted(failed.items())]
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def order_jobs(jobs: list[FeatureJob | ModelJob]) -> list[FeatureJob | ModelJob]:
    """Upstream jobs before the jobs that read their output (config checks exclude cycles)."""
    by_name = {j.name: j for j in jobs}
    done: dict[str, None] = {}

    def visit(j) -> None:
        if j.name in done:
            return
        for up in j.upstreams:
            if up in by_name and up not in done:
                visit(by_name[up])
        done[j.name] = None

    for j in jobs:
        visit(j)
    return [by_name[n] for n in done]


def now_utc() -> datetime:
    from datetime import timezone

    return datetime.now(timezone.utc)
