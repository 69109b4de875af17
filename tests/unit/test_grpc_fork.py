"""gRPC's fork support is off in skyfeast processes unless the environment chose (grpc/grpc#43055:
with a channel open, a ``subprocess.Popen`` child can abort between fork and exec)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, skyfeast.featurestore; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))"


@pytest.mark.parametrize(("preset", "expected"), [(None, "false"), ("true", "true"), ("1", "1")])
def test_importing_skyfeast_turns_grpc_fork_support_off_unless_set(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    if preset is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = preset
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_it_is_set_before_any_cloud_sdk_or_feast_is_imported():
    probe = ("import sys, skyfeast.featurestore, skyfeast.scheduler; "
             "print(sorted(m for m in ('grpc', 'gcsfs', 'google.cloud.storage', 'feast') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
