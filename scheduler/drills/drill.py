"""``skyfeast drill``: break the preferred provider of a job mid-run and measure recovery.

The faults (see :mod:`skyfeast.scheduler.drills.faults`): against a cluster this process
manages (``type: local``) they are real: ``kill`` SIGKILLs the Dask scheduler
process, ``hang`` SIGSTOPs it (SIGCONT restores), ``partition`` makes the TCP
forwarder between this process and the scheduler drop every byte (forwarding
again restores). ``storage-outage`` makes the provider's storage unreachable
(local root moved away; S3/GCS endpoint pointed at a closed port). Against a
remote cluster the cluster faults fence the provider inside this process
(its circuit is forced open).

:func:`run_drill` returns the report (also used by ``bench/failover.py``):
time to detection, time to the first finished chunk on the new provider, run
completion, rows, duplicate and lost windows, restore and failback times, a
timeline, and each SLO of the scenario with pass/fail. The CLI exits 1 when an
SLO is breached or the run did not complete. Every drill is also one row of the
ledger's drill reports, from its start to its verdict (:mod:`skyfeast.scheduler.drills.records`).

Production is left alone. The drill's run is recorded as job ``drill:<job>``
(trigger ``drill``; :mod:`skyfeast.scheduler.drills.records`), never as the
production run of the window, whose record stays as it was. It computes and
stages every chunk on the workers as a production run does, so failover and
resume are exercised for real, but under ``drills/`` and without the publish
phase: nothing reaches the online store, Feast's offline parts or Feast's
registry, and the staged parts are removed at the end (on every provider's
storage, once the fault is lifted). Readers see nothing of a drill.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfeast.scheduler.config import Config, load_config
from skyfeast.scheduler.control.policy import ProviderState, place
from skyfeast.scheduler.drills.faults import make_fault
from skyfeast.scheduler.drills.plan import DrillPlan, check_preferred, plan_drill
from skyfeast.scheduler.drills.records import close_orphans, drill_job, recorded
from skyfeast.scheduler.errors import UsageError
from skyfeast.scheduler.run.executor import DRILL_STAGING

STUCK_AFTER = 180.0  # seconds the drilled run may take after the fault before the fault is lifted
ANNOUNCE_AFTER = 2.0  # a wait still going after this long says what it waits for
CANCEL_JOIN = 5.0  # seconds a cancelled drill waits for its run before it reports


class DrillCancelled(Exception):
    """The drill was told to stop (its daemon is shutting down) before its run got part-way."""


def _wait_for(pred, timeout: float, step: float = 0.1, cancel: threading.Event | None = None,
              announce: Callable[[], None] | None = None):
    """``pred()``'s first true value within ``timeout`` seconds; None on timeout, or at once when
    ``cancel`` is set. ``announce()`` is called once, when the wait has lasted
    :data:`ANNOUNCE_AFTER` seconds."""
    t0 = time.monotonic()
    end = t0 + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        if announce is not None and time.monotonic() - t0 >= ANNOUNCE_AFTER:
            announce()
            announce = None
        if cancel is not None:
            if cancel.wait(step):
                return None
        else:
            time.sleep(step)
    return None


def run_drill(config: str | Path | Config, provider: str, mode: str | None = None, *, job: str | None = None,
              scenario: str | None = None, recovery: bool = True, at: str = "now",
              min_chunks: int = 1, warm: bool = False, runner=None,
              progress: Callable[[str], None] | None = None, drill_id: int | None = None,
              cancel: threading.Event | None = None, left: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one drill and return its report (``ok`` False on a breached SLO or an unfinished run).

    ``recovery`` False skips waiting for the provider to become healthy and preferred again
    after the restore (benchmarks; ``restore_s`` and ``failback_s`` are then None).
    ``warm`` starts every provider the job may use before the run (as in a daemon whose
    clusters are already up), so that failover is measured without a cluster's cold start.
    ``runner`` runs the drill in an existing runtime (:func:`skyfeast.scheduler.app.open_runtime`) instead
    of a new one; ``config`` must then be that runtime's Config.
    ``at`` picks the window (the latest complete one at that time). The fault lands once
    ``min_chunks`` chunks are recorded. ``progress`` gets one line per step as it happens
    (run started, fault injected, detected, first task elsewhere, done, restored, failback).

    The drill is recorded in the ledger's drill reports (:func:`~skyfeast.scheduler.drills.records.recorded`):
    a new row, or the ``running`` row ``drill_id`` made by its caller; the report says which
    (``drill_id``). Setting ``cancel`` winds the drill down within seconds (the fault lifted, the
    report saying ``cancelled``). Raises :class:`UsageError` for a drill that cannot exercise
    failover (``NotFound``, ``Conflict``: :mod:`skyfeast.scheduler.drills.plan`)
    before its row is made; with ``drill_id``, a failure of the same checks later finishes that row.

    ``left`` is for a command that ends its process right after printing the report: once the
    drill is recorded, its own runtime is left to the process's exit (:meth:`Runtime.leave_to_exit`:
    local clusters killed, not shut down gracefully) and ``left()`` is called, and the caller must
    then end the process at once.  Not called when the runtime was closed instead (a cluster
    elsewhere, or ``runner`` given).
    """
    from skyfeast.scheduler.app import open_runtime
    from skyfeast.scheduler.ledger import reach_ledger

    cfg = config if isinstance(config, Config) else load_config(config, meanwhile=reach_ledger)
    plan = plan_drill(cfg, provider, mode, job=job, scenario=scenario, at=at)
    say = progress or (lambda line: None)

    def drill(run, on_run: Callable[[int], None]) -> dict[str, Any]:
        report = _in_runtime(cfg, run, plan, recovery, min_chunks, warm, say, on_run, cancel)
        checks = {
            "max_detection_s": report["detection_s"] is not None
            and report["detection_s"] <= plan.slo["max_detection_s"],
            "max_first_task_s": (report["first_task_on_new_provider_s"] is not None
                                 and report["first_task_on_new_provider_s"] <= plan.slo["max_first_task_s"]),
        }
        report["slo"] = {k: {"limit": plan.slo[k], "ok": v} for k, v in checks.items()}
        report["ok"] = (report["completed"] and all(checks.values()) and report["duplicate_windows"] == 0
                        and not report["run_blocked_until_restore"] and not report["cancelled"]
                        and report.get("same_model_versions", True))
        return report

    def checked_and_recorded(run) -> dict[str, Any]:
        if drill_id is None:  # a drill refused is no drill: no row (a caller's row was checked by its caller)
            check_preferred(cfg, run.pool, plan, run.ledger)
        return recorded(run.ledger, plan, lambda on_run: drill(run, on_run), drill_id, drill_deadline(cfg))

    if runner is not None:
        return checked_and_recorded(runner)
    with contextlib.ExitStack() as stack:
        rt = stack.enter_context(open_runtime(cfg))
        report = checked_and_recorded(rt.runner)
        if left is not None and rt.leave_to_exit():  # recorded: the clusters go with the process
            stack.pop_all()
            left()
        return report


