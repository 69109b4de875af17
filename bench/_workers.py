"""What the benches run on their Dask workers: each worker's peak RSS (``VmHWM``).

Dask workers cannot import the bench scripts' modules, so this module registers itself with
cloudpickle to be sent by value: its functions reach the workers whole (``client.run``).
Imported by the scripts as ``_workers`` (their own folder is on ``sys.path``).
"""

from __future__ import annotations

import sys

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS counter (``VmHWM``); False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """This process's peak RSS in MiB since the last :func:`reset_peak_rss`, or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_worker_peaks(client) -> None:
    """:func:`reset_peak_rss` on every worker of ``client``'s cluster."""
    client.run(reset_peak_rss)


def worker_peaks(client) -> list[float]:
    """Peak RSS (MiB) of each Dask worker since the last :func:`reset_worker_peaks`, largest first."""
    return sorted((v for v in client.run(peak_rss_mib).values() if v is not None), reverse=True)
