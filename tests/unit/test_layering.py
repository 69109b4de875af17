"""The layers import downward only: adapters ← featurestore ← scheduler.

``adapters/`` (the cloud boundary) imports neither of the others, ``featurestore/``
(everything that touches Feast) never imports ``scheduler/``; the scheduler reaches
the Feast plugin only through the ``skyfeast.provider_sources`` entry point.  Dotted
module paths in string literals count too (worker preloads, ``importlib`` calls),
since they are imports by another name.  Only ``adapters/`` imports the cloud SDKs, and only
``featurestore/models/`` imports ``mlflow``.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"adapters": set(), "featurestore": {"adapters"}, "scheduler": {"adapters", "featurestore"}}
SDKS = ("boto3", "botocore", "google.cloud", "s3fs", "gcsfs")
NAME = re.compile(r"^skyfeast\.(adapters|featurestore|scheduler)(\.|$)")


def _modules(layer: str):
    for path in sorted((ROOT / layer).rglob("*.py")):
        if "legacy" in path.relative_to(ROOT / layer).parts:
            continue  # the deprecated top-level shim re-exports the engine on purpose
        yield path


def _references(path: Path):
    """(line, dotted name) for every import, and every string literal that is a skyfeast module path."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value):
            yield node.lineno, node.value


def test_layers_import_downward_only():
    bad = []
    for layer, allowed in LAYERS.items():
        for path in _modules(layer):
            for line, name in _references(path):
                m = NAME.match(name)
                if m and m.group(1) != layer and m.group(1) not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
                top = name.split(".")[0]
                if top in LAYERS:  # the bare names collide with other PyPI distributions
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {name} (import it as skyfeast.{name})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_adapters_import_cloud_sdks():
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}"
           for layer in ("featurestore", "scheduler") for path in _modules(layer)
           for line, name in _references(path) if name.startswith(SDKS)]
    assert not bad, "cloud SDKs imported outside adapters/:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", ["from skyfeast.scheduler.config import load_config",
                                    "x = 'skyfeast.scheduler.run.executor'", "import scheduler.config"])
def test_the_check_sees_an_upward_import(tmp_path, source):
    """The walker catches each form a violation takes (so the check above can fail)."""
    path = tmp_path / "mod.py"
    path.write_text(source + "\n")
    names = [name for _, name in _references(path)]
    assert names and any(n.startswith(("skyfeast.scheduler", "scheduler")) for n in names)


def test_only_the_model_registry_imports_mlflow():
    """The MLflow bridge is featurestore/models/ (mlflow_bridge.py, reached through flavours.py): the
    scheduler and the rest of featurestore reach MLflow only through it."""
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}"
           for layer in LAYERS for path in _modules(layer)
           for line, name in _references(path) if name.split(".")[0] == "mlflow"
           and path.parent != ROOT / "featurestore" / "models"]
    assert not bad, "mlflow imported outside featurestore/models/:\n" + "\n".join(bad)


def test_every_subpackage_is_installed():
    """pyproject.toml lists packages explicitly (the folders map into the namespace): a new
    subpackage that is not listed would import from a checkout but be missing from a wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"skyfeast." + str(p.parent.relative_to(ROOT)).replace("/", ".")
             for layer in LAYERS for p in (ROOT / layer).rglob("__init__.py") if "legacy" not in p.parts}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
