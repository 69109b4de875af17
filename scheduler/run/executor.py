"""Run one job window on one provider's Dask cluster, in two phases.

The daemon process only builds the graph and watches futures; rows are read,
transformed and written *on the workers*, one task per chunk.  The chunking, the
shuffle and the watching are shared with drop-in materialisation
(:mod:`skyfeast.featurestore.chunks`).

1. **Compute and stage.** Every chunk is transformed (or scored), checked against
   the feature view, and its output written to a staging key
   (``staging/<view>/<window tag>-partNNNNN.parquet``) that no reader looks at.
   The chunk is then recorded (``book.record``): a later attempt, on any provider,
   resumes from the staged parts instead of recomputing them.
2. **Publish**, only once *every* chunk is staged: each chunk's rows go to Feast's
   online store (newest-wins) and to the window's offline parts
   (``offline/<view>/<window tag>-partNNNNN.parquet``), from worker memory or, for a
   chunk staged by an earlier attempt, from its staged file.  Parts a previous run
   of the window left beyond this run's chunks are removed afterwards.

A small window (input files of at most ``SMALL_INPUT_ROWS`` rows) is one chunk: one task reads,
transforms and then publishes it, with no staging in between, since that chunk is the whole
window.  Drill runs (``publish`` False) stage it like any other.

So a run that fails, times out or is cancelled while computing leaves the online
store and Feast's offline source as they were.  Publishing is idempotent: an
attempt that fails while publishing is retried or failed over, and the next
attempt publishes every chunk again (see docs/data-safety.md).

A **drill** run (``publish=False``, ``skyfeast drill``) does phase 1 exactly as above,
on the workers, but stages under ``drills/<view>/<window tag>-partNNNNN.parquet`` (never
the key a concurrent production run of the window stages to) and skips phase 2; the drill
then reads what was staged (a model group's rows say which versions scored them) and removes
it: no reader ever sees its rows.

A failure is classed by :func:`skyfeast.adapters.failures.classify`:

* :class:`UserCodeError` – the transform/scorer raised or returned bad output;
* :class:`~skyfeast.scheduler.errors.DataError` – the window's input is missing or malformed;
* ``TimeoutExpired`` – the job's ``timeout`` passed; futures are cancelled;
* anything else from the cluster, storage or online store – infrastructure.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from typing import Any

import pandas as pd

# featurestore.writers imports Feast (seconds of CPU). Dask schedulers unpickle task graphs, and with
# them this module, on their event loop: keep this module's imports light and import the writers
# inside the worker-side functions, or a cold scheduler stops answering for that long.
from skyfeast.adapters.base import ObjectStore
from skyfeast.adapters.failures import FailureClass
from skyfeast.adapters.waiting import waiting
from skyfeast.featurestore.alloc import in_batch
from skyfeast.featurestore.chunks import INPUT_BLOCK, ChunkBook, by_chunk, fix_partitioning, n_workers, watch
from skyfeast.featurestore.online import OutputSchemaError, check_columns, write_latest
from skyfeast.featurestore.repo import WriteTarget
from skyfeast.scheduler.errors import DataError
from skyfeast.scheduler.run.contracts import check_inputs, null_keys
from skyfeast.scheduler.run.joins import Joins, hashable, read_joined, shuffle_joined
from skyfeast.scheduler.run.offline import STAGING, owner_of
from skyfeast.scheduler.timing.windows import Window

log = logging.getLogger("skyfeast.executor")

# a feature window whose input files hold at most this many rows (before the time filter) is one
# chunk: read and transformed by one task, without the key sampling and the shuffle (a job's
# ``partitions`` above 1 keeps the shuffle)
SMALL_INPUT_ROWS = 250_000
DRILL_STAGING = "drills"  # where a drill run stages them (no reader looks, nothing is published)


class UserCodeError(Exception):
    """User code raised, or returned something unusable. Message includes the cause."""

    failure_class = FailureClass.USER_CODE


@dataclass
class ExecResult:
    partitions: int = 0
    rows_in: int = 0
    rows_out: int = 0
    rows_online: int = 0
    files: list[str] = field(default_factory=list)
    published: dict[int, dict] = field(default_factory=dict)  # chunk → {"file": final part, "rows_online": n}
    # seconds spent: plan (input checks, chunking, graph), submit, compute (and stage), write (publish)
    phases: dict[str, float] = field(default_factory=dict)
    # task seconds on the workers by phase: read, shuffle, transform, stage, online, offline, ...
    # (:mod:`skyfeast.featurestore.phases`)
    work: dict[str, float] = field(default_factory=dict)
    failed_models: dict[str, str] = field(default_factory=dict)  # a model group's models that failed → error
    models_written: int = 0


@dataclass(frozen=True)
class PartitionSpec:
    """Everything a partition task needs; picklable."""

    window: Window
    target: WriteTarget
    out_url: str
    stage_url: str
    storage_options: dict
    user_fn: Callable[..., Any]
    user_fn_name: str
    ts_field: str | None = None
    read_start: Any = None
    read_end: Any = None
    model_url: str | None = None
    members: tuple["GroupMember", ...] = ()  # a model-group job's models
    assign: tuple[tuple[str, Any], ...] = ()  # columns set on every published row (the versions field)


@dataclass(frozen=True)
class GroupMember:
    """One pinned model version of a group job, as a worker loads it: picklable, no live objects."""

    name: str
    version: int
    field: str
    flavour: str
    features: tuple[str, ...]
    sha256: str
    size: int
    url: str  # the artifact on the attempt's provider storage


class ModelGroupError(Exception):
    """A group that cannot be scored as configured, or a pinned version's artifact that is missing,
    corrupt, or not a model of its flavour (never a fallback to another version)."""

    failure_class = FailureClass.CONFIG


# --------------------------------------------------------------------------- worker side
def _write_offline(frame: pd.DataFrame, url: str, storage_options: dict, *, float_dictionary: bool = True) -> None:
    """``frame`` as parquet at ``url``.  ``float_dictionary`` False: float columns are written without
    dictionary encoding (model scores, where it never pays: for 500 score columns it was ~85% of the
    write's CPU, ~3 s per 50,000 rows)."""
    import fsspec

    kw = {}
    if not float_dictionary:
        kw["use_dictionary"] = [str(c) for c, t in frame.dtypes.items() if not pd.api.types.is_float_dtype(t)]
    with fsspec.open(url, "wb", **storage_options) as fh:
        frame.to_parquet(fh, index=False, **kw)


def _call_user(spec: PartitionSpec, index: int, *args: Any) -> pd.DataFrame:
    try:
        out = spec.user_fn(*args)
    except Exception as exc:  # the chunk is named so that a repeat of the same failure is recognised
        raise UserCodeError(f"{spec.user_fn_name} raised {type(exc).__name__} on chunk {index}: {exc}") from None
    if not isinstance(out, pd.DataFrame):
        raise UserCodeError(f"{spec.user_fn_name} returned {type(out).__name__}, expected a pandas DataFrame")
    if spec.target.timestamp_field not in out.columns:
        out = out.assign(**{spec.target.timestamp_field: pd.Timestamp(spec.window.end)})
    try:
        check_columns(out, spec.target)
    except OutputSchemaError as exc:
        raise UserCodeError(f"{spec.user_fn_name}: {exc}") from None
    return out


def _ordered(out: pd.DataFrame, target: WriteTarget) -> pd.DataFrame:
    cols = [*target.join_keys, *target.features, target.timestamp_field]
    return out[cols + [c for c in out.columns if c not in cols]]


@in_batch
def stage_chunk(computed: tuple[pd.DataFrame | None, int], index: int, spec: PartitionSpec) -> dict:
    """Phase 1's last step: the chunk's output to its staging key; its stats for the chunk book."""
    out, rows_in = computed[0], computed[1]
    failed = {"failed_models": computed[2]} if len(computed) > 2 and computed[2] else {}
    if out is None or not len(out):
        return {"rows_in": rows_in, "rows_out": 0, "rows_online": 0, "file": None, **failed}
    url = f"{spec.stage_url}-part{index:05d}.parquet"
    _write_offline(out, url, spec.storage_options, float_dictionary=not spec.members)
    return {"rows_in": rows_in, "rows_out": len(out), "rows_online": 0, "file": url, **failed}


def _publish_source(source: tuple | str, source_options: dict | None, spec: PartitionSpec) -> pd.DataFrame:
    if isinstance(source, str):
        import fsspec

        with fsspec.open(source, "rb", **(source_options or {})) as fh:
            out = pd.read_parquet(fh)
    else:
        out = source[0]
    if not spec.assign:
        return out
    # a shallow copy with the columns added: ``assign`` would copy every column (a group's 500
    # score columns), and the frame in worker memory is shared by both halves of the publish
    out = out.copy(deep=False)
    for name, value in spec.assign:
        out[name] = value
    return out


@in_batch
def publish_online(source: tuple[pd.DataFrame | None, int] | str, source_options: dict | None, index: int,
                   spec: PartitionSpec) -> dict:
    """Phase 2, first half: one staged chunk's rows into the online store (newest-wins).

    ``source`` is phase 1's result still in worker memory, or the URL of the part an
    earlier attempt staged (read with ``source_options``).  Idempotent."""
    out = _publish_source(source, source_options, spec)
    from skyfeast.featurestore.writers import EncodingError, StoreNotReadyError

    try:
        online = write_latest(out, spec.target)
    except (OutputSchemaError, EncodingError) as exc:
        raise UserCodeError(f"{spec.user_fn_name} returned rows the online store cannot take: {exc}") from None
    except StoreNotReadyError as exc:
        raise DataError(f"{exc}") from None
    return {"rows_online": online}


@in_batch
def publish_offline(source: tuple[pd.DataFrame | None, int] | str, source_options: dict | None, index: int,
                    spec: PartitionSpec) -> dict:
    """Phase 2, second half, once every chunk is online: the chunk's part of the window's offline
    output, where Feast's offline source reads it.  Idempotent.

    A staged part (``source`` a URL) on the output's own storage, of a spec that sets no column
    (``assign``), already holds exactly the bytes this would write: it is copied (a server-side
    copy on object stores) instead of decoded and encoded again."""
    url = f"{spec.out_url}-part{index:05d}.parquet"
    if isinstance(source, str) and not spec.assign and (source_options or {}) == (spec.storage_options or {}):
        from fsspec.core import url_to_fs

        fs, src = url_to_fs(source, **(source_options or {}))
        out_fs, dst = url_to_fs(url, **(spec.storage_options or {}))
        if fs.protocol == out_fs.protocol:
            fs.copy(src, dst)
            return {"file": url}
    _write_offline(_publish_source(source, source_options, spec), url, spec.storage_options,
                   float_dictionary=not spec.members)
    return {"file": url}


@in_batch
def read_inputs(urls: list[str], storage_options: dict) -> pd.DataFrame:
    """A small window's input files as one frame (see ``SMALL_INPUT_ROWS``)."""
    import fsspec

    frames = []
    for url in urls:
        with fsspec.open(url, "rb", **storage_options) as fh:
            frames.append(pd.read_parquet(fh))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


@in_batch
def small_window(urls: list[str], storage_options: dict, spec: PartitionSpec) -> dict:
    """A small window, both phases in one task: its only chunk is computed, then published (it
    is every chunk of the window, so nothing is published before the whole window is computed).
    Returns the chunk's stats, its part as ``file``, ``write_s`` (seconds publishing) and ``work``
    (seconds by phase: read, transform, online, offline)."""
    t0 = time.perf_counter()
    frame = read_inputs(urls, storage_options)
    t1 = time.perf_counter()
    computed = feature_partition(frame, 0, spec)
    del frame
    out, rows_in = computed
    t2 = time.perf_counter()
    work = {"read": t1 - t0, "transform": t2 - t1}
    if out is None or not len(out):
        return {"rows_in": rows_in, "rows_out": 0, "rows_online": 0, "file": None, "write_s": 0.0, "work": work}
    online = publish_online(computed, None, 0, spec)  # online first: a failed online write leaves no offline part
    t3 = time.perf_counter()
    offline = publish_offline(computed, None, 0, spec)
    t4 = time.perf_counter()
    work.update(online=t3 - t2, offline=t4 - t3)
    return {"rows_in": rows_in, "rows_out": len(out), "rows_online": online["rows_online"], "file": offline["file"],
            "write_s": t4 - t2, "work": work}


@in_batch
def feature_partition(pdf: pd.DataFrame, index: int, spec: PartitionSpec) -> tuple[pd.DataFrame | None, int]:
    """Phase 1 of a feature job's chunk: the contract on its rows, then the transform."""
    ts = spec.ts_field
    nulls = null_keys(pdf, [*spec.target.join_keys, ts])
    if nulls:  # files without statistics got past the footer check
        raise DataError("input rows break their contract: " + ", ".join(f"{n:,} null {c} values" for c, n in nulls.items()))
    inside = (pdf[ts] >= spec.read_start) & (pdf[ts] < spec.read_end)
    if not inside.all():  # (the read usually filtered already: no copy of every column then)
        pdf = pdf[inside]
    if pdf.empty:
        return None, 0
    out = _call_user(spec, index, pdf.reset_index(drop=True), spec.window)
    return _ordered(out, spec.target), len(pdf)


@functools.lru_cache(maxsize=8)
def _load_model(url: str, storage_options_json: str) -> Any:
    import fsspec
    import joblib

    with fsspec.open(url, "rb", **json.loads(storage_options_json)) as fh:
        return joblib.load(fh)


@in_batch
def model_partition(pdf: pd.DataFrame, index: int, spec: PartitionSpec) -> tuple[pd.DataFrame | None, int]:
    if pdf.empty:
        return None, 0
    try:
        model = _load_model(spec.model_url, json.dumps(spec.storage_options, sort_keys=True))
    except Exception as exc:
        raise UserCodeError(f"cannot load model artifact {spec.model_url}: {type(exc).__name__}: {exc}") from None
    out = _call_user(spec, index, model, pdf.reset_index(drop=True), spec.window)
    return _ordered(out, spec.target), len(pdf)


@in_batch
def model_partition_from_file(url: str, storage_options: dict, index: int, spec: PartitionSpec,
                              joins: Joins = ()) -> tuple[pd.DataFrame | None, int]:
    return model_partition(read_joined(url, storage_options, joins, spec.target.join_keys), index, spec)


_loaded: dict[str, Any] = {}  # sha256 → loaded model: each version is read and checked once per worker process
_loaded_lock = threading.Lock()


def _load_member(m: GroupMember, storage_options: dict) -> Any:
    model = _loaded.get(m.sha256)
    if model is not None:
        return model
    import fsspec

    from skyfeast.featurestore.models import ArtifactError
    from skyfeast.featurestore.models.artifacts import checksum
    from skyfeast.featurestore.models.flavours import FlavourError, load

    try:
        with fsspec.open(m.url, "rb", **storage_options) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ModelGroupError(f"model {m.name!r} version {m.version}: artifact {m.url} not found "
                             f"(expected sha256 {m.sha256})") from None
    if checksum(data) != (m.sha256, m.size):
        raise ModelGroupError(f"model {m.name!r} version {m.version}: artifact {m.url} fails its checksum: expected "
                             f"sha256 {m.sha256} ({m.size} bytes), got {checksum(data)[0]} ({len(data)} bytes)")
    try:
        model = load(m.flavour, data, features=m.features)
    except (FlavourError, ArtifactError) as exc:
        raise ModelGroupError(f"model {m.name!r} version {m.version}: {exc}") from None
    with _loaded_lock:
        if len(_loaded) > 20_000:
            _loaded.clear()
        _loaded[m.sha256] = model
    return model


@in_batch
def group_partition(pdf: pd.DataFrame, index: int, spec: PartitionSpec) -> tuple[pd.DataFrame | None, int, dict]:
    """Phase 1 of a model-group chunk: every member scored over the chunk's frame.  Returns the
    output (keys, event time, one column per member: NaN for a member that failed), the rows read,
    and model → error for the members that raised or returned NaN or inf."""
    from skyfeast.featurestore.models.flavours import Member, score_matrix

    if pdf.empty:
        return None, 0, {}
    cols = set(pdf.columns)
    for m in spec.members:
        missing = [c for c in m.features if c not in cols]
        if missing:
            raise DataError(f"model {m.name!r} version {m.version} needs input feature(s) {missing}, which the "
                            f"input frame lacks; it has {sorted(cols)}")
    members = [Member(m.name, m.field, m.flavour, m.features, _load_member(m, spec.storage_options))
               for m in spec.members]
    scores, errors = score_matrix(members, pdf)
    # the frame is built on the score matrix (pandas keeps a 2-D array's transpose as its one float
    # block): at 500 models a copy of it is as large as everything else the chunk holds
    out = pd.DataFrame(scores.T, columns=[m.field for m in spec.members], copy=False)
    t = spec.target
    for i, k in enumerate(t.join_keys):
        out.insert(i, k, pdf[k].to_numpy())
    out.insert(len(t.join_keys), t.timestamp_field, pd.Timestamp(spec.window.end))
    for name, value in spec.assign:  # the staged rows say which versions scored them (a drill reads it)
        out[name] = value
    return out, len(pdf), errors


@in_batch
def group_partition_from_file(url: str, storage_options: dict, index: int, spec: PartitionSpec,
                              joins: Joins = ()) -> tuple[pd.DataFrame | None, int, dict]:
    return group_partition(read_joined(url, storage_options, joins, spec.target.join_keys), index, spec)


# --------------------------------------------------------------------------- client side
ProgressFn = Callable[[int, int], None]


def _run_chunks(client, tasks: dict[int, Any], spec: PartitionSpec, deadline: float, progress: ProgressFn | None,
                cancelled: Callable[[], bool], book: ChunkBook, stores: Mapping[str, ObjectStore],
                phases: dict[str, float], publish: bool = True,
                before_publish: Callable[[PartitionSpec], PartitionSpec] | None = None,
                work: dict[str, float] | None = None) -> dict[int, dict]:
    """Both phases: compute and stage ``tasks`` (chunk number → delayed phase-1 result), recording
    each chunk in ``book``; then, if ``publish``, publish every chunk of the book.  Returns chunk →
    published part (empty without ``publish``).  Adds the seconds of ``submit``, ``compute`` and
    ``write`` to ``phases``, and the workers' task seconds by phase to ``work``.  ``before_publish``,
    once every chunk is staged, gives the spec to publish with (a model group's: only the fields of
    the models that scored every row)."""
    import dask

    from skyfeast.featurestore import phases as task_phases

    work = {} if work is None else work
    t = time.perf_counter()
    total = len(tasks) + len(book.done)
    if progress:
        progress(len(book.done), total)
    computed: dict[int, Any] = {}
    if tasks:
        spec_node = _node(spec)
        staged = [dask.delayed(stage_chunk, pure=False)(t, i, spec_node) for i, t in tasks.items()]
        keys = task_phases.graph_keys(staged)
        since = task_phases.start(client)
        with client.as_current():
            futures = client.compute([*tasks.values(), *staged])
        phases["submit"], t = time.perf_counter() - t, time.perf_counter()
        computed = dict(zip(tasks, futures[:len(tasks)]))
        index = {f.key: i for f, i in zip(futures[len(tasks):], tasks)}

        def on_result(fut, stats: dict) -> None:
            i = index[fut.key]
            book.record(i, stats)
            book.done[i] = stats
            if progress:
                progress(len(book.done), total)

        watch(client, futures[len(tasks):], on_result=on_result, deadline=deadline, cancelled=cancelled)
        task_phases.collect(client, since, keys, into=work)
    phases["compute"], t = time.perf_counter() - t, time.perf_counter()
    if not publish:
        client.cancel(list(computed.values()))
        return {}
    if before_publish is not None:
        try:
            spec = before_publish(spec)
        except BaseException:
            client.cancel(list(computed.values()))
            raise
    # every chunk is staged: publish them all, those staged by an earlier attempt from their files.
    # Every chunk's online rows go first, then the offline parts: an online write that fails (a value
    # the store cannot take, the store gone) leaves no new part of the window for Feast's offline source
    sources: dict[int, tuple[Any, dict | None]] = {}
    for i, stats in sorted(book.done.items()):
        if not stats.get("file"):
            continue  # the chunk had no rows
        if i in computed:
            sources[i] = (computed[i], None)
        else:
            owner = owner_of(stats["file"], stores)
            sources[i] = (stats["file"], stores[owner[0]].storage_options if owner else spec.storage_options)
    published: dict[int, dict] = {i: {} for i in sources}
    since, keys = task_phases.start(client), set()
    for step, what in ((publish_online, f"to be written to the online store ({spec.target.online_label})"),
                       (publish_offline, "to be published offline")):
        futs, where = [], {}
        for i, (src, opts) in sources.items():
            if step is publish_offline and not spec.assign:
                src, opts = _staged_source(book.done[i]["file"], stores, spec)  # copied, not re-encoded
            futs.append(client.submit(step, src, opts, i, spec, pure=False))
            where[futs[-1].key] = i
            keys.add(futs[-1].key)
        with waiting(f"{len(futs)} chunk(s) of {spec.target.name} {spec.window} {what}", deadline - time.monotonic()):
            watch(client, futs, on_result=lambda fut, res, where=where: published[where[fut.key]].update(res),
                  deadline=deadline, cancelled=cancelled)
    client.cancel(list(computed.values()))  # frees the chunks' outputs on the workers
    task_phases.collect(client, since, keys, into=work)
    phases["write"] = time.perf_counter() - t
    return published


def _staged_source(url: str, stores: Mapping[str, ObjectStore], spec: PartitionSpec) -> tuple[str, dict]:
    """A staged part's URL and the storage options to read it with."""
    owner = owner_of(url, stores)
    return url, stores[owner[0]].storage_options if owner else spec.storage_options


def _run_small(client, urls: list[str], storage_options: dict, spec: PartitionSpec, deadline: float,
               progress: ProgressFn | None, cancelled: Callable[[], bool], book: ChunkBook,
               phases: dict[str, float], work: dict[str, float] | None = None) -> dict[int, dict]:
    """A small window's one task (:func:`small_window`); its chunk is recorded once published."""
    t = time.perf_counter()
    if progress:
        progress(0, 1)
    fut = client.submit(small_window, urls, storage_options, spec, pure=False)
    phases["submit"], t = time.perf_counter() - t, time.perf_counter()
    result: dict = {}
    with waiting(f"the one task of {spec.target.name} {spec.window} (read, transform, then write to the online "
                 f"store ({spec.target.online_label}) and offline)", deadline - time.monotonic()):
        watch(client, [fut], on_result=lambda _, stats: result.update(stats), deadline=deadline, cancelled=cancelled)
    write_s = result.pop("write_s")
    for phase, secs in (result.pop("work", None) or {}).items():
        if work is not None:
            work[phase] = round(work.get(phase, 0.0) + secs, 3)
    phases["compute"], phases["write"] = max(0.0, time.perf_counter() - t - write_s), write_s
    book.record(0, result)
    book.done[0] = result
    if progress:
        progress(1, 1)
    return {0: {"file": result["file"], "rows_online": result["rows_online"]}} if result["file"] else {}


def usable_chunks(book: ChunkBook, stores: Mapping[str, ObjectStore]) -> None:
    """Forget chunks of ``book`` whose staged part cannot be read any more, so they are computed again."""
    for i, stats in list(book.done.items()):
        url = stats.get("file")
        if not url:
            continue
        owner = owner_of(url, stores)
        try:
            ok = owner is not None and stores[owner[0]].exists(owner[1])
        except Exception:  # that storage is down: compute the chunk again here
            ok = False
        if not ok:
            del book.done[i]


def _finish(store: ObjectStore, out_key: str, published: dict[int, dict], book: ChunkBook,
            stores: Mapping[str, ObjectStore], phases: dict[str, float], publish: bool = True,
            work: dict[str, float] | None = None) -> ExecResult:
    """After publishing: remove parts an earlier run of the window left beyond this run's, then
    the staged parts (best effort: Feast never reads a leftover staged part).  Without
    ``publish`` (a drill) the window's parts and the staged parts are left alone: the drill reads
    what it staged (which model versions scored each row of a model group), then removes it
    (:func:`skyfeast.scheduler.drills.drill.remove_staged`)."""
    t = time.perf_counter()
    if publish:
        keep = {p["file"] for p in published.values()}
        stale = [k for k in store.list(out_key) if store.url(k) not in keep]
        if stale:
            store.delete(stale)
    staging = f"{STAGING}/"
    for stats in book.done.values() if publish else ():
        owner = owner_of(stats["file"], stores) if stats.get("file") else None
        if owner is not None and owner[1].startswith(staging):  # never a published part
            try:
                stores[owner[0]].delete([owner[1]])
            except Exception as exc:
                log.warning("cannot remove staged part %s: %s", stats["file"], exc)
    phases["write"] = phases.get("write", 0.0) + time.perf_counter() - t
    r = ExecResult(partitions=len(book.done), published=published, phases=phases, work=dict(work or {}))
    for d in book.done.values():
        r.rows_in += d.get("rows_in", 0)
        r.rows_out += d.get("rows_out", 0)
    r.rows_online = sum(p["rows_online"] for p in published.values())
    r.files = [published[i]["file"] for i in sorted(published)]
    return r


def run_feature_job(*, client, store: ObjectStore, job, window: Window, target: WriteTarget, transform: Callable,
                    keys: list[str], deadline: float, progress: ProgressFn | None = None,
                    cancelled: Callable[[], bool] = lambda: False, book: ChunkBook | None = None,
                    source_store: ObjectStore | None = None,
                    stores: Mapping[str, ObjectStore] | None = None, publish: bool = True) -> ExecResult:
    """``keys`` are on ``source_store`` (default: ``store``, which receives the outputs); ``stores``
    are every provider's storages, where chunks staged by earlier attempts may be.  ``publish``
    False: a drill run (see the module docstring)."""
    import dask
    import dask.dataframe as dd

    t0 = time.perf_counter()
    book = book or ChunkBook()
    src = job.source
    read_start, read_end = window.read_range(src)
    source_store = source_store or store
    urls = [source_store.url(k) for k in keys]
    rows = check_inputs(urls, source_store.storage_options, keys=target.join_keys, timestamp=src.timestamp_field,
                        declared=src.columns)
    rs, re_ = pd.Timestamp(read_start), pd.Timestamp(read_end)
    stores = stores or {"": store}
    out_key, spec = _spec(store, window, target, publish, user_fn=transform, user_fn_name=job.transform,
                          ts_field=src.timestamp_field, read_start=rs, read_end=re_)
    if urls and rows <= SMALL_INPUT_ROWS and job.partitions in (None, 1) and book.partitions in (None, 1) \
            and book.ranges is None:
        # a small window is one chunk, read and transformed in one task: no sampling, no shuffle
        book.partitions = 1
        usable_chunks(book, stores)
        if publish and not book.done:
            phases, work = {"plan": time.perf_counter() - t0}, {}
            published = _run_small(client, urls, source_store.storage_options, spec, deadline, progress, cancelled,
                                   book, phases, work)
            return _finish(store, out_key, published, book, stores, phases, work=work)
        tasks = {} if 0 in book.done else {
            0: dask.delayed(feature_partition, pure=False)(
                dask.delayed(read_inputs, pure=False)(urls, source_store.storage_options), 0, _node(spec))}
        phases, work = {"plan": time.perf_counter() - t0}, {}
        published = _run_chunks(client, tasks, spec, deadline, progress, cancelled, book, stores, phases, publish,
                                work=work)
        return _finish(store, out_key, published, book, stores, phases, publish, work=work)
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.read_parquet(urls, storage_options=source_store.storage_options or None, blocksize=INPUT_BLOCK,
                              filters=[(src.timestamp_field, ">=", rs), (src.timestamp_field, "<", re_)])
    missing = [c for c in (*target.join_keys, src.timestamp_field) if c not in ddf.columns]
    if missing:
        raise DataError(f"source {src.path!r} lacks column(s) {missing}; it has {list(ddf.columns)}")
    # the first attempt fixes the chunking for all later ones
    error, = fix_partitioning(client, [(ddf, target, book, job.partitions or max(2, 2 * n_workers(client)))])
    if error is not None:
        raise error
    parts = by_chunk(client, ddf, target, book)
    usable_chunks(book, stores)
    spec_node = _node(spec)
    tasks = {i: dask.delayed(feature_partition, pure=False)(p, i, spec_node)
             for i, p in enumerate(parts) if i not in book.done}
    phases, work = {"plan": time.perf_counter() - t0}, {}
    published = _run_chunks(client, tasks, spec, deadline, progress, cancelled, book, stores, phases, publish,
                            work=work)
    return _finish(store, out_key, published, book, stores, phases, publish, work=work)


def run_model_job(*, client, store: ObjectStore, job, window: Window, target: WriteTarget,
                  scorer: Callable, inputs: list[tuple[str, dict]], deadline: float, progress: ProgressFn | None = None,
                  joins: tuple = (), join: str = "broadcast",
                  cancelled: Callable[[], bool] = lambda: False, book: ChunkBook | None = None,
                  stores: Mapping[str, ObjectStore] | None = None, publish: bool = True) -> ExecResult:
    """``inputs`` are the first upstream's parts; ``joins`` the other upstreams' (per upstream: its
    run's identity and its parts), joined the ``join`` way at the run's first attempt (:mod:`.joins`)."""
    t0 = time.perf_counter()
    book = book or ChunkBook()
    if not store.exists(job.model.artifact):
        raise DataError(f"model artifact {job.model.artifact!r} not found under {store.url()}")
    _fix_chunking(book, job, inputs, joins, join)
    stores = stores or {"": store}
    usable_chunks(book, stores)
    out_key, spec = _spec(store, window, target, publish, user_fn=scorer, user_fn_name=job.model.scorer,
                          model_url=store.url(job.model.artifact))
    tasks = _chunk_tasks(client, book, inputs, joins, target.join_keys, model_partition_from_file, model_partition,
                         _node(spec), deadline, cancelled)
    phases, work = {"plan": time.perf_counter() - t0}, {}
    published = _run_chunks(client, tasks, spec, deadline, progress, cancelled, book, stores, phases, publish,
                            work=work)
    return _finish(store, out_key, published, book, stores, phases, publish, work=work)


def run_group_job(*, client, store: ObjectStore, job, window: Window, target: WriteTarget,
                  members: list[GroupMember], inputs: list[tuple[str, dict]], deadline: float, joins: tuple = (),
                  join: str = "broadcast",
                  failed_before: Callable[[dict[str, str]], dict[str, str]],
                  progress: ProgressFn | None = None, cancelled: Callable[[], bool] = lambda: False,
                  book: ChunkBook | None = None, stores: Mapping[str, ObjectStore] | None = None,
                  publish: bool = True) -> ExecResult:
    """A model-group job: every chunk (chunked and joined as :func:`run_model_job` says) is scored by
    every member, in one task.

    Once every chunk is staged, ``failed_before(errors)`` records the models that failed in this
    attempt's chunks and returns every model that failed in any attempt of the run.  Only the other
    models' fields are published online, with the group's versions field set to the :func:`set_id`
    of the models written; a failed model's online values stay as they were (its offline column is
    null).  ``ExecResult.failed_models`` lists the failures; every model failing fails the run."""
    from skyfeast.featurestore.models.groups import set_id

    t0 = time.perf_counter()
    book = book or ChunkBook()
    _fix_chunking(book, job, inputs, joins, join)
    stores = stores or {"": store}
    usable_chunks(book, stores)
    names = [m.name for m in members]
    # staged rows carry the set id of every pinned member (whichever provider scores the chunk); the
    # publish sets it to the members written, once failures are known
    out_key, spec = _spec(store, window, target, publish, user_fn=None, user_fn_name=f"model group of {job.name!r}",
                          members=tuple(members),
                          assign=((job.group.versions_field, set_id((m.name, m.version) for m in members)),))
    tasks = _chunk_tasks(client, book, inputs, joins, target.join_keys, group_partition_from_file, group_partition,
                         _node(spec), deadline, cancelled)
    failed: dict[str, str] = {}

    def before_publish(spec: PartitionSpec) -> PartitionSpec:
        errors: dict[str, str] = {}
        for i in sorted(book.done):
            for name, err in (book.done[i].get("failed_models") or {}).items():
                errors.setdefault(name, f"{err} (chunk {i})")
        failed.update(failed_before(errors))
        good = [m for m in members if m.name not in failed]
        if not good:
            raise UserCodeError(f"every model of the group failed: {_failures(failed)}")
        vfield = job.group.versions_field
        fields = tuple(f for f in target.features if f == vfield or f in {m.field for m in good})
        return _replace(spec, target=_replace(target, features=fields),
                        assign=((vfield, set_id((m.name, m.version) for m in good)),))

    phases, work = {"plan": time.perf_counter() - t0}, {}
    published = _run_chunks(client, tasks, spec, deadline, progress, cancelled, book, stores, phases, publish,
                            before_publish=before_publish if publish else None, work=work)
    res = _finish(store, out_key, published, book, stores, phases, publish, work=work)
    res.failed_models = {n: failed[n] for n in names if n in failed}
    return res


def _fix_chunking(book: ChunkBook, job, inputs: list, joins: tuple, join: str) -> None:
    """A model or group job's chunking, fixed at the run's first attempt and kept by every later one:
    broadcast (and a single upstream), one chunk per part of the first upstream; shuffle, the job's
    ``partitions`` buckets (default: as many as the first upstream has parts)."""
    if book.join is None:
        # a chunk count recorded with no way: a run begun before the shuffle join existed
        book.join = join if joins and book.partitions is None else "broadcast"
    if book.join == "shuffle":
        book.partitions = book.partitions or job.partitions or len(inputs)
    else:
        book.partitions = len(inputs)


def _chunk_tasks(client, book: ChunkBook, inputs: list, joins: tuple, keys: tuple[str, ...], from_file: Callable,
                 from_frame: Callable, spec_node, deadline: float, cancelled: Callable[[], bool]) -> dict[int, Any]:
    """Chunk number → the delayed scoring of each chunk ``book`` lacks: ``from_file(url, options, i, spec,
    joins)`` per part (broadcast), or ``from_frame(frame, i, spec)`` per bucket of the shuffle join."""
    import dask

    if book.join == "shuffle":
        todo = [i for i in range(book.partitions) if i not in book.done]
        chunks = shuffle_joined(client, inputs, joins, keys, book.partitions, deadline=deadline,
                                cancelled=cancelled) if todo else []
        return {i: dask.delayed(from_frame, pure=False)(chunks[i], i, spec_node) for i in todo}
    joined = hashable(joins)
    return {i: dask.delayed(from_file, pure=False)(url, opts, i, spec_node, joined)
            for i, (url, opts) in enumerate(inputs) if i not in book.done}


def _failures(failed: dict[str, str], limit: int = 5) -> str:
    items = [f"{n}: {e}" for n, e in sorted(failed.items())]
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _node(spec: PartitionSpec):
    """``spec`` as one node of the task graph, which every chunk's task depends on.  Passed as a plain
    argument, Dask walks it at every ``delayed`` call (a dataclass: each field, each of a model
    group's 2,000 members; 7.4 s for 16 calls) and ships it inside every task; as a node it is
    neither walked nor hashed, and reaches each worker once."""
    import uuid

    import dask

    return dask.delayed(spec, name=f"skyfeast-spec-{uuid.uuid4().hex}", traverse=False)


def _spec(store: ObjectStore, window: Window, target: WriteTarget, publish: bool, **kw) -> tuple[str, PartitionSpec]:
    out_key = f"offline/{target.name}/{window.tag}"
    staging = STAGING if publish else DRILL_STAGING
    return out_key, PartitionSpec(window=window, target=target, out_url=store.url(out_key),
                                  stage_url=store.url(f"{staging}/{target.name}/{window.tag}"),
                                  storage_options=store.storage_options, **kw)
