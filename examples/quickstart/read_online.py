"""Read a few users' online features with the plain Feast SDK (no skyfeast import).

    python read_online.py [--users 5] [--json] [USER_ID ...]

Without user ids, reads the first N users of the generated events.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
FEATURES = [
    "user_features:events_1h", "user_features:events_24h", "user_features:amount_sum_24h",
    "user_features:amount_mean_7d", "user_features:events_7d", "user_risk:risk_score", "user_risk:model_version",
    "user_scores:churn", "user_scores:fraud", "user_scores:spend", "user_blend:blend", "user_blend:model_set",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("user_ids", nargs="*", type=int)
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from feast import FeatureStore

    ids = args.user_ids
    if not ids:
        events = pd.read_parquet(sorted((HERE / "data" / "aws" / "events").glob("*.parquet"))[-1], columns=["user_id"])
        ids = sorted(events["user_id"].unique().tolist())[: args.users]
    store = FeatureStore(repo_path=str(HERE / "feature_repo"))
    resp = store.get_online_features(features=FEATURES, entity_rows=[{"user_id": i} for i in ids]).to_dict()
    if args.json:
        json.dump(resp, sys.stdout, default=str)
        sys.stdout.write("\n")
        return 0
    frame = pd.DataFrame(resp)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
