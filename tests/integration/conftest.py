"""Fixtures that build a real quickstart project (events, Feast repo, config) in a temp dir."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

QUICKSTART = ROOT / "examples" / "quickstart"
BIN = Path(sys.executable).parent
END = "2026-03-02T12:00:00Z"  # data ends here; the hourly window [11:00, 12:00) is "current" at 12:30
AT = "2026-03-02T12:30:00Z"


def skyfeast(*args: str, cwd: Path, timeout: float = 300, check: bool = False, env: dict | None = None):
    """Run the installed ``skyfeast`` console script; returns CompletedProcess (text)."""
    proc = subprocess.run([str(BIN / "skyfeast"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"skyfeast {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def skyfeast_inprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``skyfeast ARGS`` run as ``skyfeast.scheduler.cli.main(ARGS)`` in this process, in ``cwd``.

    For tests of argument and config handling only (no clusters, no daemons): it saves a Python start
    and the Feast import (5-7 s each on a loaded host).  Returns a CompletedProcess like ``skyfeast``;
    an exception that escapes ``main`` is printed to ``stderr`` as a traceback with exit status 1, as
    the interpreter would.  Logger levels that ``main`` sets are restored afterwards.
    """
    import logging
    import traceback

    import distributed  # noqa: F401  (configures its loggers on import: before the snapshot below)

    from skyfeast.scheduler.cli import main

    def loggers() -> list[logging.Logger]:
        return [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger))]

    levels = {lg.name: lg.level for lg in loggers()}
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    err.write(f"{exc.code}\n")
            except Exception:  # noqa: BLE001 - reported as the interpreter would
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(old)
        for lg in loggers():  # loggers made during main() keep their default (NOTSET)
            lg.setLevel(levels.get(lg.name, logging.NOTSET))
    return subprocess.CompletedProcess(["skyfeast", *args], code, out.getvalue(), err.getvalue())


def skyfeast_json(*args: str, cwd: Path, **kw) -> tuple[int, dict]:
    proc = skyfeast(*args, "--json", cwd=cwd, **kw)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


class Exited:
    """What :func:`watch_exit` saw of a command: its exit status, its ``--json`` report, the seconds
    from the report being out (and from ``mark`` first showing on stderr) to the process's exit,
    the processes it started that outlived it (zombies aside, a second after the exit), how many it
    started, and its stderr."""

    def __init__(self, returncode: int, report: dict, result_to_exit_s: float, mark_to_exit_s: float | None,
                 outlived: list[int], started: int, stderr: str):
        self.returncode, self.report, self.result_to_exit_s = returncode, report, result_to_exit_s
        self.mark_to_exit_s, self.outlived, self.started, self.stderr = mark_to_exit_s, outlived, started, stderr


