"""Issue 13's tables on the quickstart: a window that fails leaves what Feast readers see (vanilla
``get_online_features`` and Feast's offline source) exactly as it was; bad data is a ``data`` failure
naming the file and column, not retried and not failed over; an open window writes nothing.

One project serves the module: the window [10:00, 11:00) succeeds first, its online values and
offline files are the baseline, and each case breaks the input of [11:00, 12:00), runs it, checks
the baseline is intact, and restores the input.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import AT, make_project, skyfeast, skyfeast_json

pytestmark = pytest.mark.integration

BEFORE = "2026-03-02T11:30:00Z"  # the window [10:00, 11:00): the baseline
DAY = "events-2026-03-01.parquet"  # a day inside the 7-day lookback of [11:00, 12:00)
FEATURES = ["events_1h", "amount_sum_24h", "events_7d", "purchases_24h"]


def _online(project) -> dict:
    from feast import FeatureStore

    users = [{"user_id": int(u) * 7919 % 1_000_003} for u in range(1, 301)]  # seed.py's ids
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    return store.get_online_features(features=[f"user_features:{f}" for f in FEATURES],
                                     entity_rows=users).to_dict()


def _offline(project) -> dict[str, str]:
    root = project / "data" / "aws" / "offline" / "user_features"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*"))}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    project = tmp_path_factory.mktemp("safety") / "p"
    cfg = make_project(project, users=300, per_day=2000)
    code, report = skyfeast_json("run", "-c", str(cfg), "--job", "user_features", "--at", BEFORE, cwd=project)
    assert code == 0, report
    events = project / "data" / "aws" / "events"
    saved = project.parent / "events-saved"
    shutil.copytree(events, saved)
    state = {"project": project, "cfg": cfg, "online": _online(project), "offline": _offline(project)}
    assert state["offline"] and any(v is not None for v in state["online"]["events_7d"])
    yield state


@pytest.fixture
def project(baseline):
    yield baseline
    events = baseline["project"] / "data" / "aws" / "events"
    shutil.rmtree(events)
    shutil.copytree(baseline["project"].parent / "events-saved", events)
    (baseline["project"] / "transforms_broken.py").unlink(missing_ok=True)


def _break_day(project, change) -> None:
    path = project["project"] / "data" / "aws" / "events" / DAY
    df = change(pd.read_parquet(path))
    df.to_parquet(path, index=False)


def _run(project, *extra) -> tuple[int, dict]:
    return skyfeast_json("run", "-c", str(project["cfg"]), "--job", "user_features", "--at", AT, *extra,
                         cwd=project["project"])


def _run_with_transform(project, body: str) -> tuple[int, dict]:
    """Run the window with ``user_features`` replaced by a wrapper of the real one whose body is ``body``."""
    (project["project"] / "transforms_broken.py").write_text(
        "from transforms import user_features as real\n\n\ndef user_features(events, window):\n" + body)
    cfg = project["cfg"]
    text = cfg.read_text()
    cfg.write_text(text.replace("transforms:user_features", "transforms_broken:user_features"))
    try:
        return _run(project)
    finally:
        cfg.write_text(text)


def _assert_readers_see_the_baseline(project) -> None:
    assert _online(project["project"]) == project["online"], "a failed window changed vanilla Feast reads"
    assert _offline(project["project"]) == project["offline"], "a failed window changed Feast's offline source"


def _attempts(project) -> list[dict]:
    """Every attempt of the window's run so far (a failed run claimed again keeps its log)."""
    code, runs = skyfeast_json("runs", "-c", str(project["cfg"]), "--job", "user_features", cwd=project["project"])
    latest = max(runs["runs"], key=lambda r: r["id"])
    return latest["attempt_log"]


def test_a_file_missing_a_column_fails_the_window_naming_file_and_column(project):
    _break_day(project, lambda df: df.drop(columns=["amount"]))
    code, report = _run(project)
    (run,) = report["runs"]
    assert code == 2 and run["status"] == "failed" and run["failure_class"] == "data"
    assert DAY in run["error"] and "'amount'" in run["error"]
    assert (run["attempts"], run["provider"]) == (1, "aws"), "bad data is neither retried nor failed over"
    _assert_readers_see_the_baseline(project)


def test_null_keys_are_counted_and_nothing_is_written(project):
    def nulls(df):
        df["user_id"] = df["user_id"].astype("Int64")
        df.loc[df.index[::10], "user_id"] = pd.NA
        return df

    _break_day(project, nulls)
    n = int(pd.read_parquet(project["project"] / "data" / "aws" / "events" / DAY)["user_id"].isna().sum())
    code, report = _run(project)
    (run,) = report["runs"]
    assert code == 2 and run["failure_class"] == "data"
    assert f"{n:,} null user_id values" in run["error"] and DAY in run["error"]
    _assert_readers_see_the_baseline(project)


def test_a_missing_key_column_is_not_retried(project):
    _break_day(project, lambda df: df.drop(columns=["user_id"]))
    code, report = _run(project)
    (run,) = report["runs"]
    assert code == 2 and run["failure_class"] == "data" and "'user_id'" in run["error"]
    assert run["attempts"] == 1
    _assert_readers_see_the_baseline(project)


