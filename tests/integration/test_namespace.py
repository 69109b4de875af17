"""skyfeast installs under one import namespace and never shadows PyPI's ``scheduler`` or ``adapters``.

The repo's top-level folders scheduler/, featurestore/ and adapters/ install as ``skyfeast.scheduler``,
``skyfeast.featurestore`` and ``skyfeast.adapters`` (``skyfeast`` is a PEP 420 namespace); the only other
top-level package is the deprecated shim ``featurestore`` (featurestore/legacy/).  ``scheduler`` and
``adapters`` are import names of other PyPI distributions, so skyfeast must never install them.

This test builds two FRESH venvs, each holding two stand-in distributions that own the import names
``adapters`` and ``scheduler`` (tests/integration/standins/), plus skyfeast: one editable
(``pip install -e <repo>``), one from a wheel (``pip wheel`` of a copy of the repo).  In each, from a
neutral working directory (never the repo root: its folders would shadow everything), it checks that
the stand-ins still own ``adapters``/``scheduler``, that ``skyfeast.*`` and ``featurestore`` resolve
into that install, that the console script and the ``skyfeast.provider_sources`` entry point work, and
that Feast's own loader finds the engine plugin by both its names.  It also reads the wheel's file list.

Installing skyfeast's dependencies (Feast, Dask, ...) into a fresh venv takes minutes, so skyfeast
goes in with ``--no-deps`` and the fresh venvs see the dev venv's packages through a ``.pth`` file
holding one line, the dev venv's site-packages directory.  A path line in a .pth only appends that
directory to sys.path: the .pth files *inside* it are not run, so the dev venv's own editable finder
for skyfeast (``__editable__.skyfeast-*.pth``) stays inactive there; the probe checks that.  The .pth
is written only after every pip call, so pip never sees (let alone touches) the dev install.

skyfeast is built with ``--no-build-isolation`` by the editable venv, which first gets pyproject's
[build-system] requires from the package index: the dev venv cannot build it (it has the setuptools
that came with its venv, older than the setuptools>=77 that pyproject asks for, and no ``wheel``).
So the test needs the index, like any install of skyfeast; a failure there fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STANDINS = Path(__file__).resolve().parent / "standins"
SHADOWED = ("adapters", "scheduler")  # import names owned by other PyPI distributions
SUBPACKAGES = ("scheduler", "featurestore", "adapters")  # skyfeast.<name> <- the repo folder <name>/
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
DEV_SITE = Path(sysconfig.get_paths()["purelib"])  # the running (dev) venv's site-packages: Feast, Dask, ...
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter the dev venv was made from
NEW_TYPE = "skyfeast.featurestore.engine.DaskComputeEngine"
OLD_TYPE = "featurestore.engine.DaskComputeEngine"


def _copy_ignore(folder: str, names: list[str]) -> set[str]:
    """What the repo copy for the wheel build leaves out: what .gitignore ignores, tests/, examples/, bench/."""
    skip = {n for n in names if n in ("__pycache__", ".DS_Store") or n.endswith((".egg-info", ".pyc"))}
    if Path(folder).resolve() == ROOT.resolve():
        skip |= set(names) & {".git", ".venv", "build", "dist", ".pytest_cache", ".hypothesis", ".skyfeast",
                              "dask-worker-space", "examples", "tests", "bench"}
    return skip


def _env() -> dict[str, str]:
    """The caller's environment less whatever could point Python at another install."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONWARNINGS", "VIRTUAL_ENV",
            "PYTHONUSERBASE", "PYTHONINSPECT"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONNOUSERSITE"] = "1"  # no ~/.local site-packages either
    return env


def _run(args: list, *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode} (cwd {cwd})\n"
                    f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}", pytrace=False)
    return proc


def _pip(venv: Path, *args, cwd: Path) -> None:
    """pip of the dev venv acting on ``venv`` (whose Python has no pip of its own: faster to make)."""
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "--disable-pip-version-check",
          "--no-input", "-q", *args], cwd=cwd, timeout=180)


def _make_venv(venv: Path, cwd: Path) -> Path:
    """A fresh venv (no system site-packages, no pip); returns its site-packages."""
    _run([BASE_PYTHON, "-m", "venv", "--without-pip", venv], cwd=cwd)
    site = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=cwd).stdout.strip()
    return Path(site)


def _see_dev_packages(site: Path) -> None:
    # One path line: appends DEV_SITE to sys.path after ``site`` itself (so this venv's own packages win)
    # without running DEV_SITE's .pth files (so the dev editable finder for skyfeast is not installed).
    (site / "zz_skyfeast_test_dev_site.pth").write_text(f"{DEV_SITE}\n")