def watch_exit(args: list[str], cwd: Path, stderr_path: Path, timeout: float = 240, mark: str | None = None) -> Exited:
    """Run a ``skyfeast ... --json`` command, noting when its report is complete on stdout, when
    ``mark`` first shows on its stderr, when the process ends, and every process it started
    meanwhile (its local clusters)."""
    import selectors
    import time

    import psutil

    err = open(stderr_path, "w")
    proc = subprocess.Popen([str(BIN / "skyfeast"), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
    me = psutil.Process(proc.pid)
    seen: set[int] = set()
    text, report, t_result, t_mark = "", None, None, None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if report is None:
            for _ in sel.select(timeout=0.05):
                text += proc.stdout.read() or ""
            try:
                report, t_result = json.loads(text), time.monotonic()
            except ValueError:
                pass
        else:
            time.sleep(0.01)
        if mark is not None and t_mark is None and mark in stderr_path.read_text():
            t_mark = time.monotonic()
        try:
            seen.update(p.pid for p in me.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    t_exit = time.monotonic()
    if report is None:
        report, t_result = json.loads(text + (proc.stdout.read() or "")), t_exit
    time.sleep(1.0)
    outlived = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    err.close()
    mark_to_exit = None if t_mark is None else t_exit - t_mark
    return Exited(proc.returncode, report, t_exit - t_result, mark_to_exit, outlived, len(seen), stderr_path.read_text())


# ---------------------------------------------------------------- quickstart projects
#
# ``feast apply`` (a subprocess, 10-20 s on a loaded 2-core host) gives the same registry and online
# tables for every project, since the quickstart's Feast definitions do not depend on the events.  So
# it runs once per session, into an "applied" template; each set of seed arguments is seeded once,
# into a copy of that; and every ``make_project`` copies the seeded template.  Paths in
# skyfeast.yaml and feature_store.yaml are relative, but Feast's registry records the online store's
# absolute path (its infra objects, used by the next ``feast apply`` to tear down what changed):
# ``_copy_project`` points that at the copy, so no project can touch the template's (or another
# project's) online store.

_TEMPLATE_ROOT: Path | None = None
_TEMPLATES: dict[tuple, Path] = {}
_SKIP = shutil.ignore_patterns("__pycache__", ".skyfeast")


def _template_root() -> Path:
    global _TEMPLATE_ROOT
    if _TEMPLATE_ROOT is None:
        _TEMPLATE_ROOT = Path(tempfile.mkdtemp(prefix="skyfeast-quickstart-templates-"))
        atexit.register(shutil.rmtree, _TEMPLATE_ROOT, ignore_errors=True)
    return _TEMPLATE_ROOT


def _retarget_registry(src: Path, dest: Path) -> None:
    """Rewrite the absolute paths of ``src`` that Feast stored in ``dest``'s registry to ``dest``'s."""
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    path = dest / "data" / "registry.db"
    if not path.exists():
        return
    old, new = str(src), str(dest)
    registry = RegistryProto()
    registry.ParseFromString(path.read_bytes())
    for obj in registry.infra.infra_objects:
        if obj.HasField("sqlite_table"):
            obj.sqlite_table.path = obj.sqlite_table.path.replace(old, new, 1)
    data = registry.SerializeToString()
    if old.encode() in data:
        raise AssertionError(f"Feast's registry holds another absolute path under {old}; teach _retarget_registry it")
    path.write_bytes(data)


def _copy_project(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=_SKIP)
    _retarget_registry(src, dest)


def _one_worker(text: str) -> str:
    """The quickstart's config text with one worker a provider instead of two (as text: every line
    stays where it was). Each cluster a test starts then costs a third less CPU (a worker is a nanny
    and its worker process, each importing Dask, and Feast on its first task), which on the 2-core
    CI machine is most of an integration test's time; no test needs two workers a provider."""
    assert text.count("cluster: {type: local, workers: 2,") == 2, "the quickstart's clusters changed"
    return text.replace("cluster: {type: local, workers: 2,", "cluster: {type: local, workers: 1,")


def _applied_template() -> Path:
    """The quickstart after ``feast apply``, without events: made once per session."""
    if "applied" not in _TEMPLATES:
        dest = _template_root() / "applied" / "quickstart"
        shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("data", "__pycache__", ".skyfeast"))
        # the tests' quickstart has its feature and model jobs; make_project(groups=True) adds back the
        # model groups, which need models registered in the project's own ledger
        # (cut as text: tests edit the file's text, so everything else stays byte for byte as shipped)
        cfg = dest / "skyfeast.yaml"
        text = cfg.read_text()
        cut = text.index("\n  - name: scores\n")  # the group jobs are the file's last jobs
        cfg.write_text(_one_worker(text[:cut + 1]))
        assert not [j for j in yaml.safe_load(cfg.read_text())["jobs"] if "group" in j]
        subprocess.run([str(BIN / "feast"), "apply"], cwd=dest / "feature_repo", check=True, capture_output=True,
                       timeout=180)
        _TEMPLATES["applied"] = dest
    return _TEMPLATES["applied"]


def _seed(project: Path, argv: list[str]) -> None:
    """``python seed.py ARGV`` in ``project``, in this process (saves a Python start and pandas import)."""
    spec = importlib.util.spec_from_file_location(f"_quickstart_seed_{uuid.uuid4().hex[:8]}", project / "seed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()):
        status = module.main(argv)
    if status:
        raise AssertionError(f"seed.py {' '.join(argv)} exited {status}")


def _seeded_template(end: str, users: int, per_day: int, days: int) -> Path:
    """The applied quickstart seeded with these arguments: made once per session for each set of them."""
    key = ("seeded", end, users, per_day, days)
    if key not in _TEMPLATES:
        dest = _template_root() / f"seeded-{len(_TEMPLATES)}" / "quickstart"
        _copy_project(_applied_template(), dest)
        _seed(dest, ["--users", str(users), "--events-per-day", str(per_day), "--days", str(days), "--end", end])
        _TEMPLATES[key] = dest
    return _TEMPLATES[key]


def make_project(dest: Path, *, end: str = END, users: int = 1500, per_day: int = 15000, days: int = 8,
                 edit=None, groups: bool = False) -> Path:
    """A quickstart project at ``dest``: deterministic events seeded, ``feast apply`` done. Returns the
    config path. ``dest`` is a private copy of a session template (see above), as if made from scratch.
    ``groups``: with the quickstart's model groups too, their models registered (register_models.py)."""
    _copy_project(_seeded_template(end, users, per_day, days), dest)
    cfg = dest / "skyfeast.yaml"
    if groups:
        cfg.write_text(_one_worker((QUICKSTART / "skyfeast.yaml").read_text()))
        proc = subprocess.run([sys.executable, "register_models.py"], cwd=dest, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"register_models.py exited {proc.returncode}: {proc.stderr[-3000:]}")
    if edit is not None:
        data = yaml.safe_load(cfg.read_text())
        edit(data)
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """A quickstart project where both jobs already ran for [11:00, 12:00) via ``skyfeast run --json``."""
    dest = tmp_path_factory.mktemp("qs") / "quickstart"
    cfg = make_project(dest)
    code, report = skyfeast_json("run", "-c", str(cfg), "--at", AT, cwd=dest)
    return {"dir": dest, "config": cfg, "exit": code, "report": report}


class Spawned:
    """A background process whose output goes to files, not pipes: a chatty process can
    never block on a full pipe while the test waits for something else."""

    def __init__(self, args: list[str], cwd: Path, **kw):
        import tempfile

        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=self._out, stderr=self._err, text=True,
                                     env={**os.environ, **kw.pop("env", {})}, **kw)
        self.pid = self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        return self.proc.poll()

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.proc.wait(timeout=timeout)
        self._out.seek(0)
        self._err.seek(0)
        return self._out.read(), self._err.read()
