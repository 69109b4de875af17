"""Local emulators for the cloud object stores, spoken to over their real protocols.

* S3: moto's server (``python -m moto.server``), from the ``moto[server]`` package.
* GCS: ``gcp-storage-emulator``, JSON API only, in memory.

Each runs as a child process on a free port for the whole test session. A
missing emulator skips its tests (fails them under SKYFEAST_REQUIRE_SERVICES=1).
Buckets are made over plain HTTP, so fixtures need no cloud SDK.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import REQUIRE_SERVICES

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (just released by us), for 'connection refused' tests."""
    return free_port()


def unavailable(name: str, why: str) -> NoReturn:
    msg = f"{name} is not available: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg} and SKYFEAST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{msg}; pip install -e '.[test]'")


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies without tearing down (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Emulator:
    """A child-process server on 127.0.0.1:``port``; ``stop()`` ends it (and only it)."""

    def __init__(self, name: str, argv: list[str], port: int, probe_path: str, env: dict | None = None):
        self.name, self.port = name, port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix=f"skyfeast-{name.split()[0].lower()}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
        self._wait(probe_path)

    def _wait(self, probe_path: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                http("GET", self.endpoint + probe_path, timeout=1.0)
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on {self.endpoint} within {START_TIMEOUT:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def _start(make: Callable[[int], Emulator], tries: int = 3) -> Emulator:
    # the port is free when picked but another process may grab it before the
    # emulator binds: pick again on failure
    for attempt in range(tries):
        try:
            return make(free_port())
        except RuntimeError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def start_moto(env: dict | None = None) -> Emulator:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        unavailable("moto S3 server", "the moto[server] package is not installed")
    return _start(lambda port: Emulator(
        "moto S3 server", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
        "/moto-api/", env=env))


def start_gcs_emulator() -> Emulator:
    exe = BIN / "gcp-storage-emulator"
    if not exe.exists():
        found = shutil.which("gcp-storage-emulator")
        if found is None:
            unavailable("gcp-storage-emulator", f"no executable in {BIN} or on PATH")
        exe = Path(found)
    return _start(lambda port: Emulator(
        "gcp-storage-emulator", [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        port, "/storage/v1/b"))


def need_sdk(name: str, extra: str, *modules: str) -> None:
    """Skip (fail under SKYFEAST_REQUIRE_SERVICES=1) unless the backend's packages are installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        unavailable(name, f"{', '.join(missing)} not installed (the {extra!r} extra)")


# Emulator credentials: moto accepts any keys unless its IAM auth is switched on.
S3_KEYS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing"}


def unique_bucket() -> str:
    return f"skyfeast-t-{uuid.uuid4().hex[:16]}"


def make_s3_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or unique_bucket()
    status, body = http("PUT", f"{endpoint}/{name}")  # moto accepts unsigned requests unless auth is on
    assert status == 200, f"creating s3 bucket {name}: HTTP {status} {body[:300]!r}"
    return name


def make_gcs_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or unique_bucket()
    status, body = http("POST", f"{endpoint}/storage/v1/b?project=skyfeast-test", json.dumps({"name": name}).encode())
    assert status == 200, f"creating gcs bucket {name}: HTTP {status} {body[:300]!r}"
    return name


@contextlib.contextmanager
def running(start: Callable[[], Emulator]) -> Iterator[Emulator]:
    emu = start()
    try:
        yield emu
    finally:
        emu.stop()
