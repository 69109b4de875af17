"""Register the quickstart's model groups in skyfeast's registry, and make each version champion.

    python register_models.py [-c skyfeast.yaml]

Four small logistic models, as ``linear`` artifacts (JSON coefficients, see docs/models.md):

* ``churn``, ``fraud`` and ``spend`` score ``user_features`` (job ``scores``, view ``user_scores``);
* ``blend`` scores their three outputs and one feature (job ``blend``, view ``user_blend``): a model
  fed by models, its input the two upstreams' outputs joined on ``user_id``.

Idempotent: a model whose champion already holds the same artifact is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {  # name: (input features, coefficients, intercept)
    "churn": (["events_7d", "repayments_7d"], [-0.08, 0.6], -0.5),
    "fraud": (["amount_sum_24h", "purchases_24h"], [0.004, 0.35], -2.0),
    "spend": (["amount_sum_7d", "events_24h"], [0.002, 0.1], -1.0),
    "blend": (["churn", "fraud", "spend", "events_7d"], [1.2, 2.5, -0.8, -0.01], -1.5),
}


def artifact(coef: list[float], intercept: float) -> bytes:
    return json.dumps({"coef": coef, "intercept": intercept, "link": "logistic"}).encode()


def skyfeast(*argv: str, probe: bool = False) -> tuple[int, str]:
    """``skyfeast ARGV`` in this process; (exit status, stdout). A ``probe`` keeps its stderr to itself
    (asking for a model not registered yet is expected on a first run, not an error to show)."""
    from skyfeast.scheduler.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO() if probe else sys.stderr):
        code = main(list(argv))
    return code, buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default=str(HERE / "skyfeast.yaml"))
    args = ap.parse_args(argv)
    (HERE / "models").mkdir(exist_ok=True)
    for name, (features, coef, intercept) in MODELS.items():
        path = HERE / "models" / f"{name}.json"
        data = artifact(coef, intercept)
        path.write_bytes(data)
        code, shown = skyfeast("models", "show", name, "-c", args.config, "--json", probe=True)
        if code == 0:
            doc = json.loads(shown)
            champion = doc["aliases"].get("champion")
            if champion == doc["version"] and doc["sha256"] == hashlib.sha256(data).hexdigest():
                print(f"{name}: version {champion} is champion already", file=sys.stderr)
                continue
        code, out = skyfeast("models", "register", name, str(path), "--flavour", "linear",
                             "--features", ",".join(features), "-c", args.config, "--json")
        if code != 0:
            return code
        version = str(json.loads(out)["version"])
        code, _ = skyfeast("models", "promote", name, version, "--reason", "quickstart", "-c", args.config)
        if code != 0:
            return code
        print(f"{name}: registered version {version}, now champion", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
