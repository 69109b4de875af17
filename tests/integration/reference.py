"""Independent re-computation of the quickstart features and scores, with plain pandas.

Deliberately does not import the quickstart's transforms: it computes each
aggregate with boolean masks over all events at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPANS = {"1h": pd.Timedelta(hours=1), "24h": pd.Timedelta(hours=24), "7d": pd.Timedelta(days=7)}


def load_events(root) -> pd.DataFrame:
    files = sorted((root / "events").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def expected_features(events: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    ev = events[(events["event_timestamp"] < end) & (events["event_timestamp"] >= end - SPANS["7d"])].copy()
    res = {}
    for label, span in SPANS.items():
        inside = (ev["event_timestamp"] >= end - span).astype(int)
        cnt = inside.groupby(ev["user_id"]).sum()
        tot = (ev["amount"] * inside).groupby(ev["user_id"]).sum()
        res[f"events_{label}"] = cnt
        res[f"amount_sum_{label}"] = tot
        res[f"amount_mean_{label}"] = (tot / cnt).where(cnt > 0)
    in24 = ev["event_timestamp"] >= end - SPANS["24h"]
    res["purchases_24h"] = ((ev["event_type"] == "purchase") & in24).astype(int).groupby(ev["user_id"]).sum()
    res["repayments_7d"] = (ev["event_type"] == "repayment").astype(int).groupby(ev["user_id"]).sum()
    return pd.DataFrame(res)


def expected_risk(features: pd.DataFrame, model: dict) -> pd.Series:
    cols = model["features"]
    x = features[cols].astype(float).fillna(0.0).to_numpy()
    logit = ((x - model["mean"]) / model["scale"]) @ model["coef"] + model["intercept"]
    return pd.Series(1 / (1 + np.exp(-logit)), index=features.index)
