"""Hostile or broken configs end in one readable message and exit 2, quickly and in little memory:
alias bombs, deep nesting, huge files and numbers, unsupported ledgers, roots that are files."""

from __future__ import annotations

import resource
import time

import pytest

from skyfeast.scheduler.cli import main
from skyfeast.scheduler.config import checks

BASE = """project: p
feast: {{repo: repo}}
{state}providers:
  aws:
    priority: {priority}
    cluster: {{type: local, memory_limit: {memory}}}
    storage: {{type: local, root: {root}}}
jobs:
  - name: j
    kind: feature
    schedule: {{type: interval, every: {every}}}
    source: {{type: parquet, path: "events/*.parquet", timestamp_field: ts}}
    transform: "t:f"
    feature_view: fv
"""


def _config(tmp_path, *, state="", priority="1", memory="2GiB", root="data", every="1h", extra=""):
    (tmp_path / "repo").mkdir(exist_ok=True)
    path = tmp_path / "skyfeast.yaml"
    path.write_text(BASE.format(state=state, priority=priority, memory=memory, root=root, every=every) + extra)
    return path


def _validate(path, capsys) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(["validate", "-c", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return code, err, time.monotonic() - t0


def test_alias_bomb_is_refused_at_once(tmp_path, capsys):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9^10 nodes
    path = _config(tmp_path, extra="\n".join(lines) + "\n")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err, seconds = _validate(path, capsys)
    assert code == 2 and "expands to more than 2,000,000 nodes" in err and f"{path}:" in err
    assert seconds < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 * 1024  # KiB


@pytest.mark.parametrize("nested", ["[" * 20_000 + "]" * 20_000, "{a: " * 20_000 + "1" + "}" * 20_000,
                                    "[" * 70 + "]" * 70])
def test_deep_nesting_names_the_limit(tmp_path, capsys, nested):
    code, err, seconds = _validate(_config(tmp_path, extra=f"x: {nested}\n"), capsys)
    assert code == 2 and "nesting is deeper than 64 levels" in err
    assert seconds < 5


def test_a_huge_file_is_refused_before_parsing(tmp_path, capsys):
    path = _config(tmp_path, extra="# " + "x" * (17 * 1024 * 1024) + "\n")
    code, err, seconds = _validate(path, capsys)
    assert code == 2 and "larger than 16 MiB" in err and seconds < 5


@pytest.mark.parametrize("field,value,message", [
    ("every", "99999999999w", "duration must be at most 3660 days"),
    ("every", ".inf", "duration must be at most 3660 days"),
    ("priority", "9" * 400, "less than or equal to 1000000"),
    ("memory", "lots", "'lots' is not a memory size"),
    ("memory", "10MB", "must be between 64MiB and 16TiB"),
])
def test_out_of_range_numbers(tmp_path, capsys, field, value, message):
    code, err, _ = _validate(_config(tmp_path, **{field: value}), capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("state,message", [
    ("mysql://u@db/skyfeast", "unsupported ledger database 'mysql'"),
    ("postgresql+psycopg2://u@db/skyfeast", "driver 'psycopg2' is not supported"),
    ("missing-dir/state.db", "does not exist; create it first"),
])
def test_state_urls_are_checked(tmp_path, capsys, state, message):
    code, err, _ = _validate(_config(tmp_path, state=f"state: {state}\n"), capsys)
    assert code == 2 and "state:" in err and message in err, err


def test_a_missing_postgres_driver_names_the_extra(tmp_path, capsys, monkeypatch):
    real = checks._importable
    monkeypatch.setattr(checks, "_importable", lambda module: module != "psycopg" and real(module))
    code, err, _ = _validate(_config(tmp_path, state="state: postgresql+psycopg://u@db/x\n"), capsys)
    assert code == 2 and "pip install 'skyfeast[postgres]'" in err


def test_a_storage_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "data").write_text("not a directory")
    code, err, _ = _validate(_config(tmp_path), capsys)
    assert code == 2 and "providers.aws.storage.root" in err and "is a file, not a directory" in err


def test_a_daemon_can_drop_the_line_map_and_later_problems_still_name_file_and_key(tmp_path):
    """The daemon loads with keep_source_map=False (the map holds ~40 MB at 10,000 jobs)."""
    from skyfeast.scheduler.config import load_config
    from skyfeast.scheduler.config.yamlsrc import SourceMap

    path = _config(tmp_path)
    kept = load_config(path, check_imports=False, check_feast=False)
    assert kept.source_map is not None and kept.source_map.problem(("jobs", 0, "transform"), "x").line == 13
    dropped = load_config(path, check_imports=False, check_feast=False, keep_source_map=False)
    assert dropped.source_map is None and dropped.jobs == kept.jobs
    problem = SourceMap(dropped.file).problem(("jobs", 0, "transform"), "x")
    assert (problem.file, problem.line, problem.message) == (str(path), None, "x") and "transform" in problem.path
