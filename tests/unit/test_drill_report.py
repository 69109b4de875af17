"""``skyfeast drill`` without ``--json`` prints a report for people, not a dict dump."""

from __future__ import annotations

from skyfeast.scheduler.cli.drill import report_text

UNFINISHED = {
    "provider": "aws", "mode": "hang", "fault": "SIGSTOP of scheduler pid 42", "job": "user_features",
    "window": {"start": "2026-03-02T11:00:00+00:00", "end": "2026-03-02T12:00:00+00:00"},
    "recorded_as": "drill:user_features", "run_id": 7, "published": False, "staged_parts_left_removed": 0,
    "detection_s": None, "first_task_on_new_provider_s": None, "completed": False, "completed_on": None,
    "error": "the run did not finish", "rows_written": None, "chunks": 2, "partitions": 8,
    "chunks_done_at_fault": 2, "chunks_by_provider": {}, "duplicate_windows": 0, "lost_windows": 0,
    "attempts": [{"provider": "aws", "outcome": None, "failure_class": None, "error": None}],
    "restore_s": None, "failback_s": None, "timeline_s": {}, "run_seconds": None, "run_blocked_until_restore": True,
    "slo": {"max_detection_s": {"limit": 10.0, "ok": False}, "max_first_task_s": {"limit": 40.0, "ok": False}},
    "ok": False,
}


def test_report_of_an_unfinished_drill_names_what_failed():
    text = report_text(UNFINISHED)
    lines = text.splitlines()
    assert lines[0] == "drill hang of aws: FAILED"
    assert "  detection    - after the fault  (SLO <= 10 s: BREACHED)" in lines
    assert any(ln.startswith("  run          NOT completed on - ") and "2/8 chunks (-)" in ln for ln in lines)
    assert "  attempts     1. aws unfinished" in lines
    assert any("blocked on the faulty provider" in ln for ln in lines)
    assert "  error        the run did not finish" in lines
    assert "drill:user_features" in text and "{" not in text


def test_a_multi_line_error_stays_on_its_attempt_line():
    rep = {**UNFINISHED, "attempts": [{"provider": "aws", "outcome": "failed", "failure_class": "infrastructure",
                                       "error": "lost the scheduler.\nPlease check your connection " + "x" * 300}]}
    line = next(ln for ln in report_text(rep).splitlines() if ln.startswith("  attempts"))
    assert "\n" not in line and line.endswith("...)") and "lost the scheduler. Please" in line
