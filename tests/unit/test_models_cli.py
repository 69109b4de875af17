"""``skyfeast models``: register -> promote -> rollback -> history with --json, and bad arguments (exit 2)."""

from __future__ import annotations

import hashlib
import json

import pytest

from skyfeast.scheduler.cli import main
from tests.unit.test_window_arguments import CONFIG


@pytest.fixture
def project(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "skyfeast.yaml").write_text(CONFIG)
    (tmp_path / "model.joblib").write_bytes(b"weights v1")
    return tmp_path


def _cli(capsys, project, *argv) -> tuple[int, str, str]:
    code = main(["models", argv[0], "-c", str(project / "skyfeast.yaml"), *argv[1:]])
    got = capsys.readouterr()
    return code, got.out, got.err


def _json(capsys, project, *argv):
    code, out, err = _cli(capsys, project, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_register_promote_rollback_history(capsys, project):
    artifact = str(project / "model.joblib")
    v1 = _json(capsys, project, "register", "churn", artifact, "--features", "age, spend", "--outputs", "score",
               "--metric", "auc=0.81", "--metric", "logloss=0.3")
    assert (v1["version"], v1["artifact_key"], v1["features"], v1["outputs"]) == \
        (1, "models/churn/v1/model.joblib", ["age", "spend"], ["score"])
    assert v1["metrics"] == {"auc": 0.81, "logloss": 0.3} and v1["created_by"].startswith("cli:")
    stored = project / "data" / "models" / "churn" / "v1" / "model.joblib"  # the primary provider's storage
    assert stored.read_bytes() == b"weights v1" and v1["sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    (project / "model.joblib").write_bytes(b"weights v2")
    v2 = _json(capsys, project, "register", "churn", artifact, "--parent", "1")
    assert (v2["version"], v2["parent_version"]) == (2, 1)

    assert _json(capsys, project, "promote", "churn", "1", "--reason", "first")["to_version"] == 1
    moved = _json(capsys, project, "promote", "churn", "2")
    assert (moved["from_version"], moved["to_version"], moved["alias"]) == (1, 2, "champion")
    back = _json(capsys, project, "rollback", "churn", "--reason", "auc dropped")
    assert (back["from_version"], back["to_version"], back["reason"]) == (2, 1, "auc dropped")
    history = _json(capsys, project, "history", "churn", "--alias", "champion")
    assert [(m["from_version"], m["to_version"]) for m in history] == [(None, 1), (1, 2), (2, 1)]
    (listed,) = _json(capsys, project, "list")
    assert (listed["name"], listed["latest_version"], listed["aliases"]) == ("churn", 2, {"champion": 1})
    shown = _json(capsys, project, "show", "churn", "--version", "1")
    assert shown["version"] == 1 and shown["aliases"] == {"champion": 1}

    code, out, _ = _cli(capsys, project, "list")
    assert code == 0 and "champion=v1" in out
    code, out, _ = _cli(capsys, project, "rollback", "churn")
    assert code == 0 and "churn champion: version 1 -> version 2" in out


@pytest.mark.parametrize("argv, message", [
    (("show", "nope"), "unknown model 'nope'"),
    (("promote", "nope", "1"), "unknown model 'nope'"),
    (("history", "nope"), "unknown model 'nope'"),
    (("register", "churn", "missing.joblib"), "artifact missing.joblib: cannot read it"),
    (("register", "churn", "{artifact}", "--metric", "auc"), "--metric: 'auc' is not KEY=NUMBER"),
    (("register", "churn", "{artifact}", "--metric", "auc=high"), "--metric: 'auc=high' is not KEY=NUMBER"),
    (("register", "../up", "{artifact}"), "invalid model name '../up'"),
    (("register", "churn", "{artifact}", "--parent", "3"), "model 'churn' has no version 3"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, project, argv, message):
    argv = tuple(a.replace("{artifact}", str(project / "model.joblib")) for a in argv)
    code, _, err = _cli(capsys, project, *argv)
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (project / "data" / "models").exists()  # nothing written