# Runs inside a fresh venv (cwd: a directory holding nothing but this file); prints one JSON object.
PROBE = r'''
import importlib, importlib.metadata as md, json, sys, sysconfig, warnings

out = {"purelib": sysconfig.get_paths()["purelib"], "sys_path": sys.path}
for name in ("adapters", "scheduler"):
    mod = importlib.import_module(name)
    out[name] = {"file": mod.__file__, "standin": getattr(mod, "STANDIN", None)}

import skyfeast
out["skyfeast"] = {"file": getattr(skyfeast, "__file__", None), "path": [str(p) for p in skyfeast.__path__]}
for name in ("skyfeast.scheduler", "skyfeast.featurestore", "skyfeast.adapters", "featurestore",
             "featurestore.engine", "skyfeast.featurestore.engine", "skyfeast.scheduler.cli",
             "skyfeast.scheduler.app"):
    out[name] = importlib.import_module(name).__file__

# Feast's own plugin loading (feast.infra.passthrough_provider and feast.repo_config): the module by
# dotted path, the engine class, and the config class named engine name + "Config".
from feast.importer import import_class
from feast.repo_config import get_batch_engine_config_from_type

skyfeast_engine = importlib.import_module("skyfeast.featurestore.engine").DaskComputeEngine
engines = {}
for typ in ("skyfeast.featurestore.engine.DaskComputeEngine", "featurestore.engine.DaskComputeEngine"):
    module, cls_name = typ.rsplit(".", 1)
    engine_cls = import_class(module, cls_name)
    config_cls = get_batch_engine_config_from_type(typ)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # as passthrough_provider does with a dict batch_engine config
            engine = engine_cls(repo_config=None, offline_store=None, online_store=None, type=typ, workers=2)
            made = {"config_type": engine.config.type, "config_cls": type(engine.config).__qualname__}
        except Exception as exc:  # reported, and fails the test
            made = {"error": repr(exc)}
    engines[typ] = {
        "engine_module": engine_cls.__module__, "engine_name": engine_cls.__name__,
        "config_module": config_cls.__module__, "config_name": config_cls.__name__,
        "config_default_type": config_cls().type,
        "is_skyfeast_engine": issubclass(engine_cls, skyfeast_engine),
        "made": made,
        "deprecations": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)],
    }
out["engines"] = engines

# Distribution metadata.  sys.path holds two skyfeast dist-infos: this venv's, and (through the .pth)
# the dev venv's, further down.  importlib.metadata takes the first one found for a name, both in
# distribution("skyfeast") and in entry_points() (which de-duplicates distributions by name), so
# this venv's wins; "all_dists" lists every one, in sys.path order.
dist = md.distribution("skyfeast")
out["dist"] = {"path": str(dist._path), "version": dist.version}
out["all_dists"] = [str(d._path) for d in md.distributions() if (d.metadata["Name"] or "").lower() == "skyfeast"]
eps = md.entry_points(group="skyfeast.provider_sources")
out["provider_sources"] = [{"name": ep.name, "value": ep.value, "dist": str(ep.dist._path),
                            "loaded_module": ep.load().__module__} for ep in eps]
out["console_scripts"] = [{"value": ep.value, "dist": str(ep.dist._path)}
                          for ep in md.entry_points(group="console_scripts", name="skyfeast")]

# Editable finders: this venv's own (editable install) or none (wheel); never the dev venv's.
finder = sys.modules.get("__editable___skyfeast_0_1_0_finder")
out["editable_finder"] = None if finder is None else {
    "file": finder.__file__, "mapping": dict(finder.MAPPING), "namespaces": dict(finder.NAMESPACES),
    "finds": {n: finder._EditableFinder.find_spec(n) is not None for n in ("adapters", "scheduler")}}
out["meta_path"] = [getattr(sys.modules.get(type(f).__module__ if not isinstance(f, type) else f.__module__),
                            "__file__", None) or repr(f) for f in sys.meta_path]
out["loaded"] = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
                 if n.split(".")[0] in ("skyfeast", "featurestore") or n.startswith("__editable__")}
import feast
out["feast"] = feast.__file__
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def installs(tmp_path_factory):
    """Two fresh venvs with the stand-ins and skyfeast (editable / wheel), the wheel, and their probes."""
    work = tmp_path_factory.mktemp("namespace")
    neutral = work / "neutral"
    neutral.mkdir()
    (neutral / "probe.py").write_text(PROBE)

    # Sources are copied: building in place would leave build/ and *.egg-info in the repo.
    standins = work / "standins-src"
    shutil.copytree(STANDINS, standins, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    src = work / "skyfeast-src"
    shutil.copytree(ROOT, src, ignore=_copy_ignore)
    wheels = work / "wheels"

    # The editable venv is also the build venv (it needs setuptools anyway, for the editable build).
    edit, whl = work / "venv-editable", work / "venv-wheel"
    edit_site = _make_venv(edit, neutral)
    _pip(edit, "install", *PYPROJECT["build-system"]["requires"], cwd=neutral)
    _pip(edit, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels,
         standins / "adapters", standins / "scheduler", src, cwd=neutral)
    standin_wheels = sorted(wheels.glob("standin_*.whl"))
    (wheel,) = wheels.glob("skyfeast-*.whl")
    assert len(standin_wheels) == 2, standin_wheels

    def editable() -> Path:
        # an editable install writes no package files (one pip call will do); the test reads its finder's mapping
        _pip(edit, "install", "--no-deps", "--no-index", "--no-build-isolation", *standin_wheels, "-e", ROOT,
             cwd=neutral)
        return edit_site

    def from_wheel() -> Path:
        site = _make_venv(whl, neutral)
        # stand-ins first, skyfeast second: had skyfeast a top-level scheduler/ or adapters/, its files would win
        _pip(whl, "install", "--no-deps", "--no-index", *standin_wheels, cwd=neutral)
        _pip(whl, "install", "--no-deps", "--no-index", wheel, cwd=neutral)
        return site

    def probe(venv: Path, install) -> dict:
        site = install()
        _see_dev_packages(site)  # only now, after every pip call on this venv
        return {"venv": venv, "site": site,
                "probe": json.loads(_run([venv / "bin" / "python", "probe.py"], cwd=neutral).stdout)}

    with ThreadPoolExecutor(2) as pool:  # the two venvs are independent from here on
        futures = {"editable": pool.submit(probe, edit, editable), "wheel": pool.submit(probe, whl, from_wheel)}
        out = {kind: f.result() for kind, f in futures.items()}
    out.update(wheel_file=wheel, neutral=neutral)
    return out


def _under(path: str | None, root: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(root.resolve())


def test_wheel_holds_no_top_level_scheduler_or_adapters(installs):
    with zipfile.ZipFile(installs["wheel_file"]) as zf:
        names = zf.namelist()
        top = {n.split("/", 1)[0] for n in names}
        dist_info = next(t for t in top if t.endswith(".dist-info"))
        # setuptools' record of the top-level import names (not part of the wheel spec: checked if present)
        top_level_txt = (zf.read(f"{dist_info}/top_level.txt").decode().split()
                         if f"{dist_info}/top_level.txt" in names else ["featurestore", "skyfeast"])
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    for name in SHADOWED:
        assert not any(n.startswith(f"{name}/") or n == f"{name}.py" for n in names), \
            f"the wheel installs top-level {name!r}, shadowing PyPI's {name!r}: {sorted(top)}"
    assert top - {dist_info} == {"skyfeast", "featurestore"}, f"unexpected top-level entries: {sorted(top)}"
    assert sorted(top_level_txt) == ["featurestore", "skyfeast"], top_level_txt
    assert "skyfeast/__init__.py" not in names, "skyfeast must stay a PEP 420 namespace (no __init__.py)"
    for sub in SUBPACKAGES:
        assert f"skyfeast/{sub}/__init__.py" in names, f"skyfeast.{sub} missing from the wheel"
    assert "featurestore/engine.py" in names  # the deprecated shim, from featurestore/legacy/
    assert "skyfeast = skyfeast.scheduler.cli:main" in entry_points, entry_points
    assert "[skyfeast.provider_sources]" in entry_points, entry_points


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_install_resolves_into_namespace(installs, kind):
    inst = installs[kind]
    p, site = inst["probe"], inst["site"]
    # the roots the code must come from: site-packages (wheel) or the repo folders (editable)
    code_root = {"wheel": lambda sub: site / "skyfeast" / sub, "editable": lambda sub: ROOT / sub}[kind]
    shim_root = site / "featurestore" if kind == "wheel" else ROOT / "featurestore" / "legacy"

    # the fresh venv is what runs, and it sees the dev venv's packages only after its own
    assert Path(p["purelib"]).resolve() == site.resolve()
    path = [Path(x).resolve() for x in p["sys_path"] if x and not x.startswith("__editable__")]
    assert DEV_SITE.resolve() in path and path.index(site.resolve()) < path.index(DEV_SITE.resolve()), p["sys_path"]
    assert _under(p["feast"], DEV_SITE), p["feast"]

    # `adapters` and `scheduler` are the stand-ins'
    for name in SHADOWED:
        assert p[name]["standin"] == name and _under(p[name]["file"], site), \
            f"import {name} gave {p[name]['file']}, not the stand-in distribution's package"

    # skyfeast.* comes from this install; skyfeast is a namespace package
    assert p["skyfeast"]["file"] is None, f"skyfeast is not a PEP 420 namespace: {p['skyfeast']}"
    for sub in SUBPACKAGES:
        assert Path(p[f"skyfeast.{sub}"]).resolve() == (code_root(sub) / "__init__.py").resolve(), \
            (sub, p[f"skyfeast.{sub}"])
    assert Path(p["featurestore"]).resolve() == (shim_root / "__init__.py").resolve(), p["featurestore"]
    for name, file in p["loaded"].items():
        allowed = (site,) if kind == "wheel" else (ROOT / "scheduler", ROOT / "featurestore", ROOT / "adapters", site)
        assert any(_under(file, r) for r in allowed) or file is None, f"{name} loaded from {file}"
    if kind == "wheel":
        assert [Path(x).resolve() for x in p["skyfeast"]["path"]] == [(site / "skyfeast").resolve()], p["skyfeast"]
        assert p["editable_finder"] is None, f"an editable finder is active in the wheel venv: {p['editable_finder']}"
    else:
        ef = p["editable_finder"]
        assert ef is not None and _under(ef["file"], site), f"editable finder not this venv's: {ef}"
        assert set(ef["mapping"]) == {"skyfeast.scheduler", "skyfeast.featurestore", "skyfeast.adapters",
                                      "featurestore"}, ef["mapping"]
        assert not any(ef["finds"].values()), f"the editable finder claims {ef['finds']}"
    # the dev venv's editable finder (a module of the same name in DEV_SITE) is not installed
    assert not [f for f in p["meta_path"] if "__editable__" in f and not _under(f, site)], p["meta_path"]

    # metadata: this venv's dist-info first (see PROBE on the dev one further down sys.path)
    assert _under(p["dist"]["path"], site) and p["dist"]["version"] == VERSION, p["dist"]
    assert p["all_dists"] and _under(p["all_dists"][0], site), p["all_dists"]
    assert all(_under(d, site) or _under(d, DEV_SITE) for d in p["all_dists"]), p["all_dists"]
    # one provider source (the dev dist-info's duplicate is not listed), from this venv's dist-info, and it loads
    (source,) = p["provider_sources"]
    assert source["value"] == "skyfeast.scheduler.app:engine_providers" and source["dist"] == p["dist"]["path"], source
    assert source["loaded_module"].startswith("skyfeast.scheduler.app"), source
    assert p["console_scripts"] == [{"value": "skyfeast.scheduler.cli:main", "dist": p["dist"]["path"]}], \
        p["console_scripts"]


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_feast_loads_engine_by_both_names(installs, kind):
    engines = installs[kind]["probe"]["engines"]
    new, old = engines[NEW_TYPE], engines[OLD_TYPE]
    assert (new["engine_module"], new["engine_name"]) == ("skyfeast.featurestore.engine", "DaskComputeEngine")
    assert (new["config_module"], new["config_name"]) == ("skyfeast.featurestore.engine", "DaskComputeEngineConfig")
    assert new["config_default_type"] == NEW_TYPE
    assert new["made"] == {"config_type": NEW_TYPE, "config_cls": "DaskComputeEngineConfig"}, new["made"]
    assert not any("deprecated" in m for m in new["deprecations"]), new["deprecations"]
    # the deprecated path: same engine underneath, its own config type, and a DeprecationWarning when made
    assert (old["engine_module"], old["engine_name"]) == ("featurestore.engine", "DaskComputeEngine")
    assert (old["config_module"], old["config_name"]) == ("featurestore.engine", "DaskComputeEngineConfig")
    assert old["is_skyfeast_engine"] and old["config_default_type"] == OLD_TYPE
    assert old["made"] == {"config_type": OLD_TYPE, "config_cls": "DaskComputeEngineConfig"}, old["made"]
    assert any(OLD_TYPE in m and NEW_TYPE in m for m in old["deprecations"]), \
        f"no DeprecationWarning naming both engine types: {old['deprecations']}"


@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_console_script(installs, kind):
    venv, neutral = installs[kind]["venv"], installs["neutral"]
    script = venv / "bin" / "skyfeast"
    assert script.is_file(), f"no console script in {venv / 'bin'}"
    shebang = script.read_text().splitlines()[0]
    assert shebang == f"#!{venv / 'bin' / 'python'}", shebang  # this venv's Python, so its imports above
    version = _run([script, "--version"], cwd=neutral, timeout=60)
    assert version.stdout.strip() == f"skyfeast {VERSION}", version.stdout
    helped = _run([script, "--help"], cwd=neutral, timeout=60)
    assert helped.stdout.startswith("usage: skyfeast"), helped.stdout[:500]
