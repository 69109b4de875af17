"""A day of behaviour events → 20 windowed features per user → online store, through the daemon's job path.

Generates ``--events`` events (``user_id`` among ``--users`` users, timestamps
spread over one UTC day, a few numeric columns) as one parquet file, builds a
throw-away skyfeast project around it (``skyfeast.yaml`` with one local
provider of 2 worker processes × 1 thread, 2 GiB each, and a Feast repo whose
feature view has 20 features), then runs ``skyfeast run --job day_features``
for that day as a subprocess: the same runner, ledger, executor and writers a
scheduled run uses (read parquet → shuffle by user → transform → offline
parquet + online write, on the workers).

Printed: wall time of the ``skyfeast run`` command (cluster start and Feast
load included), users and feature values written per second; CPU seconds
(user+sys) of that command and all its descendants (Dask scheduler, nannies,
workers: the bench is their subreaper and reaps them, so ``RUSAGE_CHILDREN``
counts them all; Redis's own CPU is not included), the load average, and the
run's phases from ``skyfeast run --json`` (wall seconds per client-side phase,
and task seconds on the workers per phase: read, shuffle, transform, stage,
online, offline); peak RSS (``VmHWM`` from ``/proc``, read every 0.2 s) of the
daemon process, the Dask scheduler and every Dask worker.  ``--ceiling`` then
measures, in the bench's own process, reading the day and running the same
transform (no Dask, no writes) and one write of its rows with skyfeast's
online writer, with Redis's CPU for that write.  The online store is checked afterwards: it
must hold exactly one row per user that had events.

    .venv/bin/python bench/seed_day.py --store redis
    .venv/bin/python bench/seed_day.py --store sqlite --events 1000000 --users 100000 --json

Redis: db ``--redis-db`` on 127.0.0.1:6379; only this run's keys are written,
and they are removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import DAY, REDIS, ROOT, clear_redis, make_feast_repo, online_store, redis_entities, sqlite_entities

VIEW = "user_day"
WINDOWS = {"1h": 3_600, "6h": 21_600, "24h": 86_400}
STATS = ("events", "amount_sum", "amount_mean", "amount_max", "duration_sum")
FEATURES = [f"{s}_{w}" for w in WINDOWS for s in STATS] + [
    "purchases_24h", "clicks_24h", "amount_min_24h", "last_event_age_s", "first_event_age_s"]
INT_FEATURES = {f for f in FEATURES if f.startswith(("events_", "purchases_", "clicks_"))}

TRANSFORMS = '''"""Windowed per-user features over the day ending at ``window.end`` (written by bench/seed_day.py)."""

import numpy as np
import pandas as pd

WINDOWS = {"1h": 3_600, "6h": 21_600, "24h": 86_400}


def day_features(events: pd.DataFrame, window) -> pd.DataFrame:
    end = pd.Timestamp(window.end)
    codes, users = pd.factorize(events["user_id"].to_numpy(), sort=True)
    n = len(users)
    age = (end - events["event_timestamp"]).dt.total_seconds().to_numpy()
    amount = events["amount"].to_numpy(np.float64)
    duration = events["duration_s"].to_numpy(np.float64)
    etype = events["event_type"].to_numpy()
    out = {"user_id": users.astype(np.int64)}
    for label, width in WINDOWS.items():
        m = age <= width
        c, a = codes[m], amount[m]
        count = np.bincount(c, minlength=n)
        total = np.bincount(c, weights=a, minlength=n)
        top = np.full(n, np.nan)
        np.fmax.at(top, c, a)
        out[f"events_{label}"] = count.astype(np.int64)
        out[f"amount_sum_{label}"] = total
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"amount_mean_{label}"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out[f"amount_max_{label}"] = top
        out[f"duration_sum_{label}"] = np.bincount(c, weights=duration[m], minlength=n)
    out["purchases_24h"] = np.bincount(codes, weights=(etype == 2), minlength=n).astype(np.int64)
    out["clicks_24h"] = np.bincount(codes, weights=(etype == 1), minlength=n).astype(np.int64)
    low = np.full(n, np.nan)
    np.fmin.at(low, codes, amount)
    out["amount_min_24h"] = low
    last = np.full(n, np.inf)
    np.minimum.at(last, codes, age)
    first = np.zeros(n)
    np.maximum.at(first, codes, age)
    out["last_event_age_s"], out["first_event_age_s"] = last, first
    frame = pd.DataFrame(out)
    frame["event_timestamp"] = end
    return frame
'''


def make_events(path: Path, events: int, users: int, seed: int = 11) -> int:
    """``events`` rows over ``DAY``, sorted by time, as parquet; returns how many distinct users occur."""
    rng = np.random.default_rng(seed)
    user_id = rng.integers(0, users, events, dtype=np.int64) * 7919 + 13
    offset = np.sort(rng.integers(0, 86_400_000_000, events))
    frame = pd.DataFrame({
        "user_id": user_id,
        "event_timestamp": pd.Timestamp(DAY) + pd.to_timedelta(offset, unit="us"),
        "event_type": rng.choice(np.array([0, 1, 2], dtype=np.int8), events, p=[0.6, 0.3, 0.1]),
        "amount": np.round(rng.lognormal(3.0, 1.0, events), 2),
        "duration_s": rng.exponential(30.0, events).astype(np.float32),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False, row_group_size=1_000_000)
    return int(len(np.unique(user_id)))


def make_project(root: Path, store: str, redis_db: int, partitions: int | None) -> str:
    project = f"seedday_{uuid.uuid4().hex[:8]}"
    (root / "transforms.py").write_text(TRANSFORMS)
    job = {"name": "day_features", "kind": "feature", "schedule": {"type": "cron", "expr": "0 0 * * *"},
           "source": {"type": "parquet", "path": "events/events-{date}.parquet", "timestamp_field": "event_timestamp"},
           "transform": "transforms:day_features", "feature_view": VIEW, "providers": ["local"], "retries": 0,
           "timeout": "30m"}
    if partitions:
        job["partitions"] = partitions
    (root / "skyfeast.yaml").write_text(yaml.safe_dump({
        "project": "seedday", "state": str(root / "state.db"), "feast": {"repo": "feature_repo"},
        # The defaults (2 s probe deadline, 3 misses) mark a busy 2-core host down mid-shuffle when
        # other work shares the machine; a benchmark wants the run, not a failover to nowhere.
        "health": {"timeout": "10s", "miss_budget": 6},
        "providers": {"local": {"priority": 1, "cluster": {"type": "local", "workers": 2, "threads": 1,
                                                          "memory_limit": "2GiB"},
                                "storage": {"type": "local", "root": "data"}}},
        "jobs": [job]}, sort_keys=False))
    make_feast_repo(root / "feature_repo", project, online_store(store, redis_db=redis_db), view=VIEW,
                    source="../data/offline/user_day", timestamp_field="event_timestamp",
                    features={f: "Int64" if f in INT_FEATURES else "Float64" for f in FEATURES},
                    ttl=timedelta(days=2))
    return project


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory(threading.Thread):
    """Peak RSS (VmHWM) of a process and of each descendant, labelled by role, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peaks, self.roles, self.cpu = pid, {}, {}, {}
        self._halt = threading.Event()

    def _role(self, proc) -> str:
        cmd = " ".join(proc.cmdline())
        if proc.pid == self.pid:
            return "daemon (skyfeast run)"
        if "dask_scheduler" in cmd:
            return "dask scheduler"
        if "dask_worker" in cmd:
            return "dask nanny"
        if "resource_tracker" in cmd:
            return "multiprocessing resource tracker"
        if "spawn_main" in cmd:
            return "dask worker"
        return "other"

    def sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            kib = _hwm_kib(proc.pid)
            if kib is None:
                continue
            if proc.pid not in self.roles:
                with contextlib.suppress(psutil.Error):
                    self.roles[proc.pid] = self._role(proc)
            self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), kib)
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                self.cpu[proc.pid] = t.user + t.system  # the last sample before it exits

    def run(self) -> None:
        while not self._halt.wait(0.2):
            self.sample()

    def stop(self) -> dict[int, tuple[str, float]]:
        self._halt.set()
        self.join()
        return {pid: (self.roles.get(pid, "?"), kib / 1024) for pid, kib in self.peaks.items()}