def drill_deadline(cfg: Config) -> float:
    """Seconds by which a drill has ended, whatever happens: every wait of :func:`_drill` at its
    limit, every provider's cluster start, and a margin. A drill row still ``running`` after this
    long is abandoned: its process is gone (:mod:`skyfeast.scheduler.ledger.drills`)."""
    waits = (180 + 120 + 2 * STUCK_AFTER + 600  # part-way, detection, first task, blocked run, its join
             + cfg.health.blocklist_ttl.total_seconds() + 120 + cfg.health.failback_after.total_seconds() + 30)
    starts = sum(p.cluster.start_timeout.total_seconds() for p in cfg.providers.values()
                 if hasattr(p.cluster, "start_timeout"))
    return waits + starts + 300


def _in_runtime(cfg: Config, runner, plan: DrillPlan, recovery: bool, min_chunks: int, warm: bool,
                say: Callable[[str], None], on_run: Callable[[int], None],
                cancel: threading.Event | None) -> dict[str, Any]:
    pool, job, provider, mode = runner.pool, plan.job, plan.provider, plan.mode
    check_preferred(cfg, pool, plan, runner.ledger)
    # storage faults are set up before the run (a relayed endpoint must be in the storage
    # options its tasks get); cluster faults once the run has started the cluster
    faults = [make_fault(pool, provider, mode)] if mode == "storage-outage" else []
    try:
        for f in faults:
            f.prepare()
        if warm:
            warm_up(pool, cfg.allowed_providers(job))
        return _drill(cfg, runner, job, plan.window, provider, mode, faults, recovery, min_chunks, say, on_run, cancel)
    finally:
        for f in faults:  # before the pool closes: a SIGSTOPped scheduler cannot be terminated
            f.close()


