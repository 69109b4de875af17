"""User code for the quickstart: one feature transform and one model scorer.

skyfeast calls ``user_features(events, window)`` once per partition, after
shuffling events so that all events of a user are in the same partition.
``events`` holds the rows of [window.end - lookback, window.end).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
FEATURES = [f"{stat}_{w}" for w in WINDOWS for stat in ("events", "amount_sum", "amount_mean")] + [
    "purchases_24h",
    "repayments_7d",
]


def user_features(events: pd.DataFrame, window) -> pd.DataFrame:
    """Per-user counts, sums and means over 1h, 24h and 7d ending at ``window.end``."""
    end = pd.Timestamp(window.end)
    users = pd.Index(events["user_id"].unique(), name="user_id")
    out = pd.DataFrame(index=users)
    ts = events["event_timestamp"]
    for label, width in WINDOWS.items():
        recent = events[(ts >= end - width) & (ts < end)]
        agg = recent.groupby("user_id")["amount"].agg(["count", "sum"]).reindex(users)
        count = agg["count"].fillna(0).astype("int64")
        total = agg["sum"].fillna(0.0).astype("float64")
        out[f"events_{label}"] = count
        out[f"amount_sum_{label}"] = total
        out[f"amount_mean_{label}"] = (total / count.where(count > 0)).astype("float64")
    last24 = events[(ts >= end - WINDOWS["24h"]) & (ts < end)]
    out["purchases_24h"] = (
        (last24["event_type"] == "purchase").groupby(last24["user_id"]).sum().reindex(users).fillna(0).astype("int64")
    )
    last7 = events[(ts >= end - WINDOWS["7d"]) & (ts < end)]
    out["repayments_7d"] = (
        (last7["event_type"] == "repayment").groupby(last7["user_id"]).sum().reindex(users).fillna(0).astype("int64")
    )
    out = out.reset_index()
    out["user_id"] = out["user_id"].astype("int64")
    out["event_timestamp"] = end
    return out


def risk_score(model: dict, features: pd.DataFrame, window) -> pd.DataFrame:
    """Logistic risk score from a model exported by ``train_model.py``."""
    x = features[model["features"]].astype("float64").fillna(0.0).to_numpy()
    z = (x - model["mean"]) / model["scale"]
    logits = z @ model["coef"] + model["intercept"]
    return pd.DataFrame(
        {
            "user_id": features["user_id"].astype("int64").to_numpy(),
            "risk_score": 1.0 / (1.0 + np.exp(-logits)),
            "model_version": model["version"],
            "event_timestamp": features["event_timestamp"].to_numpy(),
        }
    )
