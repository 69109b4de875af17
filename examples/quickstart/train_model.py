"""Train the small logistic risk model shipped as ``models/risk_model.joblib``.

    python train_model.py

The model is a plain dict of NumPy arrays (no scikit-learn classes), so it
loads with any joblib/NumPy version. Labels are synthetic: a hidden rule plus
noise over the quickstart features, fitted with Newton's method (IRLS).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
from seed import generate, parse_end
from transforms import user_features

HERE = Path(__file__).resolve().parent
FEATURES = ["events_24h", "amount_sum_24h", "amount_mean_7d", "purchases_24h", "repayments_7d", "events_7d"]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 25) -> tuple[np.ndarray, float]:
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w[:-1], float(w[-1])


def main() -> None:
    end = parse_end("2026-01-08T00:00:00Z")
    events = generate(4000, 8, 30_000, end, seed=1234)
    feats = user_features(events, SimpleNamespace(start=end - timedelta(hours=1), end=end))
    x = feats[FEATURES].astype("float64").fillna(0.0).to_numpy()
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    hidden = np.array([0.4, 0.8, 0.3, 0.6, -1.2, -0.2])
    rng = np.random.default_rng(99)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-(z @ hidden - 1.0)))).astype(float)
    coef, intercept = fit_logistic(z, y)
    model = {
        "version": "risk-v1",
        "features": FEATURES,
        "mean": mean,
        "scale": scale,
        "coef": coef,
        "intercept": intercept,
    }
    (HERE / "models").mkdir(exist_ok=True)
    joblib.dump(model, HERE / "models" / "risk_model.joblib")
    acc = float(((1 / (1 + np.exp(-(z @ coef + intercept))) > 0.5) == y).mean())
    print(f"trained {model['version']} on {len(z)} users; training accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
