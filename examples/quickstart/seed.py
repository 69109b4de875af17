"""Deterministic synthetic user-behaviour events for the quickstart.

    python seed.py [--users 5000] [--days 8] [--events-per-day 40000] [--end ISO] [--seed 7]

Writes ``events/events-YYYY-MM-DD.parquet`` (one file per UTC day) into the
storage root of every provider in ``skyfeast.yaml``'s directory layout
(``data/aws`` and ``data/gcp``), and publishes the shipped model to
``models/`` in each root.  The same arguments always produce the same rows.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
EVENT_TYPES = np.array(["login", "purchase", "repayment", "loan_application"])
EVENT_P = np.array([0.55, 0.3, 0.1, 0.05])


def generate(users: int, days: int, per_day: int, end: datetime, seed: int) -> pd.DataFrame:
    """Events in [end - days, end). Users follow a Zipf-like activity profile."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    weights = 1.0 / np.arange(1, users + 1) ** 0.6
    weights /= weights.sum()
    user_id = rng.choice(np.arange(1, users + 1, dtype=np.int64) * 7919 % 1_000_003, size=n, p=weights)
    etype = rng.choice(EVENT_TYPES, size=n, p=EVENT_P)
    amount = np.where(
        etype == "purchase",
        np.round(rng.lognormal(3.2, 0.9, size=n), 2),
        np.where(etype == "repayment", np.round(rng.lognormal(4.5, 0.5, size=n), 2), 0.0),
    )
    span_us = days * 86_400 * 1_000_000
    offset_us = rng.integers(0, span_us, size=n)
    start = pd.Timestamp(end) - pd.Timedelta(days=days)
    ts = start + pd.to_timedelta(offset_us, unit="us")
    df = pd.DataFrame({"user_id": user_id, "event_type": etype, "amount": amount, "event_timestamp": ts})
    return df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def write_day_files(events: pd.DataFrame, root: Path) -> int:
    out = root / "events"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    n = 0
    for day, part in events.groupby(events["event_timestamp"].dt.strftime("%Y-%m-%d"), sort=True):
        part.to_parquet(out / f"events-{day}.parquet", index=False)
        n += 1
    return n


def parse_end(value: str | None) -> datetime:
    if value is None:
        now = datetime.now(timezone.utc)
        return now.replace(minute=0, second=0, microsecond=0)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--events-per-day", type=int, default=40_000)
    ap.add_argument("--end", help="exclusive end of the data, ISO-8601 (default: this hour, UTC)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=HERE / "data", help="data directory (default: ./data)")
    ap.add_argument("--providers", nargs="+", default=["aws", "gcp"])
    args = ap.parse_args(argv)
    if args.users < 1 or args.days < 1 or args.events_per_day < 1:
        print("seed.py: --users, --days and --events-per-day must be positive", file=sys.stderr)
        return 2
    end = parse_end(args.end)
    events = generate(args.users, args.days, args.events_per_day, end, args.seed)
    for prov in args.providers:
        root = args.data / prov
        files = write_day_files(events, root)
        (root / "models").mkdir(parents=True, exist_ok=True)
        shutil.copy2(HERE / "models" / "risk_model.joblib", root / "models" / "risk_model.joblib")
        print(f"seeded {root}: {len(events):,} events in {files} daily files up to {end.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
