"""The MLflow bridge: references to MLflow versions (flavour ``mlflow``) and skyfeast versions published to
MLflow, against a real local MLflow store (SQLite, no server; tests/mlflow_store.py).

The pure parts (URIs, the reference JSON, config) need no MLflow; the rest skips without it (fails
under SKYFEAST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skyfeast.featurestore.models.flavours import FlavourNotInstalled, check_flavour, linear_artifact, load, predict
from skyfeast.featurestore.models.mlflow_bridge import (
    BadReference,
    Reference,
    absolute_tracking_uri,
    parse_model_uri,
    read_reference,
    reference_artifact,
)
from skyfeast.scheduler.cli import main
from tests.unit.test_window_arguments import CONFIG


# --------------------------------------------------------------------------- pure
@pytest.mark.parametrize("uri, want", [
    ("models:/card@champion", ("card", "champion", None)),
    ("models:/risk.v2-a/12", ("risk.v2-a", None, 12)),
])
def test_model_uris(uri, want):
    assert parse_model_uri(uri) == want


@pytest.mark.parametrize("uri, message", [
    ("models:/card/Production", "stage or 'latest'"),
    ("models:/card/latest", "stage or 'latest'"),
    ("runs:/abc/model", "not an MLflow model URI"),
    ("models:/card", "not an MLflow model URI"),
])
def test_moving_or_malformed_uris_are_refused(uri, message):
    with pytest.raises(BadReference, match=message):
        parse_model_uri(uri)


def test_tracking_uris_are_made_absolute_and_never_carry_a_password(tmp_path):
    assert absolute_tracking_uri("sqlite:///m.db", tmp_path) == f"sqlite:///{tmp_path / 'm.db'}"
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert absolute_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    with pytest.raises(BadReference, match="password"):
        absolute_tracking_uri("https://me:secret@mlflow:5000")


def test_the_reference_artifact_round_trips_and_its_bytes_name_one_version():
    ref = Reference("sqlite:////m.db", "card", 3, "models:/card@champion", "models:/m-1", "r1", ("a", "b"))
    data = reference_artifact(ref)
    assert read_reference(data) == ref and json.loads(data)["model_uri"] == "models:/card/3"
    assert reference_artifact(Reference("sqlite:////m.db", "card", 4, "models:/card@champion")) != data
    with pytest.raises(BadReference, match="not an MLflow reference"):
        read_reference(linear_artifact([1.0], 0.0))


def test_a_missing_mlflow_is_flavour_not_installed_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(FlavourNotInstalled, match=r"pip install 'skyfeast\[mlflow\]'"):
        check_flavour("mlflow")
    ref = reference_artifact(Reference("sqlite:////m.db", "card", 1, "models:/card/1"))
    with pytest.raises(FlavourNotInstalled, match=r"skyfeast\[mlflow\]"):
        load("mlflow", ref)


# --------------------------------------------------------------------------- config
def _project(tmp_path, models: str = "") -> object:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "skyfeast.yaml").write_text(CONFIG + models)
    return tmp_path


def test_config_tracking_uri_is_relative_to_the_config_file_and_strict(tmp_path, capsys):
    from skyfeast.scheduler.config import load_config

    _project(tmp_path, "models: {mlflow_tracking_uri: 'sqlite:///mlflow.db'}\n")
    cfg = load_config(tmp_path / "skyfeast.yaml", check_imports=False, check_feast=False)
    assert cfg.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    for bad, message in [("{mlflow_tracking_uri: 'https://u:pw@h'}", "no password"),
                         ("{mlflow_uri: x}", "mlflow_uri")]:
        _project(tmp_path, f"models: {bad}\n")
        assert main(["validate", "-c", str(tmp_path / "skyfeast.yaml")]) == 2
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- against a real MLflow store
def _cli(capsys, project, *argv) -> tuple[int, str, str]:
    code = main(["models", argv[0], "-c", str(project / "skyfeast.yaml"), *argv[1:]])
    got = capsys.readouterr()
    return code, got.out, got.err


def _json(capsys, project, *argv):
    code, out, err = _cli(capsys, project, *argv, "--json")
    assert code == 0, err
    return json.loads(out), err


def _published(tmp_path, mlflow_uri):
    return _project(tmp_path, f"models: {{mlflow_tracking_uri: '{mlflow_uri}', "
                              f"mlflow_artifact_location: '{(tmp_path / 'mlartifacts').as_uri()}'}}\n")


def test_register_promote_and_rollback_are_mirrored_in_mlflow(capsys, tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    project = _published(tmp_path, mlflow_uri)
    for coef in (0.5, 2.0):
        (project / "lin.json").write_bytes(linear_artifact([coef], 0.1))
        v, _ = _json(capsys, project, "register", "lin", str(project / "lin.json"), "--flavour", "linear",
                     "--features", "x")
        assert v["mlflow"] == {"version": v["version"]}
    client = MlflowClient(mlflow_uri, mlflow_uri)
    mv = client.get_model_version("lin", "2")
    assert mv.tags["skyfeast.model"] == "lin" and mv.tags["skyfeast.version"] == "2"
    assert mv.tags["skyfeast.sha256"] == v["sha256"]
    from mlflow.artifacts import download_artifacts

    got = download_artifacts(artifact_uri=client.get_model_version_download_uri("lin", "2"), tracking_uri=mlflow_uri,
                             dst_path=str(tmp_path / "dl"))
    assert (Path(got) / "lin.json").read_bytes() == linear_artifact([2.0], 0.1)

    moved, _ = _json(capsys, project, "promote", "lin", "2", "--alias", "champion")
    assert moved["mlflow"] == {"alias": "champion", "version": 2}
    assert int(client.get_model_version_by_alias("lin", "champion").version) == 2
    _json(capsys, project, "promote", "lin", "1")
    back, _ = _json(capsys, project, "rollback", "lin")
    assert back["to_version"] == 2 and int(client.get_model_version_by_alias("lin", "champion").version) == 2
    # publishing again changes nothing: found by its tags
    synced, _ = _json(capsys, project, "publish", "lin")
    assert synced["versions"] == {"1": 1, "2": 2} and synced["aliases"] == {"champion": 2}
    assert len(client.search_model_versions("name = 'lin'")) == 2


def _post(base: str, path: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _served(http_app, project):
    """The daemon's HTTP app over the project's real ledger (loopback: actions need no token)."""
    from skyfeast.scheduler.app.routes import Api
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.control.providers import ProviderPool
    from skyfeast.scheduler.ledger import Ledger

    cfg = load_config(project / "skyfeast.yaml", check_imports=False, check_feast=False)
    ledger, pool = Ledger(cfg.state_url), ProviderPool(cfg)
    return http_app(Api(cfg=cfg, ledger=ledger, pool=pool, repo=None, token=None)), ledger, pool


def test_the_daemons_promote_and_rollback_are_mirrored_in_mlflow(capsys, tmp_path, mlflow_uri, http_app):
    from mlflow import MlflowClient

    project = _published(tmp_path, mlflow_uri)
    for coef in (0.5, 2.0):
        (project / "lin.json").write_bytes(linear_artifact([coef], 0.1))
        _json(capsys, project, "register", "lin", str(project / "lin.json"), "--flavour", "linear", "--features", "x")
    client = MlflowClient(mlflow_uri, mlflow_uri)
    app, ledger, pool = _served(http_app, project)
    try:
        for version in (2, 1):
            code, moved = _post(app.base, "/api/models/lin/promote", {"version": version, "reason": "test"})
            assert code == 200 and moved["to_version"] == version, moved
            assert moved["mlflow"] == {"alias": "champion", "version": version}
            assert int(client.get_model_version_by_alias("lin", "champion").version) == version
        code, back = _post(app.base, "/api/models/lin/rollback", {"reason": "test"})
        assert code == 200 and back["to_version"] == 2 and back["mlflow"] == {"alias": "champion", "version": 2}
        assert int(client.get_model_version_by_alias("lin", "champion").version) == 2
    finally:
        pool.close()
        ledger.close()


def test_the_daemons_promote_stands_when_mlflow_is_unreachable(capsys, tmp_path, mlflow_uri, http_app, monkeypatch,
                                                                caplog):
    """mlflow_uri: MLflow is installed (the fixture skips, or fails under SKYFEAST_REQUIRE_SERVICES, without it)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    project = _project(tmp_path, f"models: {{mlflow_tracking_uri: 'http://127.0.0.1:{_closed_port()}'}}\n")
    (project / "lin.json").write_bytes(linear_artifact([0.5], 0.1))
    _json(capsys, project, "register", "lin", str(project / "lin.json"), "--flavour", "linear", "--features", "x")
    app, ledger, pool = _served(http_app, project)
    try:
        code, moved = _post(app.base, "/api/models/lin/promote", {"version": 1})
        assert code == 200 and moved["to_version"] == 1, moved
        assert "moved in skyfeast but not in MLflow" in moved["mlflow"]["error"]
        assert "skyfeast models publish lin" in moved["mlflow"]["error"]
        assert "moved in skyfeast but not in MLflow" in caplog.text  # the daemon's log says so too
    finally:
        pool.close()
        ledger.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_mlflow_warns_and_skyfeast_keeps_its_version(capsys, tmp_path, mlflow_uri, monkeypatch):
    """skyfeast commits first; MLflow failing afterwards is one warning line, and `publish` repairs it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the bridge's default (2) costs seconds here
    project = _project(tmp_path, f"models: {{mlflow_tracking_uri: 'http://127.0.0.1:{_closed_port()}'}}\n")
    (project / "lin.json").write_bytes(linear_artifact([0.5], 0.1))
    v, err = _json(capsys, project, "register", "lin", str(project / "lin.json"), "--flavour", "linear",
                   "--features", "x")
    assert v["version"] == 1 and "not published to MLflow" in v["mlflow"]["error"]
    assert "skyfeast: warning:" in err and "Traceback" not in err and "skyfeast models publish lin" in err
    moved, err = _json(capsys, project, "promote", "lin", "1")
    assert moved["to_version"] == 1 and "moved in skyfeast but not in MLflow" in err
    code, _, err = _cli(capsys, project, "publish", "lin")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    _published(tmp_path, mlflow_uri)  # MLflow is back (here: another URI)
    synced, _ = _json(capsys, project, "publish", "lin")
    assert synced["versions"] == {"1": 1} and synced["aliases"] == {"champion": 1}


def test_an_mlflow_alias_is_pinned_at_registration_and_scored_as_a_pyfunc(capsys, tmp_path, mlflow_uri):
    from mlflow import MlflowClient

    from tests.integration.mlflow_scorecard import FEATURES, expected

    project = _project(tmp_path)
    v, _ = _json(capsys, project, "register", "scard", "models:/card@champion", "--tracking-uri", mlflow_uri)
    assert v["flavour"] == "mlflow" and v["features"] == FEATURES  # from the model's signature
    stored = project / "data" / v["artifact_key"]
    ref = read_reference(stored.read_bytes())
    assert (ref.name, ref.version, ref.resolved_from, ref.tracking_uri) == (
        "card", 1, "models:/card@champion", mlflow_uri)
    MlflowClient(mlflow_uri, mlflow_uri).set_registered_model_alias("card", "champion", 2)  # moves in MLflow...
    model = load("mlflow", stored.read_bytes(), features=v["features"])  # ...the skyfeast version does not
    frame = pd.DataFrame({"events_24h": [1.0, 30.0], "amount_sum_24h": [-40.0, 2.5], "purchases_24h": [0.0, 3.0]})
    np.testing.assert_allclose(predict("mlflow", model, frame[FEATURES].to_numpy()), expected(frame), rtol=1e-12)
    v2, _ = _json(capsys, project, "register", "scard", "models:/card@champion", "--tracking-uri", mlflow_uri)
    assert read_reference((project / "data" / v2["artifact_key"]).read_bytes()).version == 2


@pytest.mark.parametrize("argv, message", [
    (("register", "s", "models:/card@nope", "--tracking-uri", "{uri}"), "Registered model alias nope not found"),
    (("register", "s", "models:/card/Staging", "--tracking-uri", "{uri}"), "stage or 'latest'"),
    (("register", "s", "models:/card@champion"), "needs an MLflow tracking URI"),
    (("register", "s", "models:/card@champion", "--flavour", "linear"), "flavour mlflow takes"),
    (("register", "s", "models:/card@champion", "--tracking-uri", "https://u:pw@h"), "password"),
])
def test_bad_mlflow_references_are_one_line_and_exit_2(capsys, tmp_path, mlflow_uri, monkeypatch, argv, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = _project(tmp_path)
    code, _, err = _cli(capsys, project, *(a.replace("{uri}", mlflow_uri) for a in argv))
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (project / "data" / "models").exists()