def stored_entities(root: Path, store: str, project: str, redis_db: int) -> int:
    if store == "sqlite":
        return sqlite_entities(root / "feature_repo" / "online.db", f"{project}_{VIEW}")
    return redis_entities(redis_db, project)


def spot_check(root: Path, events_path: Path, user_ids: list[int]) -> None:
    """Feast's own ``get_online_features`` must return what pandas computes from the events."""
    from feast import FeatureStore

    sys.path.insert(0, str(root))
    from transforms import day_features  # the project's transform, for the expected values

    class _W:
        end = DAY + timedelta(days=1)

    events = pd.read_parquet(events_path, filters=[("user_id", "in", user_ids)])
    expected = day_features(events, _W).set_index("user_id")
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        got = FeatureStore(repo_path=str(root / "feature_repo")).get_online_features(
            features=[f"{VIEW}:{f}" for f in FEATURES], entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
    for i, uid in enumerate(got["user_id"]):
        for f in FEATURES:
            want, have = expected.loc[uid, f], got[f][i]
            if not (np.isclose(want, have, equal_nan=True) if have is not None else pd.isna(want)):
                raise RuntimeError(f"user {uid} {f}: online store has {have!r}, pandas computes {want!r}")


def _redis_cpu_s() -> float | None:
    """user+sys seconds of the Redis server on 127.0.0.1:6379 so far (None when not readable)."""
    import redis

    try:
        pid = redis.Redis(host=REDIS[0], port=REDIS[1]).info("server")["process_id"]
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


def ceiling(root: Path, events_path: Path, view: str = VIEW) -> dict:
    """What the run cannot beat, in this one process: read the day and run the same transform
    (no Dask, no shuffle, no writes), then write its rows once with skyfeast's own online writer
    (what Redis's CPU adds is measured from its process).  Seconds are wall and CPU (this process)."""
    import resource

    sys.path.insert(0, str(root))
    from transforms import day_features

    from skyfeast.featurestore.online import write_latest
    from skyfeast.featurestore.repo import FeastRepo

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    class _W:
        end = DAY + timedelta(days=1)

    out: dict = {}
    t, c = time.perf_counter(), cpu()
    events = pd.read_parquet(events_path)
    out["read_s"], out["read_cpu_s"] = round(time.perf_counter() - t, 2), round(cpu() - c, 2)
    t, c = time.perf_counter(), cpu()
    frame = day_features(events, _W)
    out["transform_s"], out["transform_cpu_s"] = round(time.perf_counter() - t, 2), round(cpu() - c, 2)
    del events
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        target = FeastRepo(root / "feature_repo").write_target(view)
    frame = frame[[*target.join_keys, *target.features, target.timestamp_field]]
    t, c, r = time.perf_counter(), cpu(), _redis_cpu_s()
    rows = write_latest(frame, target)
    out["write_s"], out["write_cpu_s"] = round(time.perf_counter() - t, 2), round(cpu() - c, 2)
    r2 = _redis_cpu_s()
    out["write_redis_cpu_s"] = round(r2 - r, 2) if r is not None and r2 is not None else None
    out["write_values_per_s"] = round(rows * len(target.features) / max(out["write_s"], 1e-9))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--store", choices=("sqlite", "redis"), default="redis")
    ap.add_argument("--partitions", type=int, default=None, help="job partitions (default: the daemon's)")
    ap.add_argument("--redis-db", type=int, default=9)
    ap.add_argument("--keep", action="store_true", help="keep the temporary project (its path is printed)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--ceiling", action="store_true",
                    help="after the run, measure in this process: read + transform (no Dask, no writes), then "
                         "one write of its rows with skyfeast's online writer (Redis's CPU measured apart)")
    return ap.parse_args(argv)


def _subreaper() -> None:
    """Become the subreaper of our descendants (Linux): a Dask worker or resource tracker whose
    parent exits first is re-parented here, and its CPU time reaches ``RUSAGE_CHILDREN`` once reaped."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans(timeout: float = 15.0) -> None:
    """Wait (up to ``timeout``) for descendants re-parented to us, so their CPU time is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def run_day(root: Path) -> tuple[float, dict, dict[int, tuple[str, float]], dict]:
    """``skyfeast run`` of the day as a subprocess: (wall seconds, its run report, peak RSS by pid,
    CPU seconds).  CPU is user+sys of the command and every descendant (Dask scheduler, nannies,
    workers), from ``RUSAGE_CHILDREN`` once it is reaped; ``cpu_sampled_s`` sums each process's
    last 0.2 s sample, a cross-check for descendants that were never reaped through it."""
    import resource

    cmd = [str(Path(sys.executable).with_name("skyfeast")), "run", "--config", str(root / "skyfeast.yaml"),
           "--job", "day_features", "--at", (DAY + timedelta(days=1)).isoformat(), "--json"]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "skyfeast.scheduler.cli"]
    _subreaper()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    memory = PeakMemory(proc.pid)
    memory.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks = memory.stop()
    cpu = {"cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
           "cpu_sampled_s": round(sum(memory.cpu.values()), 2),
           "cpu_by_role_s": {}}
    for pid, secs in memory.cpu.items():
        role = memory.roles.get(pid, "?")
        cpu["cpu_by_role_s"][role] = round(cpu["cpu_by_role_s"].get(role, 0.0) + secs, 2)
    if proc.returncode != 0:
        raise RuntimeError(f"skyfeast run exited {proc.returncode}:\n{out}\n{err[-4000:]}")
    report = json.loads(out)
    run = report["runs"][0]
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run['status']}: {run.get('error')}")
    return wall, run, peaks, cpu


