"""``scheduler.yamlsrc``: line tracking, ``${ENV}`` expansion, duplicate keys, pydantic locations."""

from __future__ import annotations

import textwrap

import pytest

import skyfeast.scheduler.config  # noqa: F401  (registers the discriminator tags pydantic puts in locations)
from skyfeast.scheduler.config.yamlsrc import SourceMap, format_path, load_yaml
from skyfeast.scheduler.errors import ConfigError, Problem

VAR = "SKYFEAST_TEST_YAMLSRC_VAR"
OTHER = "SKYFEAST_TEST_YAMLSRC_OTHER"


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.delenv(OTHER, raising=False)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as ei:
        load_yaml(text, "f.yaml")
    return ei.value.problems


# --------------------------------------------------------------------------- line mapping
NESTED = y("""
    project: p
    providers:
      aws:
        cluster:
          type: local
          workers: 2
        storage: {type: local, root: data}
    jobs:
      - name: a
        schedule:
          type: cron
          expr: "0 * * * *"
        providers: [aws, gcp]
      -
        name: b
        tags:
          - x
          - y
""")


@pytest.mark.parametrize(
    "path, line",
    [
        ((), 1),
        (("project",), 1),
        (("providers",), 2),
        (("providers", "aws"), 3),
        (("providers", "aws", "cluster"), 4),
        (("providers", "aws", "cluster", "type"), 5),
        (("providers", "aws", "cluster", "workers"), 6),
        (("providers", "aws", "storage"), 7),
        (("providers", "aws", "storage", "root"), 7),
        (("jobs",), 8),
        (("jobs", 0), 9),
        (("jobs", 0, "name"), 9),
        (("jobs", 0, "schedule"), 10),
        (("jobs", 0, "schedule", "expr"), 12),
        (("jobs", 0, "providers"), 13),
        (("jobs", 0, "providers", 1), 13),
        (("jobs", 1), 15),  # the item starts at its first key, not at the bare "-"
        (("jobs", 1, "name"), 15),
        (("jobs", 1, "tags", 0), 17),
        (("jobs", 1, "tags", 1), 18),
    ],
)
def test_line_of_nested_keys_and_list_items(path, line):
    data, smap = load_yaml(NESTED, "f.yaml")
    assert smap.lines[path] == line
    assert smap.line_for(path) == (line, format_path(path))


def test_data_is_plain():
    data, _ = load_yaml(NESTED, "f.yaml")
    assert data["providers"]["aws"]["cluster"] == {"type": "local", "workers": 2}
    assert data["jobs"][1]["tags"] == ["x", "y"]


def test_format_path():
    assert format_path(()) == ""
    assert format_path(("jobs", 0, "schedule", "expr")) == "jobs[0].schedule.expr"
    assert format_path(("providers", "aws", "cluster")) == "providers.aws.cluster"
    assert format_path(("jobs", 2, "providers", 1)) == "jobs[2].providers[1]"


def test_missing_key_is_reported_under_its_parent():
    _, smap = load_yaml(NESTED, "f.yaml")
    assert smap.line_for(("jobs", 0, "schedule", "timezone")) == (10, "jobs[0].schedule.timezone")
    assert smap.line_for(("feast",)) == (1, "feast")


def test_problem_carries_file_line_and_path():
    _, smap = load_yaml(NESTED, "f.yaml")
    p = smap.problem(("jobs", 0, "schedule", "expr"), "bad cron")
    assert p == Problem("f.yaml", 12, "jobs[0].schedule.expr", "bad cron")
    assert str(p) == "f.yaml:12: jobs[0].schedule.expr: bad cron"


# --------------------------------------------------------------------------- env expansion
def test_env_var_is_expanded(monkeypatch):
    monkeypatch.setenv(VAR, "/data")
    data, _ = load_yaml(f"root: ${{{VAR}}}/x\nlist: [a, '${{{VAR}}}']\n", "f.yaml")
    assert data == {"root": "/data/x", "list": ["a", "/data"]}