# what a worker imports for its first feature task (Feast among it: seconds on a cold worker)
WORKER_MODULES = ("skyfeast.scheduler.run.executor", "skyfeast.featurestore.writers")


def warm_up(pool, providers) -> None:
    """Start (connect) these providers' clusters, in parallel, and have their workers import
    the task code, so that a timed run does not pay for it; raises what ``pool.client`` raises."""
    import importlib

    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            client = pool.client(name)
            for mod in WORKER_MODULES:
                client.run(importlib.import_module, mod)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,), name=f"skyfeast-warm-{p}") for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def remove_staged(pool, providers, job, window) -> int:
    """Remove what drills of ``job`` staged for ``window`` on these providers' storages (best
    effort: a storage still down keeps its parts, which no reader looks at). Returns how many."""
    n = 0
    for name in providers:
        try:
            store = pool.store(name)
            keys = store.list(f"{DRILL_STAGING}/{job.feature_view}/{window.tag}-part")
            if keys:
                store.delete(keys)
            n += len(keys)
        except Exception:  # noqa: BLE001 - left for the next drill of the window
            continue
    return n


def _drill(cfg: Config, runner, job, window, provider: str, mode: str, faults: list, recovery: bool,
           min_chunks: int, say: Callable[[str], None], on_run: Callable[[int], None],
           cancel: threading.Event | None) -> dict[str, Any]:
    pool, ledger = runner.pool, runner.ledger

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()


    name = drill_job(job.name)
    close_orphans(ledger, job.name, cfg.daemon.run_lease)
    result: dict[str, Any] = {}
    prior = ledger.find_run(name, window.start, window.end)
    # a re-drill of a window keeps the drill's run row, and with it the attempts of earlier drills
    earlier = {a["id"] for a in ledger.attempts(prior.id)} if prior else set()
    t_start = time.monotonic()

    def step(what: str, at: float | None = None) -> None:
        say(f"+{(at if at is not None else time.monotonic()) - t_start:6.1f}s  {what}")

    def wait(pred, timeout: float, step_s: float = 0.1, *, what: str):
        """Every wait ends at once on cancel, and one still going after a couple of seconds says
        what it waits for and for how long at most."""
        return _wait_for(pred, timeout, step_s, cancel,
                         announce=lambda: step(f"waiting for {what} (at most {timeout:.0f} s)"))

    def join(limit: float, what: str) -> None:
        """Wait for the run's thread: :data:`CANCEL_JOIN` seconds once cancelled, else up to ``limit``."""
        if cancelled():
            t.join(timeout=CANCEL_JOIN)
        else:
            _wait_for(lambda: not t.is_alive(), limit, 0.1,
                      announce=lambda: step(f"waiting for {what} (at most {limit:.0f} s)"))

    def run() -> None:
        try:
            result["o"] = runner.run_window(job, window, trigger="drill", force=True, drill_as=name)
        except Exception as exc:  # noqa: BLE001  (reported by the drill, in its words)
            result["error"] = exc

    t = threading.Thread(target=run, name="skyfeast-drill-run", daemon=True)
    t.start()

    def mid_run():
        r = ledger.find_run(name, window.start, window.end)
        return r if r and r.status == "running" and r.partitions and len(ledger.chunks(r.id)) >= min_chunks else None

    # a run that ends before it is seen part-way (a window too small to drill) ends the wait at once
    run = wait(lambda: mid_run() or (not t.is_alive() and "ended"), 180,
               what=f"{job.name} to get part-way on {provider} ({min_chunks} chunk(s) staged)")
    if run is None or run == "ended":
        join(60, f"{job.name}'s run to end")
        if cancelled():
            raise DrillCancelled(f"the drill was cancelled before {job.name} got part-way on {provider}")
        if "error" in result:  # the run itself failed before it got anywhere: say how, not "too small"
            exc = result["error"]
            raise UsageError(f"{job.name}'s drill run on {provider} failed before it got part-way: "
                             f"{type(exc).__name__}: {exc}")
        ended = "" if run is None else " (its run ended first)"
        raise UsageError(f"{job.name} never got part-way on {provider}{ended}; is its window too small to drill?")
    on_run(run.id)
    step(f"run started: {job.name} {window} on {provider}, recorded as {name} (run {run.id}), "
         f"{len(ledger.chunks(run.id))}/{run.partitions} chunk(s) staged")
    if not faults:
        faults.append(make_fault(pool, provider, mode))
    fault = faults[0]
    done_at_fault = len(ledger.chunks(run.id))
    t_fault = time.monotonic()
    fault.inject()
    step(f"fault injected: {fault.how}", t_fault)

    def detected():
        a = ledger.attempts(run.id)
        return (pool.breaker(provider).state is ProviderState.DOWN
                or any(x["provider"] == provider and x["outcome"] == "failed" and x["id"] not in earlier for x in a))

    t_detect = time.monotonic() if wait(detected, 120, 0.05, what=f"the failure of {provider} to be detected") else None
    step(f"detected: {provider} is down" if t_detect is not None
         else "detected: not before the drill was cancelled" if cancelled() else "detected: not within 120 s", t_detect)

    def first_task_elsewhere():
        attempts = {a["id"]: a["provider"] for a in ledger.attempts(run.id)}
        return any(attempts.get(c["attempt_id"]) not in (None, provider) for c in ledger.chunks(run.id).values())

    t_first = time.monotonic() if wait(lambda: first_task_elsewhere() or not t.is_alive(), STUCK_AFTER, 0.05,
                                    what="a chunk to finish on another provider") \
        and first_task_elsewhere() else None
    step("first task elsewhere: a chunk finished on another provider" if t_first is not None
         else "first task elsewhere: none (no chunk finished on another provider"
         + (" before the drill was cancelled)" if cancelled() else ")"), t_first)
    # A run can stay blocked on the faulty provider (executor._watch calls Future.result()
    # without a deadline on a future that finished just before a hang or partition; that
    # call waits for the scheduler, not for the watchdog). Such a run would never finish
    # while the fault lasts, so the fault is lifted after STUCK_AFTER and the report says so.
    blocked = wait(lambda: not t.is_alive(), STUCK_AFTER, 0.1, what=f"{job.name}'s run to finish, before the fault is lifted") is None \
        and not cancelled()
    if blocked:
        step(f"run blocked on {provider} for {STUCK_AFTER:.0f} s: lifting the fault")
        fault.restore()
    if cancelled():
        step("cancelled: lifting the fault")
        fault.restore()
    join(600, f"{job.name}'s run to finish" + (" now that the fault is lifted" if blocked else ""))
    t_done = time.monotonic()
    outcome = result.get("o")
    crashed = result.get("error")
    step(f"done: {outcome.status} on {outcome.provider} after {outcome.attempts} attempt(s)" if outcome
         else f"done: the run raised {type(crashed).__name__}: {crashed}" if crashed is not None
         else "done: the run did not finish", t_done)
    fault.restore()
    t_restore0 = time.monotonic()
    restored = recovery and wait(lambda: pool.breaker(provider).state is ProviderState.HEALTHY,
                                  cfg.health.blocklist_ttl.total_seconds() + 120, 0.2,
                                  what=f"{provider} to be healthy again")
    t_restored = time.monotonic()
    if recovery:
        step(f"restored: {provider} is healthy again" if restored else f"restored: {provider} never became healthy",
             t_restored)
    back = None
    if restored:
        back = wait(lambda: (place(cfg.allowed_providers(job), pool.views()) or [None])[0] == provider,
                     cfg.health.failback_after.total_seconds() + 30, 0.2, what=f"{provider} to be preferred again")
    t_back = time.monotonic()
    if recovery:
        step(f"failback: {provider} is preferred again" if back else f"failback: {provider} is not preferred again",
             t_back)
    group = getattr(job, "group", None)
    model_sets = staged_model_sets(pool, cfg.allowed_providers(job), job, window) if group is not None else None
    staged_removed = remove_staged(pool, cfg.allowed_providers(job), job, window)
    rows = ledger.runs(job=name, limit=100_000)
    same = [r for r in rows if (r.window_start, r.window_end) == (window.start, window.end)]
    final = ledger.get_run(run.id)
    attempts = [a for a in ledger.attempts(run.id) if a["id"] not in earlier]
    by_attempt = {a["id"]: a["provider"] for a in attempts}
    chunks = ledger.chunks(run.id)

    def rel(x):
        return round(x - t_start, 3) if x is not None else None

    return {
        "provider": provider, "mode": mode, "fault": fault.how, "job": job.name,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "recorded_as": name, "run_id": run.id, "published": False, "staged_parts_left_removed": staged_removed,
        "detection_s": round(t_detect - t_fault, 3) if t_detect is not None else None,
        "first_task_on_new_provider_s": round(t_first - t_fault, 3) if t_first is not None else None,
        "completed": bool(outcome and outcome.status == "succeeded"),
        "completed_on": outcome.provider if outcome else None,
        "error": outcome.error if outcome else
        (f"the run raised {type(crashed).__name__}: {crashed}" if crashed is not None
         else "the drill was cancelled before its run finished" if cancelled() else "the run did not finish"),
        "rows_written": final.rows_written if final else None,
        "chunks": len(chunks), "partitions": final.partitions if final else None,
        "chunks_done_at_fault": done_at_fault,
        "chunks_by_provider": {p: sum(by_attempt.get(c["attempt_id"]) == p for c in chunks.values())
                               for p in dict.fromkeys(by_attempt.values())},
        "attempts": [{k: a[k] for k in ("provider", "outcome", "failure_class", "error")} for a in attempts],
        "duplicate_windows": max(0, len(same) - 1), "lost_windows": 0 if same else 1,
        "restore_s": round(t_restored - t_restore0, 3) if restored else None,
        "failback_s": round(t_back - t_restored, 3) if back else None,
        "timeline_s": {"fault": rel(t_fault), "detected": rel(t_detect), "first_task_elsewhere": rel(t_first),
                       "run_finished": rel(t_done)},
        "run_seconds": outcome.seconds if outcome else None,
        "run_blocked_until_restore": blocked,
        "cancelled": cancelled(),
        **(_models_report(ledger, run.id, model_sets) if group is not None else {}),
    }


