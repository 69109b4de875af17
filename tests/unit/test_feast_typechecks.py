"""``featurestore._typechecks``: Feast's ``@typechecked`` decorations become no-ops in skyfeast's
processes (Feast imports in a third of the time), other modules' stay checked, and
``SKYFEAST_FEAST_TYPECHECKS=1`` keeps Feast's. Each case runs in a fresh interpreter, since
the decorations happen once, when Feast is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import skyfeast.scheduler  # installs the filter, as every skyfeast entry point does
    import feast
    from feast.types import Float32
    from typeguard import typechecked

    try:
        feast.Field(name=123, dtype=Float32)
        print("feast:unchecked")
    except Exception as exc:
        print("feast:" + type(exc).__name__)

    @typechecked
    def mine(x: int) -> int:
        return x

    try:
        mine("no")
        print("mine:unchecked")
    except Exception as exc:
        print("mine:" + type(exc).__name__)
""")


@pytest.mark.parametrize("keep, feast_result", [(None, "feast:unchecked"), ("1", "feast:TypeCheckError")])
def test_only_feasts_own_typechecks_are_skipped(tmp_path, keep, feast_result):
    probe = tmp_path / "probe.py"  # typeguard instruments from source: not from ``-c``
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "SKYFEAST_FEAST_TYPECHECKS"}
    if keep is not None:
        env["SKYFEAST_FEAST_TYPECHECKS"] = keep
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [feast_result, "mine:TypeCheckError"]
