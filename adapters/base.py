"""Contracts for the cloud boundary, and the neutral error tree.

Errors (catch the level you can act on)::

    AdapterError
    ├── Transient          retry or fail over: timeouts, 5xx, connection resets,
    │                      a cluster that cannot be reached or lost its scheduler
    ├── NotFound           the object / bucket / cluster does not exist
    ├── PermissionDenied   credentials are missing or lack a permission
    └── QuotaExceeded      throttled or out of quota

Backends raise only these (``raise ... from exc`` keeps the SDK error as the
cause); the scheduler classifies runs from them, never from SDK types.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client


class AdapterError(Exception):
    """Root of every error raised across the cloud boundary."""

    infrastructure = True


class Transient(AdapterError):
    """Temporary: retrying, possibly elsewhere, may succeed."""


class NotFound(AdapterError, LookupError):
    """The addressed object, bucket or cluster does not exist."""

    infrastructure = False


class PermissionDenied(AdapterError, PermissionError):
    """Credentials are missing or not allowed to do this."""


class QuotaExceeded(AdapterError):
    """Throttled, rate-limited or out of quota."""


@contextlib.contextmanager
def translating(translate: Callable[[BaseException, str], "AdapterError | None"], what: str) -> Iterator[None]:
    """Re-raise an SDK error as the neutral error ``translate`` maps it to (``from exc``);
    errors it does not know, and our own, pass through unchanged."""
    try:
        yield
    except AdapterError:
        raise
    except Exception as exc:
        err = translate(exc, what)
        if err is None:
            raise
        raise err from exc


class ObjectStore(abc.ABC):
    """A bucket-like namespace of objects addressed by ``/``-separated keys.

    Keys are relative to the store's root (bucket + prefix, or a directory).
    Every method raises only :class:`AdapterError` subclasses.
    """

    @abc.abstractmethod
    def url(self, key: str = "") -> str:
        """fsspec URL of ``key`` (glob characters pass through), for Dask I/O."""

    @property
    @abc.abstractmethod
    def storage_options(self) -> dict:
        """fsspec ``storage_options`` that go with :meth:`url`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted. Empty list if none (never NotFound)."""

    @abc.abstractmethod
    def glob(self, pattern: str) -> list[str]:
        """Keys matching a glob pattern, sorted."""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Whole object. Raises NotFound if absent."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace an object atomically (readers see old or new, never partial)."""

    @abc.abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete keys; absent keys are ignored."""

    def exists(self, key: str) -> bool:
        try:
            self.read_bytes(key)
        except NotFound:
            return False
        return True

    def check(self) -> None:
        """Raise unless the store is reachable and usable. Cheap; used by validate/health."""
        self.list("")


class ClusterConnector(abc.ABC):
    """Gives the daemon a ``distributed.Client`` for one provider.

    ``connect`` may start resources (a LocalCluster) the connector then owns;
    ``close`` releases everything ``connect`` created and is idempotent.
    Connection failures raise :class:`Transient`.
    """

    @abc.abstractmethod
    def connect(self) -> "Client": ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def address(self) -> str | None:
        """Scheduler address once connected, else None."""
