"""A composed model job's input join: the shuffle join against the broadcast join it replaces for large upstreams.

A model job whose source reads two upstream jobs scores their outputs joined on the entity keys
(``scheduler/run/joins.py``). This bench writes two such outputs as parquet parts (``--rows`` users
× ``--features`` float32 columns in ``--parts`` parts; the other upstream ``--other-rows`` users,
three quarters of them shared, × ``--other-features`` in ``--other-parts`` parts), starts a
LocalCluster of ``--workers`` processes (one thread each) and times, ``--runs`` times each, the
input of every chunk of the job built both ways, on the workers:

* ``broadcast`` (the named baseline): one chunk per part of the first upstream; each worker reads the
  other upstream's whole output once and joins every chunk it runs with it;
* ``shuffle``: both upstreams bucketed by the entity keys, shuffled (Dask's p2p), joined bucket by
  bucket (``--parts`` buckets).

Each chunk's task returns its row count only, so nothing but counts comes back to the client. Per
way it prints the median wall time, the joined rows per second, each worker's peak RSS (``VmHWM``,
reset before each run) and the ratio to the baseline. The joined row count must equal the one
computed here with pandas from the same frames, or the bench fails.

    .venv/bin/python bench/join.py                                  # 2M x 20 joined with 2M x 20
    .venv/bin/python bench/join.py --rows 4000000 --other-rows 4000000 --runs 1
    .venv/bin/python bench/join.py --rows 50000 --other-rows 50000 --runs 1 --json   # the smoke test's
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from _workers import reset_worker_peaks, worker_peaks  # this folder is on sys.path, as a script's

KEYS = ("user_id",)


def write_upstream(root: Path, name: str, users: np.ndarray, features: int, parts: int, seed: int) -> list:
    """``users`` (in a shuffled order) with ``features`` float32 columns, as ``parts`` parquet files."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(users)
    frame = pd.DataFrame({"user_id": users, **{f"{name}_f{i:02d}": rng.random(len(users), dtype=np.float32)
                                               for i in range(features)}})
    out = []
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), parts)):
        path = root / f"{name}-part{i:05d}.parquet"
        frame.iloc[rows].to_parquet(path, index=False)
        out.append((str(path), {}))
    return out


# The two below run on the Dask workers (tasks, client.run), which cannot import this script: cloudpickle
# sends its functions by value.
def _forget_broadcast_cache() -> None:
    from skyfeast.scheduler.run import joins

    joins.clear_broadcast_cache()
    import gc

    gc.collect()


def _rows(frame: pd.DataFrame) -> int:
    return len(frame)


def _broadcast_rows(url: str, opts: dict, joins, keys) -> int:
    from skyfeast.scheduler.run.joins import read_joined

    return len(read_joined(url, opts, joins, keys))