def test_a_transform_raising_in_one_partition_writes_no_partition(project):
    code, report = _run_with_transform(project, "    if (events['user_id'] == 7919).any():  # seed.py's first user\n"
                                                "        raise ValueError('user 7919 is cursed')\n"
                                                "    return real(events, window)\n")
    (run,) = report["runs"]
    assert code == 1 and run["failure_class"] == "user_code" and "user 7919 is cursed" in run["error"]
    # the same error on the same chunk twice is deterministic: not retried a third time (retries: 2)
    assert run["attempts"] == 2
    _assert_readers_see_the_baseline(project)


def test_a_window_that_has_not_closed_writes_nothing(project):
    at = (datetime.now(timezone.utc) + timedelta(hours=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = _attempts(project)
    proc = skyfeast("run", "-c", str(project["cfg"]), "--job", "user_features", "--at", at, cwd=project["project"])
    assert proc.returncode == 2 and "ends after now" in proc.stderr and "Traceback" not in proc.stderr
    assert _attempts(project) == before
    _assert_readers_see_the_baseline(project)


def test_a_truncated_file_is_a_data_failure_without_failover(project):
    path = project["project"] / "data" / "aws" / "events" / DAY
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    code, report = _run(project)
    (run,) = report["runs"]
    assert code == 2 and run["failure_class"] == "data" and DAY in run["error"]
    assert (run["attempts"], run["provider"]) == (1, "aws")
    _assert_readers_see_the_baseline(project)


def test_timestamps_in_the_year_2300_are_a_data_failure_naming_the_file(project):
    import pyarrow as pa

    path = project["project"] / "data" / "aws" / "events" / DAY
    table = pq.read_table(path)
    i = table.schema.get_field_index("event_timestamp")
    col = table.column(i).cast(pa.timestamp("us", tz=table.schema.field(i).type.tz))
    values = col.to_pylist()
    values[0] = datetime(2300, 1, 1, tzinfo=timezone.utc)
    pq.write_table(table.set_column(i, "event_timestamp", pa.array(values, col.type)), path)
    code, report = _run(project)
    (run,) = report["runs"]
    assert code == 2 and run["failure_class"] == "data" and DAY in run["error"] and "2300-01-01" in run["error"]
    assert (run["attempts"], run["provider"]) == (1, "aws")
    _assert_readers_see_the_baseline(project)


def test_a_string_in_an_integer_feature_names_the_column(project):
    code, report = _run_with_transform(project, "    out = real(events, window)\n"
                                                "    return out.assign(events_1h=out['events_1h'].astype(str) + 'x')\n")
    (run,) = report["runs"]
    assert code == 1 and run["failure_class"] == "user_code" and "'events_1h'" in run["error"]
    assert run["provider"] == "aws" and run["attempts"] <= 2  # retried at most once: the error repeats
    _assert_readers_see_the_baseline(project)


@pytest.mark.parametrize("partitions", [None, 4], ids=["one-task window", "shuffled window"])
def test_an_online_write_that_fails_leaves_no_offline_part(project, partitions):
    """Publishing writes every chunk online before any offline part: when the online store refuses
    the rows (here its table is gone), Feast's offline source gains nothing of the failed window."""
    import sqlite3

    db = project["project"] / "data" / "online.db"
    saved = db.with_name("online-saved.db")
    shutil.copy(db, saved)
    cfg = project["cfg"]
    text = cfg.read_text()
    if partitions:
        cfg.write_text(text.replace("transform: transforms:user_features",
                                    f"transform: transforms:user_features\n    partitions: {partitions}"))
        assert cfg.read_text() != text
    try:
        with sqlite3.connect(db) as conn:
            (table,) = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                        if n.endswith("_user_features")]
            conn.execute(f'DROP TABLE "{table}"')
        code, report = _run(project)
        assert _offline(project["project"]) == project["offline"], "a failed online write left an offline part"
    finally:
        cfg.write_text(text)
        shutil.move(saved, db)
    (run,) = report["runs"]
    assert code == 2 and run["status"] == "failed" and table in run["error"], run  # not applied: the input
    _assert_readers_see_the_baseline(project)


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("root: data/aws", "root: data/aws/events/" + DAY), "is a file, not a directory"),
    (lambda t: t.replace('path: "events/events-{date}.parquet"', 'path: "../../../../etc/passwd"'),
     "must be relative to the provider's storage root"),
])
def test_setup_errors_are_config_errors_before_anything_runs(project, edit, message):
    cfg = project["cfg"]
    text = cfg.read_text()
    cfg.write_text(edit(text))
    try:
        proc = skyfeast("run", "-c", str(cfg), "--job", "user_features", "--at", AT, cwd=project["project"])
    finally:
        cfg.write_text(text)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    _assert_readers_see_the_baseline(project)


def test_the_baseline_window_still_reads_back(baseline):
    """After all the failures, the baseline is still what Feast serves, and the next good run works."""
    assert pq.read_schema(next((baseline["project"] / "data" / "aws" / "events").glob("*.parquet")))
    code, report = skyfeast_json("run", "-c", str(baseline["cfg"]), "--job", "user_features", "--at", AT,
                                 cwd=baseline["project"])
    assert code == 0 and report["runs"][0]["status"] == "succeeded"
    assert _online(baseline["project"]) != baseline["online"]  # the new window is published
