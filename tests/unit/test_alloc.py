"""featurestore.alloc: glibc's mmap threshold raised while batch work runs, where Dask's nanny fixed it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from skyfeast.featurestore import alloc


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),  # glibc's dynamic threshold is on: nothing to fix
    ({"MALLOC_TRIM_THRESHOLD_": "65536"}, True),  # what Dask's nanny sets
    ({"MALLOC_TOP_PAD_": "0"}, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}, True),
    ({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "1048576"}, False),  # the operator chose
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.mmap_threshold=2"}, False),
])
def test_it_applies_only_where_the_environment_fixed_the_threshold_without_choosing_it(environ, expected):
    assert alloc.applies(environ) is expected


_PROBE = textwrap.dedent("""
    import json, resource
    import numpy as np
    from skyfeast.featurestore.alloc import batch_allocations, in_batch

    def faults(n=40):
        a = np.arange(1_000_000, dtype=np.uint64)  # 8 MB: above the 128 KiB threshold, below 32 MiB
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            a = (a ^ np.uint64(7)) + np.uint64(1)  # two 8 MB temporaries per step
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    out = {"plain": faults()}
    with batch_allocations():
        with batch_allocations():  # nested: one setting, held until the outer one ends
            out["nested"] = faults()
        out["batch"] = faults()
    out["after"] = faults()
    out["task"] = in_batch(faults)()
    print(json.dumps(out))
""")


def _faults(env: dict[str, str]) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tunables are Linux's")
def test_batch_work_reuses_large_blocks_where_dasks_trim_threshold_would_map_each_one():
    """Under Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` every 8 MB temporary is a fresh mapping whose
    pages fault in as they are touched (27,080 faults for the 80 here); in a batch they are reused
    from the heap (0).  When the batch ends, the fixed thresholds are back."""
    n = _faults({"MALLOC_TRIM_THRESHOLD_": "65536"})
    assert n["plain"] > 10_000, n  # the cost this module removes
    for key in ("batch", "nested", "task"):
        assert n[key] < n["plain"] / 10, (key, n)
    assert n["after"] > n["plain"] / 2, n  # restored once the last batch ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tunables are Linux's")
def test_without_a_tunable_in_the_environment_nothing_is_changed():
    n = _faults({})
    assert n["plain"] < 2_000, n  # glibc's dynamic threshold already reuses the blocks
    assert n["after"] < 2_000, n  # and batch_allocations did not turn it off
