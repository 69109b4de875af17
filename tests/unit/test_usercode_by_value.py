"""Project-local transforms travel to workers by value: a process that cannot import the
project's modules (a remote Dask worker) still runs them."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

from skyfeast.scheduler.run.usercode import ByValue, import_callable


def test_project_function_is_pickled_by_value_and_runs_elsewhere(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mytransforms_byvalue.py").write_text(textwrap.dedent("""
        FACTOR = 7

        def helper(x):
            return x * FACTOR

        def transform(x):
            return helper(x) + 1
    """))
    fn = import_callable("mytransforms_byvalue:transform", project)
    assert isinstance(fn, ByValue) and fn(2) == 15
    # what Dask does first: plain pickle (protocol 5)
    blob = pickle.dumps({"user_fn": fn}, protocol=5)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import pickle, sys; d = pickle.loads(sys.stdin.buffer.read()); "
            "import importlib.util; assert importlib.util.find_spec('mytransforms_byvalue') is None; "
            "print(d['user_fn'](3))")
    out = subprocess.run([sys.executable, "-c", code], input=blob, cwd=elsewhere, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip() == "22"


def test_installed_functions_stay_references(tmp_path):
    fn = import_callable("json:dumps", tmp_path)
    assert not isinstance(fn, ByValue)


def test_same_module_name_in_two_projects_each_gets_its_own(tmp_path, monkeypatch):
    """One process, two configs whose user code is both ``transforms``: each config's functions
    come from its own directory, not from whichever project was imported first."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    one, two = tmp_path / "one", tmp_path / "two"
    for d, body in ((one, "def a(x):\n    return 'one'\n"), (two, "def b(x):\n    return 'two'\n")):
        d.mkdir()
        (d / "skyfeast_tf_twice.py").write_text(body)
    try:
        assert import_callable("skyfeast_tf_twice:a", one)(0) == "one"
        assert import_callable("skyfeast_tf_twice:b", two)(0) == "two"
        assert import_callable("skyfeast_tf_twice:a", one)(0) == "one"
    finally:
        sys.modules.pop("skyfeast_tf_twice", None)