def check_store(root: Path, args: argparse.Namespace, project: str, events_path: Path, users_seen: int) -> None:
    """One stored row per user that had events, and Feast reads what pandas computes for a sample."""
    stored = stored_entities(root, args.store, project, args.redis_db)
    if stored != users_seen:
        raise RuntimeError(f"online store holds {stored:,} users, expected {users_seen:,}")
    rng = np.random.default_rng(5)
    sample = [int(u) * 7919 + 13 for u in rng.integers(0, args.users, 5)]
    spot_check(root, events_path, sample)


def summarise(args: argparse.Namespace, users_seen: int, wall: float, run: dict,
              peaks: dict[int, tuple[str, float]], cpu: dict) -> dict:
    workers = [mib for role, mib in peaks.values() if role == "dask worker"]
    return {
        "store": args.store, "events": args.events, "users": users_seen, "features": len(FEATURES),
        "wall_s": round(wall, 2), "run_s": run.get("seconds"), "partitions": run.get("partitions"),
        "rows_per_s": round(users_seen / wall), "values_per_s": round(users_seen * len(FEATURES) / wall),
        "events_per_s": round(args.events / wall), **cpu, "phases": run.get("phases") or {},
        "work": run.get("work") or {},
        "peak_rss_mib": {f"{role} {pid}": round(mib) for pid, (role, mib) in sorted(peaks.items())},
        "peak_worker_rss_mib": round(max(workers)) if workers else None,
        "load_average": os.getloadavg(),
    }