def time_way(client, way: str, first: list, other: list, run: int) -> tuple[float, int, list[float]]:
    """One run of ``way``: wall seconds, joined rows, each worker's peak RSS (MiB)."""
    import dask

    from skyfeast.scheduler.run.joins import hashable, shuffle_joined

    client.run(_forget_broadcast_cache)
    reset_worker_peaks(client)
    t = time.perf_counter()
    joins = [(f"other@{run}", other)]  # a new upstream run each time, as in production
    if way == "broadcast":
        tasks = [dask.delayed(_broadcast_rows, pure=False)(url, opts, hashable(joins), KEYS) for url, opts in first]
    else:
        tasks = [dask.delayed(_rows, pure=False)(chunk) for chunk in shuffle_joined(client, first, joins, KEYS, len(first))]
    rows = sum(client.compute(tasks, sync=True))
    seconds = time.perf_counter() - t
    peaks = worker_peaks(client)
    client.run(_forget_broadcast_cache)
    return seconds, rows, peaks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="users in the first upstream's output (default 2M)")
    ap.add_argument("--features", type=int, default=20, help="its float32 columns (default 20)")
    ap.add_argument("--parts", type=int, default=8, help="its parts, and the shuffle join's buckets (default 8)")
    ap.add_argument("--other-rows", type=int, default=2_000_000, help="users in the other upstream's (default 2M)")
    ap.add_argument("--other-features", type=int, default=20, help="its float32 columns (default 20)")
    ap.add_argument("--other-parts", type=int, default=8, help="its parts (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="runs per way; the median is reported (default 3)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs of each way first (default 1: the workers' first shuffle imports and "
                         "starts Dask's p2p machinery, which a daemon's warm clusters have done long before)")
    ap.add_argument("--ways", default="broadcast,shuffle", help="which joins to time (default both)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    if not ways or any(w not in ("broadcast", "shuffle") for w in ways):
        ap.error("--ways takes broadcast and/or shuffle")
    if min(args.rows, args.other_rows, args.parts, args.other_parts, args.workers, args.runs) < 1 or args.warmup < 0:
        ap.error("--rows, --other-rows, --parts, --other-parts, --workers and --runs must be at least 1, "
                 "--warmup at least 0")

    from skyfeast.adapters.clusters.local import LocalConnector

    shared = args.other_rows * 3 // 4  # users both upstreams have
    first_users = np.arange(args.rows, dtype=np.int64)
    other_users = np.concatenate([first_users[:min(shared, args.rows)],
                                  np.arange(args.rows, args.rows + args.other_rows - min(shared, args.rows))])
    want = len(np.intersect1d(first_users, other_users))  # pandas' inner join of unique keys: the common ones
    print(f"first upstream {args.rows:,} users x {args.features} float32 in {args.parts} parts; other "
          f"{args.other_rows:,} x {args.other_features} in {args.other_parts} parts; {want:,} users in both; "
          f"{args.workers} worker processes x 1 thread; median of {args.runs} run(s) after {args.warmup} untimed")
    result: dict = {"rows": args.rows, "other_rows": args.other_rows, "joined": want, "ways": {}}
    with tempfile.TemporaryDirectory(prefix="skyfeast-bench-join-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        first = write_upstream(root, "a", first_users, args.features, args.parts, 1)
        other = write_upstream(root, "b", other_users, args.other_features, args.other_parts, 2)
        print(f"data written in {time.perf_counter() - t:.1f} s")
        conn = LocalConnector(workers=args.workers, threads=1, memory_limit="auto", name="bench-join")
        try:
            client = conn.connect()
            print(f"{'way':<10} {'median s':>9} {'joined rows/s':>14} {'peak RSS per worker, MiB':>26} {'vs broadcast':>13}")
            for way in ways:
                times, peaks, warm = [], [], []
                for run in range(-args.warmup, args.runs):
                    seconds, rows, peak = time_way(client, way, first, other, run)
                    if rows != want:
                        print(f"FAIL: {way} joined {rows:,} rows, pandas {want:,}", file=sys.stderr)
                        return 1
                    if run < 0:
                        warm.append(seconds)
                        continue
                    times.append(seconds)
                    peaks.append(max(peak, default=0.0))
                median = statistics.median(times)
                base = result["ways"].get("broadcast", {}).get("median_s")
                ratio = f"{base / median:.2f}x" if base else "baseline" if way == "broadcast" else "-"
                result["ways"][way] = {"median_s": round(median, 3), "runs_s": [round(x, 3) for x in times],
                                       "rows_per_s": round(want / median), "peak_worker_rss_mib": round(max(peaks), 1),
                                       "warmup_s": [round(x, 3) for x in warm]}
                print(f"{way:<10} {median:>9.2f} {want / median:>14,.0f} {max(peaks):>26,.0f} {ratio:>13}")
                print(f"{'':<10} runs: {', '.join(f'{x:.2f}' for x in times)} s"
                      + (f"; untimed warm-up: {', '.join(f'{x:.2f}' for x in warm)} s" if warm else ""))
        finally:
            conn.close()
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