def staged_model_sets(pool, providers, job, window) -> dict[str, list[str]]:
    """Per provider's storage, the distinct values of a model group's versions field (``model_set``)
    in the parts this drill staged there: one value over every provider means every row of the
    window was scored by the same model versions, whichever provider scored it. A storage that
    cannot be read is left out (its parts stay for the next drill, as in :func:`remove_staged`)."""
    import io

    import pyarrow.parquet as pq

    field = job.group.versions_field
    out: dict[str, list[str]] = {}
    for name in providers:
        try:
            store = pool.store(name)
            keys = store.list(f"{DRILL_STAGING}/{job.feature_view}/{window.tag}-part")
            values: set[str] = set()
            for key in keys:
                table = pq.read_table(io.BytesIO(store.read_bytes(key)), columns=[field])
                values.update(v for v in table.column(0).unique().to_pylist() if v is not None)
        except Exception:  # noqa: BLE001 - reported as not read
            continue
        if keys:
            out[name] = sorted(values)
    return out


def _models_report(ledger, run_id: int, model_sets: dict[str, list[str]]) -> dict[str, Any]:
    """A model-group drill's part of the report: the versions pinned for the run (the ledger's
    record of what scored the window), the set id they make, and the set ids found in the parts
    each provider staged. ``same_model_versions`` holds when every staged row carries that one id."""
    from skyfeast.featurestore.models.groups import set_id

    pinned = ledger.run_models(run_id)
    want = set_id((m, v) for m, v, *_ in pinned) if pinned else None  # staged rows: every pinned member
    found = sorted({v for vals in model_sets.values() for v in vals})
    return {
        "models": [{"model": m, "version": v, "sha256": c, "outcome": o} for m, v, c, o, _ in pinned],
        "model_set": want,
        "model_sets_staged": model_sets,
        "same_model_versions": bool(model_sets) and found == [want],
    }
