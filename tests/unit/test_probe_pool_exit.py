"""A process that ends with ``os._exit`` right after closing its probe pool (``skyfeast run``'s
exit-at-once path) leaves none of the pool's semaphores behind: multiprocessing's resource
tracker warns on stderr about each one it has to clean up after its parent is gone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent('''
    import os, socket, sys
    from skyfeast.scheduler.control.health import ProbePool

    if __name__ == "__main__":
        with socket.socket() as s:  # a port nothing listens on: the probe answers "refused" at once
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pool = ProbePool(2)
        answered, _, error = pool.probe(f"tcp://127.0.0.1:{port}", 2.0)
        assert not answered and error, error
        pool.close(wait=float(sys.argv[1]))
        sys.stderr.flush()
        os._exit(0)
''')


@pytest.mark.parametrize("wait, leaks", [(5.0, False), (0.0, True)])
def test_closing_the_probe_pool_with_a_wait_leaves_no_semaphore_behind(tmp_path, wait, leaks):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(wait)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # wait 0 is the control: os._exit with the pool's processes still running leaks its queues'
    # semaphores, which shows the check can see a leak
    assert ("leaked semaphore" in proc.stderr) is leaks, proc.stderr
