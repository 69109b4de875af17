"""Failure handling: user-code errors retry in place; an unreachable provider fails over."""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import AT, make_project, skyfeast, skyfeast_inprocess, skyfeast_json

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_user_code_error_retries_on_same_provider_then_fails(tmp_path):
    def edit(cfg):
        cfg["jobs"][0]["transform"] = "transforms:broken"
        cfg["jobs"][0]["retries"] = 1

    cfg = make_project(tmp_path / "p", users=300, per_day=2000, edit=edit)
    with open(cfg.parent / "transforms.py", "a") as fh:
        fh.write("\n\ndef broken(events, window):\n    raise RuntimeError('boom from user code')\n")
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=cfg.parent)
    assert code == 1
    (run,) = report["runs"]
    assert run["status"] == "failed" and run["failure_class"] == "user_code"
    assert "boom from user code" in run["error"]
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--job", "user_features", cwd=cfg.parent)
    (row,) = runs["runs"]
    assert row["status"] == "failed" and "boom from user code" in row["error"]
    attempts = row["attempt_log"]
    assert [a["provider"] for a in attempts] == ["aws", "aws"], "user-code errors must not fail over"
    assert all(a["failure_class"] == "user_code" for a in attempts)
    human = skyfeast("runs", "-c", str(cfg), cwd=cfg.parent)
    assert "boom from user code" in human.stdout


def test_unreachable_provider_fails_over_without_using_retries(tmp_path):
    port = _free_port()

    def edit(cfg):
        cfg["providers"]["aws"]["cluster"] = {"type": "address", "address": f"tcp://127.0.0.1:{port}",
                                              "connect_timeout": "2s"}
        cfg["jobs"][0]["retries"] = 0

    cfg = make_project(tmp_path / "p", users=300, per_day=2000, edit=edit)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=cfg.parent)
    assert code == 0, report
    feats = next(r for r in report["runs"] if r["job"] == "user_features")
    assert feats["status"] == "succeeded" and feats["provider"] == "gcp" and feats["attempts"] == 2
    code, runs = skyfeast_json("runs", "-c", str(cfg), "--job", "user_features", cwd=cfg.parent)
    log = runs["runs"][0]["attempt_log"]
    assert [(a["provider"], a["outcome"], a["failure_class"]) for a in log] == [
        ("aws", "failed", "infrastructure"), ("gcp", "succeeded", None)]
    # the model job follows its input (data locality) to gcp
    model = next(r for r in report["runs"] if r["job"] == "risk_score")
    assert model["status"] == "succeeded" and model["provider"] == "gcp"
    assert (cfg.parent / "data" / "gcp" / "offline" / "user_risk").is_dir()


def test_bad_cli_arguments_exit_2_without_traceback(tmp_path):
    cfg = make_project(tmp_path / "p", users=100, per_day=500)
    for args in (["run", "-c", str(cfg), "--job", "nope"], ["run", "-c", str(cfg), "--at", "yesterday-ish"],
                 ["plan", "-c", str(cfg), "--count", "0"], ["run", "-c", str(tmp_path / "missing.yaml")],
                 ["frobnicate"]):
        proc = skyfeast_inprocess(*args, cwd=cfg.parent)  # argument handling: no process needed
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), args


def test_cordon_moves_new_runs_and_uncordon_brings_them_back(tmp_path):
    def edit(cfg):
        for p in cfg["providers"].values():
            p["cluster"]["workers"] = 1

    cfg = make_project(tmp_path / "p", users=200, per_day=1000, edit=edit)
    c = skyfeast("cordon", "-c", str(cfg), "aws", "--reason", "maintenance", cwd=cfg.parent)
    assert c.returncode == 0 and "cordoned" in c.stdout
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=cfg.parent)
    assert code == 0 and report["runs"][0]["provider"] == "gcp"
    code, status = skyfeast_json("status", "-c", str(cfg), cwd=cfg.parent)
    provs = {p["name"]: p for p in status["providers"]}
    assert provs["aws"]["cordoned"] and provs["aws"]["cordon"]["reason"] == "maintenance"
    assert not provs["gcp"]["cordoned"]
    assert skyfeast("uncordon", "-c", str(cfg), "aws", cwd=cfg.parent).returncode == 0
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", "2026-03-02T11:30:00Z",
                                 cwd=cfg.parent)
    assert code == 0 and report["runs"][0]["provider"] == "aws"
    bad = skyfeast("cordon", "-c", str(cfg), "azure", cwd=cfg.parent)
    assert bad.returncode == 2 and "unknown provider 'azure'" in bad.stderr
