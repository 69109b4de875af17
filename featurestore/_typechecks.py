"""Feast's import without typeguard's instrumentation.

Feast decorates about 240 of its functions and classes with typeguard's
``@typechecked``, which at import time re-parses and recompiles their source.
Measured on this 2-core class of machine (idle): ``import feast`` takes 3.4 s,
1.2 s without it, and every skyfeast process pays it (the CLI, the daemon, each
Dask scheduler and worker), three to four times that on a loaded host.

skyfeast builds the values it passes to Feast itself and tests them against
Feast's own results, so in its processes ``@typechecked`` applied by a
``feast`` module is made a no-op before Feast is imported. Decorations by any
other module (user code included) are untouched. Set
``SKYFEAST_FEAST_TYPECHECKS=1`` to keep Feast's runtime checks.
"""

from __future__ import annotations

import os
import sys


def skip_feast_typechecks() -> bool:
    """Install the filter; True if Feast's ``@typechecked`` decorations will be no-ops.

    Does nothing once ``feast`` is imported (its decorations already ran)."""
    if os.environ.get("SKYFEAST_FEAST_TYPECHECKS") == "1" or "feast" in sys.modules:
        return False
    try:
        import typeguard
    except ImportError:  # a Feast without typeguard: nothing to skip
        return False
    original = typeguard.typechecked
    if getattr(original, "skyfeast_filter", False):
        return True

    def typechecked(target=None, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "feast" or caller.startswith("feast."):
            return target if target is not None else (lambda t: t)
        return original(target, **kwargs) if target is not None else original(**kwargs)

    typechecked.skyfeast_filter = True
    typechecked.__doc__ = original.__doc__
    typeguard.typechecked = typechecked
    return True


class _BeforeFeast:
    """A meta-path finder that installs the filter just before ``feast`` is first imported, so a
    process that never imports Feast (most CLI commands) does not pay typeguard's import either."""

    def find_spec(self, name, path=None, target=None):
        if name == "feast":
            uninstall()
            skip_feast_typechecks()
        return None  # the normal finders import it


_FINDER = _BeforeFeast()


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


if "feast" not in sys.modules and _FINDER not in sys.meta_path:
    sys.meta_path.insert(0, _FINDER)