def test_env_default_used_only_when_unset(monkeypatch):
    text = f"a: ${{{VAR}:-fallback}}\nb: pre-${{{VAR}:-}}-post\n"
    data, _ = load_yaml(text, "f.yaml")
    assert data == {"a": "fallback", "b": "pre--post"}
    monkeypatch.setenv(VAR, "set")
    data, _ = load_yaml(text, "f.yaml")
    assert data == {"a": "set", "b": "pre-set-post"}


def test_several_vars_in_one_string(monkeypatch):
    monkeypatch.setenv(VAR, "h")
    monkeypatch.setenv(OTHER, "8786")
    data, _ = load_yaml(f"address: tcp://${{{VAR}}}:${{{OTHER}}}\n", "f.yaml")
    assert data == {"address": "tcp://h:8786"}


def test_non_strings_and_plain_dollars_are_untouched():
    data, _ = load_yaml("n: 3\nb: true\ns: $HOME and ${not a var}\n", "f.yaml")
    assert data == {"n": 3, "b": True, "s": "$HOME and ${not a var}"}


def test_undefined_env_var_is_a_located_problem():
    text = y(f"""
        a: 1
        jobs:
          - name: x
            root: ${{{VAR}}}/data
          - name: y
            root: ${{{OTHER}:-ok}}
    """)
    probs = problems_of(text)
    assert probs == [Problem("f.yaml", 4, "jobs[0].root", f"environment variable ${{{VAR}}} is not set")]


def test_every_undefined_env_var_is_reported():
    probs = problems_of(f"a: ${{{VAR}}}\nb:\n  - ${{{OTHER}}}\n")
    assert [(p.line, p.path) for p in probs] == [(1, "a"), (3, "b[0]")]


# --------------------------------------------------------------------------- duplicate keys and bad documents
def test_duplicate_keys_are_reported_at_the_second_occurrence():
    text = y("""
        project: p
        jobs:
          - name: a
            retries: 1
            retries: 2
        project: q
    """)
    probs = problems_of(text)
    assert [(p.line, p.path, p.message) for p in probs] == [
        (5, "jobs[0].retries", "duplicate key"),
        (6, "project", "duplicate key"),
    ]


def test_duplicate_key_in_flow_mapping():
    probs = problems_of("cluster: {type: local, type: address}\n")
    assert [(p.line, p.path) for p in probs] == [(1, "cluster.type")]


def test_same_key_in_different_mappings_is_fine():
    data, _ = load_yaml("a: {x: 1}\nb: {x: 2}\n", "f.yaml")
    assert data == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("text", ["", "   \n\n", "\t\n"])
def test_empty_file(text):
    [p] = problems_of(text)
    assert p.line is None and p.path == "" and "file is empty" in p.message


def test_comment_only_file():
    [p] = problems_of("# nothing\n")
    assert p.line is None and "no YAML document" in p.message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("hello\n", "str"), ("42\n", "int")])
def test_top_level_must_be_mapping(text, kind):
    [p] = problems_of(text)
    assert (p.line, p.message) == (1, f"top level must be a mapping, got {kind}")


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a: 1\nb: c: d\n", 2, "mapping values are not allowed here"),
        ("a: 1\nb: [1, 2\nc: 3\n", 3, "expected ',' or ']'"),
        ("a: 1\n b: 2\n", 2, "mapping values are not allowed here"),
        ("a: 'unterminated\n", 2, "found unexpected end of stream"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("a: *nope\n", 1, "found undefined alias 'nope'"),
    ],
)
def test_invalid_yaml_has_a_line(text, line, fragment):
    [p] = problems_of(text)
    assert p.line == line
    assert p.message.startswith("invalid YAML: ")
    assert fragment in p.message


def test_recursive_alias_is_a_problem_not_a_crash():
    [p] = problems_of("a: 1\nb: &x\n  - 1\n  - *x\n")
    assert p.path == "b[1]" and "recursive YAML alias" in p.message


def test_non_recursive_aliases_are_fine():
    data, smap = load_yaml("base: &b {type: local, workers: 2}\nother: *b\n", "f.yaml")
    assert data["other"] == {"type": "local", "workers": 2}
    # inside an alias's content, the line where the alias is used
    assert smap.line_for(("other", "workers")) == (2, "other.workers")
    assert smap.line_for(("base", "workers")) == (1, "base.workers")


