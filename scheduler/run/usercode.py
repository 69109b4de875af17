"""Importing user code (transforms, scorers) named as ``module:function``.

Modules are looked up first in the config file's directory, then on
``sys.path``.  Modules that live under the config directory are registered
with cloudpickle *by value*, so Dask workers on any cluster can run them
without the project being installed there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ImportProblem(Exception):
    """``module:function`` could not be imported; message says why."""


def import_callable(spec: str, base_dir: Path) -> Callable[..., Any]:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ImportProblem(f"{spec!r} is not of the form 'module:function'")
    base = str(base_dir)
    if base not in sys.path:
        sys.path.insert(0, base)
    top = mod_name.partition(".")[0]
    local = base_dir / f"{top}.py"
    if not local.exists():
        local = base_dir / top / "__init__.py"
    cached = sys.modules.get(top)
    cached_file = getattr(cached, "__file__", None)
    if local.exists() and cached is not None and (cached_file is None or Path(cached_file).resolve() != local.resolve()):
        # a module of that name from another project (one process, several configs): this one's wins
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
        sys.path.remove(base)
        sys.path.insert(0, base)
        importlib.invalidate_caches()
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ImportProblem(f"cannot import module {mod_name!r}: {exc.msg} (searched {base} and sys.path)") from None
    except Exception as exc:  # user module raised at import time
        raise ImportProblem(f"importing module {mod_name!r} failed: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # sys.exit() at import: a module that is a script, not a library
        raise ImportProblem(f"importing module {mod_name!r} called sys.exit({exc.code!r}); a job's module "
                            "must not exit when imported (guard its script part with `if __name__ == \"__main__\":`)"
                            ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ImportProblem(f"module {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ImportProblem(f"{spec!r} is not callable")
    mod_file = getattr(module, "__file__", None)
    if mod_file and Path(mod_file).resolve().is_relative_to(base_dir.resolve()):
        import cloudpickle

        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            pass  # already registered
        return ByValue(fn)
    return fn


class ByValue:
    """A project-local callable that travels to Dask workers *by value*.

    Dask pickles task arguments with plain ``pickle`` first, which stores a module-level
    function as a reference (``transforms.user_features``): a worker that cannot import the
    project's modules (any remote cluster) then fails with ``No module named 'transforms'``.
    This wrapper pickles the function with cloudpickle (its module is registered by value),
    so the code itself is shipped."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "user_fn")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self):
        import cloudpickle

        return (_load_by_value, (cloudpickle.dumps(self.fn),))

    def __repr__(self) -> str:
        return f"ByValue({self.__qualname__})"


def _load_by_value(blob: bytes) -> ByValue:
    import cloudpickle

    return ByValue(cloudpickle.loads(blob))
