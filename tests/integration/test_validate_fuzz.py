"""``skyfeast validate`` against mutated quickstart configs (hypothesis): whatever the file holds,
validate ends within 5 s and 500 MB with exit 0 or 2 and never a traceback or an internal error,
and with exit 2 whenever the mutation made the config invalid.

Mutations: deleting keys (required ones make it invalid), swapping a value's type, huge numbers,
deep nesting, YAML aliases (a "billion laughs" bomb among them), and bytes that are not UTF-8.
Each example's expectation comes from the mutation, not from skyfeast.
"""

from __future__ import annotations

import contextlib
import io
import resource
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import make_project

pytestmark = pytest.mark.integration

REQUIRED = [("project",), ("feast",), ("providers",), ("providers", "aws", "cluster"), ("providers", "aws", "storage"),
            ("providers", "aws", "storage", "root"), ("jobs", 0, "name"), ("jobs", 0, "kind"), ("jobs", 0, "schedule"),
            ("jobs", 0, "source"), ("jobs", 0, "feature_view"), ("jobs", 0, "transform"), ("jobs", 1, "model"),
            ("jobs", 0, "schedule", "expr"), ("jobs", 0, "source", "path")]
OPTIONAL = [("providers", "aws", "cluster", "workers"), ("jobs", 0, "retries"), ("jobs", 0, "timeout"),
            ("jobs", 0, "source", "lookback"), ("jobs", 1, "retries"), ("jobs", 0, "providers")]
BOUNDED_INTS = [("providers", "aws", "cluster", "workers"), ("providers", "aws", "priority"), ("jobs", 0, "retries"),
                ("jobs", 1, "retries")]
STRING_FIELDS = [("project",), ("jobs", 0, "name"), ("jobs", 0, "feature_view"), ("jobs", 0, "transform"),
                 ("providers", "aws", "storage", "root"), ("jobs", 0, "source", "path")]
BOMB = "\n".join(["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] +
                 [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    project = tmp_path_factory.mktemp("fuzz") / "p"
    cfg = make_project(project, users=50, per_day=200, days=2)
    return project, yaml.safe_load(cfg.read_text())


def _get(data, path):
    for p in path[:-1]:
        data = data[p]
    return data, path[-1]


def _mutation():
    delete_required = st.sampled_from(REQUIRED).map(lambda p: ("delete", p, True))
    delete_optional = st.sampled_from(OPTIONAL).map(lambda p: ("delete", p, False))
    huge = st.tuples(st.sampled_from(BOUNDED_INTS), st.integers(7, 400)).map(lambda t: ("huge", t, True))
    swap = st.tuples(st.sampled_from(STRING_FIELDS + BOUNDED_INTS),
                     st.sampled_from([[1, 2], {"a": 1}, 3.5, True, None])).map(lambda t: ("swap", t, True))
    deep = st.tuples(st.sampled_from(STRING_FIELDS), st.integers(65, 5000)).map(lambda t: ("deep", t, True))
    bomb = st.just(("bomb", None, True))
    alias = st.just(("alias", None, False))  # a harmless alias: the same provider twice
    bad_bytes = st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=4).map(lambda b: b"\xff" + b)).map(
        lambda t: ("bytes", t, True))
    return st.one_of(delete_required, delete_optional, huge, swap, deep, bomb, alias, bad_bytes)


def _apply(data: dict, mutation) -> bytes:
    kind, arg, _ = mutation
    data = yaml.safe_load(yaml.safe_dump(data))  # a private copy
    if kind == "delete":
        parent, key = _get(data, arg)
        del parent[key]
    elif kind == "huge":
        path, digits = arg
        parent, key = _get(data, path)
        parent[key] = int("9" * digits)
    elif kind == "swap":
        path, value = arg
        parent, key = _get(data, path)
        if isinstance(parent[key], type(value)) and not isinstance(value, bool):
            value = [value]
        parent[key] = value
    elif kind == "deep":
        path, depth = arg
        parent, key = _get(data, path)
        marker = "__DEEP__"
        parent[key] = marker
        text = yaml.safe_dump(data, sort_keys=False, width=10**9)
        return text.replace(marker, "[" * depth + "1" + "]" * depth).encode()
    elif kind == "bomb":
        return (yaml.safe_dump(data, sort_keys=False) + BOMB + "\n").encode()
    elif kind == "alias":  # the same object twice: the dumper writes an anchor and an alias
        data["providers"]["gcp"]["cluster"] = data["providers"]["aws"]["cluster"]
        text = yaml.safe_dump(data, sort_keys=False)
        assert "&id" in text and "*id" in text
        return text.encode()
    text = yaml.safe_dump(data, sort_keys=False).encode()
    if kind == "bytes":
        at, junk = arg
        at = min(at, len(text))
        return text[:at] + junk + text[at:]
    return text


def _validate(path) -> tuple[int, str]:
    from skyfeast.scheduler.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", "-c", str(path)])
    return code, err.getvalue()


def test_the_unmutated_quickstart_is_valid(base):
    project, data = base
    path = project / "fuzz.yaml"
    path.write_bytes(yaml.safe_dump(data, sort_keys=False).encode())
    assert _validate(path) == (0, "")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(mutation=_mutation())
def test_mutated_configs_end_in_exit_0_or_2(base, mutation):
    project, data = base
    path = project / "fuzz.yaml"
    path.write_bytes(_apply(data, mutation))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    code, err = _validate(path)
    seconds = time.monotonic() - t0
    assert "Traceback" not in err and "internal error" not in err, (mutation, err)
    assert code in (0, 2), (mutation, code, err)
    if mutation[2]:
        assert code == 2, (mutation, err)
    if code == 2:
        assert err.startswith("skyfeast: error: ") and "fuzz.yaml" in err, (mutation, err)
    assert seconds < 5, (mutation, seconds)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 500 * 1024, mutation