# --------------------------------------------------------------------------- pydantic locations
TAGGED = y("""
    providers:
      local:
        cluster:
          type: local
          workers: 0
        storage: {type: local}
    jobs:
      - name: a
        kind: feature
        schedule:
          type: cron
          expr: "0 * * *"
        source:
          type: job
          job: b
      - name: b
        kind: model
        source:
          type: job
        model:
          artifact: m.joblib
          scorer: mod:fn
        timeout: 0s
""")


@pytest.mark.parametrize(
    "loc, line, path",
    [
        # discriminator tags that are not keys of the document are skipped
        (("jobs", 0, "feature", "schedule", "cron", "expr"), 12, "jobs[0].schedule.expr"),
        (("providers", "local", "cluster", "local", "workers"), 5, "providers.local.cluster.workers"),
        # validator tags ("function-after[...]", "[key]") are skipped wherever they occur
        (("jobs", 0, "feature", "schedule", "function-after[_valid_cron(), str]", "expr"), 12, "jobs[0].schedule.expr"),
        (("providers", "[key]"), 1, "providers"),
        # a tag equal to a real key: "model" in a kind: model job, "job" in a type: job source
        (("jobs", 1, "model", "timeout"), 23, "jobs[1].timeout"),
        (("jobs", 1, "model", "model", "scorer"), 22, "jobs[1].model.scorer"),
        (("jobs", 0, "feature", "source", "job", "job"), 15, "jobs[0].source.job"),
        # ... and a missing key named like the tag is still named
        (("jobs", 1, "model", "source", "job", "job"), 18, "jobs[1].source.job"),
        (("jobs", 1, "model", "feature_view"), 16, "jobs[1].feature_view"),
        # a provider named like a tag, with a missing key
        (("providers", "local", "storage", "local", "root"), 6, "providers.local.storage.root"),
        (("providers", "local", "priority"), 2, "providers.local.priority"),
    ],
)
def test_pydantic_locations_skip_tags(loc, line, path):
    _, smap = load_yaml(TAGGED, "f.yaml")
    assert smap.line_for(loc) == (line, path)


@pytest.mark.parametrize(
    "loc, line, path",
    [
        # locations built by semantic checks carry no tags: real keys that look like tags stay
        (("jobs", 1, "model", "scorer"), 22, "jobs[1].model.scorer"),
        (("jobs", 0, "source", "job"), 15, "jobs[0].source.job"),
        (("providers", "local", "cluster", "workers"), 5, "providers.local.cluster.workers"),
    ],
)
def test_check_locations_keep_real_keys_named_like_tags(loc, line, path):
    _, smap = load_yaml(TAGGED, "f.yaml")
    assert smap.line_for(loc) == (line, path)


def test_line_for_on_a_hand_built_map():
    smap = SourceMap("f.yaml", {(): 1, ("jobs",): 3, ("jobs", 0): 4, ("jobs", 0, "schedule"): 6,
                                ("jobs", 0, "schedule", "expr"): 7})
    assert smap.line_for(("jobs", 0, "feature", "schedule", "cron", "expr")) == (7, "jobs[0].schedule.expr")
    assert smap.line_for(("jobs", 0, "interval", "schedule", "every")) == (6, "jobs[0].schedule.every")
    assert smap.line_for(()) == (1, "")


def test_pydantic_errors_map_to_lines():
    """End to end through pydantic: each error of a real model lands on its key."""
    from pydantic import ValidationError

    from skyfeast.scheduler.config import Config

    data, smap = load_yaml(TAGGED, "f.yaml")
    with pytest.raises(ValidationError) as ei:
        Config.model_validate(data)
    got = {smap.line_for(e["loc"]) for e in ei.value.errors()}
    assert (5, "providers.local.cluster.workers") in got
    assert (6, "providers.local.storage.root") in got
    assert (12, "jobs[0].schedule.expr") in got
    assert (18, "jobs[1].source.job") in got
    assert (23, "jobs[1].timeout") in got
    assert (1, "project") in got
