"""The CLI's rough edges (issue 14): one window format, yes/no, flags after the subcommand, unknown
jobs, trigger with no daemon, --wait that runs out, and a backfill too long to start unasked."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from skyfeast.scheduler.cli import main
from skyfeast.scheduler.cli.common import window_text, yes_no
from skyfeast.scheduler.cli.ops import EXIT_WAIT_TIMED_OUT
from tests.unit.test_window_arguments import CONFIG

WINDOW = "2026-03-02T05:00:00Z/2026-03-02T06:00:00Z"


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "repo").mkdir()
    path = tmp_path / "skyfeast.yaml"
    path.write_text(CONFIG)
    return str(path)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


def test_one_window_format(capsys, cfg):
    assert window_text("2026-03-02T05:00:00+00:00", datetime(2026, 3, 2, 6, tzinfo=timezone.utc)) == WINDOW
    _cli(capsys, "trigger", "-c", cfg, "hourly", "--window", WINDOW)
    code, out, _ = _cli(capsys, "runs", "-c", cfg)
    assert code == 0 and WINDOW in out
    assert "→" not in out and "+00:00" not in out


def test_yes_no_not_python_literals():
    assert (yes_no(True), yes_no(False), yes_no(None)) == ("yes", "no", "-")


def test_global_flags_after_the_subcommand(capsys, cfg):
    assert _cli(capsys, "runs", "-c", cfg, "-v")[0] == 0
    assert _cli(capsys, "runs", "-c", cfg, "--debug")[0] == 0
    assert _cli(capsys, "-v", "runs", "-c", cfg)[0] == 0


def test_an_unknown_job_is_a_usage_error(capsys, cfg):
    code, _, err = _cli(capsys, "runs", "-c", cfg, "--job", "nope")
    assert code == 2 and "unknown job 'nope'" in err and "hourly" in err


def test_trigger_warns_when_no_daemon_leads(capsys, cfg):
    code, out, err = _cli(capsys, "trigger", "-c", cfg, "hourly", "--window", WINDOW)
    assert code == 0 and "no daemon leads this ledger" in err and "queued" in out


def test_wait_that_runs_out_says_so_with_its_own_exit_code(capsys, cfg):
    code, _, err = _cli(capsys, "trigger", "-c", cfg, "hourly", "--window", WINDOW, "--wait", "0.6")
    assert code == EXIT_WAIT_TIMED_OUT == 3
    assert "--wait: run 1 is still queued after 0.6s" in err


def test_a_wait_for_a_triggered_run_says_what_it_waits_for(capsys, cfg, caplog, monkeypatch):
    """``--wait`` past the notice mark (0.2 s here, 2 s in use) says once which run it waits for and how long
    at most, as every other long wait does."""
    import logging

    from skyfeast.adapters import waiting

    monkeypatch.setattr(waiting, "NOTICE_AFTER", 0.2)
    with caplog.at_level(logging.INFO, "skyfeast.wait"):
        code, _, _ = _cli(capsys, "trigger", "-c", cfg, "hourly", "--window", WINDOW, "--wait", "1")
    assert code == EXIT_WAIT_TIMED_OUT
    notices = [r.getMessage() for r in caplog.records if r.name == "skyfeast.wait"]
    assert len(notices) == 1 and notices[0].startswith("waiting for run 1 (hourly 2026-") \
        and notices[0].endswith("to finish (0 s so far, gives up after 1 s)"), notices


def test_a_backfill_of_thousands_of_windows_asks_for_yes(capsys, cfg):
    code, _, err = _cli(capsys, "backfill", "-c", cfg, "hourly", "--start", "2016-01-01", "--end", "2026-01-01")
    assert code == 2 and "spans more than 1,000 windows" in err and "--yes" in err


@pytest.mark.parametrize("argv, message", [
    (["trigger", "hourly", "--wait", "inf"], "argument --wait: inf is out of range: 0 to 604800 seconds"),
    (["trigger", "hourly", "--wait", "1e400"], "argument --wait: 1e400 is out of range"),
    (["trigger", "hourly", "--wait", "nan"], "argument --wait: nan is out of range"),
    (["trigger", "hourly", "--wait", "-1"], "argument --wait: -1 is out of range"),
    (["trigger", "hourly", "--wait", "soon"], "argument --wait: 'soon' is not a number of seconds"),
    (["cancel", "99999999999999999999999"], "argument run_id: 99999999999999999999999 is out of range: 1 to "
                                            "2,147,483,647"),
    (["cancel", str(2**31)], f"argument run_id: {2**31} is out of range"),  # past PostgreSQL's INTEGER
    (["cancel", "0"], "argument run_id: 0 is out of range"),
    (["cancel", "1.5"], "argument run_id: '1.5' is not a whole number"),
    (["daemon", "--grace", "nan"], "argument --grace: nan is out of range: 0 to 86400 seconds"),
    (["runs", "--limit", "99999999999999999999999"], "argument --limit: 99999999999999999999999 is out of range: "
                                                     "1 to 1,000,000"),
    (["runs", "--limit", "-1"], "argument --limit: -1 is out of range"),
    (["status", "--limit", "0"], "argument --limit: 0 is out of range"),
    (["models", "show", "churn", "--version", "99999999999999999999999"],
     "argument --version: 99999999999999999999999 is out of range: 1 to 2,147,483,647"),
    (["models", "promote", "churn", "-3"], "argument version: -3 is out of range"),
])
def test_numbers_the_ledger_or_a_wait_cannot_take_are_usage_errors(capsys, cfg, argv, message):
    """NaN, infinities, negatives and integers past 64 bits end in argparse's exit 2 naming the argument, not
    in a wait that never ends or an internal error from the database driver."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "-c", cfg])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err, err


@pytest.mark.parametrize("classes, status", [
    (["data"], 2), (["data", "config"], 2),  # every failure the input's: bad input's status
    (["data", "infrastructure"], 1), (["user_code"], 1), (["timeout"], 1), (["data", "cancelled"], 1),
    (["data", "partial"], 1),  # a group run that wrote some of its models: their own errors
])
def test_run_exits_2_when_every_failed_run_failed_on_its_input(capsys, classes, status):
    """The standard gives bad data exit 2: a window whose file misses a column fails as ``data``. Any
    failure that trying again may mend (infrastructure, user code, a timeout, a cancellation) makes it 1."""
    import argparse

    from skyfeast.scheduler.cli.run import _report
    from skyfeast.scheduler.run.runner import Outcome
    from skyfeast.scheduler.timing.windows import Window

    at = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    window = Window(datetime(2026, 3, 2, 11, tzinfo=timezone.utc), at)
    outcomes = [Outcome(f"j{i}", window, c if c in ("cancelled", "partial") else "failed",
                        failure_class=None if c == "partial" else c) for i, c in enumerate(classes)]
    outcomes += [Outcome("ok", window, "succeeded"), Outcome("after", window, "upstream_failed")]
    assert _report(argparse.Namespace(json=True), at, outcomes, [], False) == status
    assert _report(argparse.Namespace(json=True), at, outcomes, [], True) == 130  # interrupted first
    capsys.readouterr()
