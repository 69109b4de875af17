"""skyfeast's test suite.

While the tests run, the repo root is on ``sys.path`` (pytest puts it there so that
``tests.*`` helpers import), and the checkout's folders ``scheduler/``,
``featurestore/`` and ``adapters/`` would then import as top-level packages.  An
installed skyfeast never provides those names (they install as ``skyfeast.*``;
``featurestore`` only as the deprecated engine shim), and other distributions own
``scheduler`` and ``adapters``.  The finder below makes the three bare names resolve
as they do for a user, from what is installed, so a stale bare import fails here too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_BARE = frozenset({"scheduler", "featurestore", "adapters"})


class _InstalledOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _BARE:
            return None
        paths = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]
        spec = importlib.machinery.PathFinder.find_spec(fullname, paths)
        if spec is not None:
            return spec
        for finder in sys.meta_path:  # the editable install's finder maps the deprecated shim
            if finder is self or finder is importlib.machinery.PathFinder or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        raise ModuleNotFoundError(f"No module named {fullname!r} (skyfeast's is skyfeast.{fullname})", name=fullname)


if not any(isinstance(f, _InstalledOnly) for f in sys.meta_path):
    sys.meta_path.insert(0, _InstalledOnly())