def print_result(result: dict, run: dict, wall: float) -> None:
    print(f"skyfeast run ({result['store']}): {wall:.1f}s wall ({run.get('seconds')}s inside the runner, "
          f"{run.get('partitions')} partitions); {result['users']:,} users x {len(FEATURES)} features = "
          f"{result['rows_per_s']:,} rows/s, {result['values_per_s']:,} values/s, "
          f"{result['events_per_s']:,} events/s", flush=True)
    print(f"  CPU: {result['cpu_s']:.1f}s user+sys of skyfeast run and its descendants "
          f"({result['cpu_sampled_s']:.1f}s sampled: "
          + ", ".join(f"{r} {s:.1f}s" for r, s in sorted(result["cpu_by_role_s"].items())) + ")", flush=True)
    if result["phases"]:
        print("  run phases (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items()), flush=True)
    if result["work"]:
        print("  work on the workers (task s, summed over tasks): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["work"].items()), flush=True)
    for label, mib in result["peak_rss_mib"].items():
        print(f"  peak RSS {label}: {mib:,} MiB", flush=True)
    if "ceiling" in result:
        print("  ceiling, one process: " + ", ".join(f"{k} {v}" for k, v in result["ceiling"].items()), flush=True)
    print(f"  load average during/after the run: {', '.join(f'{x:.1f}' for x in result['load_average'])}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))

    root = Path(tempfile.mkdtemp(prefix="skyfeast-seed-day-"))
    project = None
    try:
        t = time.perf_counter()
        events_path = root / "data" / "events" / f"events-{DAY:%Y-%m-%d}.parquet"
        users_seen = make_events(events_path, args.events, args.users)
        say(f"events: {args.events:,} over {DAY:%Y-%m-%d} for {users_seen:,} of {args.users:,} users "
            f"({time.perf_counter() - t:.1f}s to generate); project {root}")
        project = make_project(root, args.store, args.redis_db, args.partitions)
        wall, run, peaks, cpu = run_day(root)
        check_store(root, args, project, events_path, users_seen)
        result = summarise(args, users_seen, wall, run, peaks, cpu)
        if args.ceiling:
            result["ceiling"] = ceiling(root, events_path)
        if args.json:
            print(json.dumps(result))
        else:
            print_result(result, run, wall)
        return 0
    finally:
        if args.store == "redis" and project:
            with contextlib.suppress(Exception):
                clear_redis(args.redis_db, project)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
