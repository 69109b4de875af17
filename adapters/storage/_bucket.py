"""What the bucket backends (S3, GCS) share: key rules and the store logic; no SDK imports.

A store is rooted at ``bucket/prefix``. Keys are ``/``-separated and relative
to that root; ``..`` segments are resolved the way :class:`LocalStore` resolves
paths, and a key that would leave the root raises :class:`PermissionDenied`.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import fnmatch
import posixpath
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from skyfeast.adapters.base import NotFound, ObjectStore, PermissionDenied
from skyfeast.adapters.waiting import waiting

GLOB_CHARS = "*?["


def clean_prefix(prefix: str) -> str:
    """The store root inside its bucket: ``""`` or ``"a/b/"`` (always slash-terminated)."""
    parts = [p for p in (prefix or "").split("/") if p and p != "."]
    if ".." in parts:
        raise PermissionDenied(f"storage prefix {prefix!r} may not contain '..'")
    return "/".join(parts) + "/" if parts else ""


def clean_key(key: str) -> str:
    """Normalise ``key`` below the root; ``""`` is the root itself.

    A trailing ``/`` is kept (it marks a "directory" prefix for :meth:`list`).
    Raises PermissionDenied if the key is absolute or climbs out of the root.
    """
    if not key:
        return ""
    if key.startswith("/"):
        raise PermissionDenied(f"key {key!r} escapes the storage root")
    norm = posixpath.normpath(key)
    if norm == ".." or norm.startswith("../"):
        raise PermissionDenied(f"key {key!r} escapes the storage root")
    if norm == ".":
        return ""
    return norm + "/" if key.endswith("/") else norm


def is_object_key(key: str) -> bool:
    """False for the root and for ``dir/`` prefixes: neither can name an object we write."""
    return bool(key) and not key.endswith("/")


def literal_prefix(pattern: str) -> str:
    """The part of a glob pattern before its first wildcard (what to list)."""
    cut = min((i for i in (pattern.find(c) for c in GLOB_CHARS) if i >= 0), default=len(pattern))
    return pattern[:cut]


def glob_match(pattern: str, key: str) -> bool:
    """fnmatch per ``/`` segment, so ``*``/``?``/``[..]`` never cross ``/``.

    A ``**`` segment stands for one or more whole segments (what LocalStore's
    pathlib glob plus fnmatch filter yields).
    """
    return _match(pattern.split("/"), key.split("/"))


def _match(pats: list[str], parts: list[str]) -> bool:
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(_match(pats[1:], parts[i:]) for i in range(1, len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and _match(pats[1:], parts[1:])


def clean_pattern(pattern: str) -> str:
    """A glob pattern below the root; ``""`` when it matches nothing (the root)."""
    norm = clean_key(pattern)
    return norm.rstrip("/")


class MissingExtra(ImportError):
    """An optional SDK is not installed; the message names the extra to install."""

    def __init__(self, what: str, extra: str, exc: ImportError):
        super().__init__(f"{what} needs {exc.name or 'an optional package'}: pip install 'skyfeast[{extra}]'")
        self.extra = extra


class BucketStore(ObjectStore):
    """Key semantics shared by bucket backends; subclasses supply the wire calls.

    A subclass implements ``_errors`` (its SDK → neutral error translation) and
    the primitives below, which take *full* object names (prefix included).
    """

    scheme: ClassVar[str]
    list_page_size: int | None = None  # None: the service's default page (1000)
    deadline: float | None = None  # seconds a call takes at most, its retries included (subclasses set it)

    def __init__(self, bucket: str, prefix: str = ""):
        if not bucket or "/" in bucket:
            raise ValueError(f"bucket must be a bare bucket name, got {bucket!r}")
        self.bucket = bucket
        self.prefix = clean_prefix(prefix)
        self._client: Any = None
        self._lock = threading.Lock()

    # A store travels to Dask workers by pickle: its SDK client and lock stay behind, and the
    # copy makes its own client on first use.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The SDK client, made by :meth:`_connect` on first use (the SDKs' clients are thread-safe)."""
        if self._client is None:
            with self._lock, self._errors(f"connect {self.url()}"):
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url()!r})"

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """One call of the store: its SDK errors translated, and a wait past a couple of seconds
        announced with what it waits for and :attr:`deadline` (:func:`~skyfeast.adapters.waiting.waiting`)."""
        with waiting(what, self.deadline), self._errors(what):
            yield

    # ---- subclass hooks
    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new SDK client for this store (called once, under the store's lock)."""

    @abc.abstractmethod
    def _errors(self, what: str) -> AbstractContextManager[None]: ...

    @abc.abstractmethod
    def _list_names(self, full_prefix: str) -> Iterable[str]: ...

    @abc.abstractmethod
    def _get(self, name: str) -> bytes: ...

    @abc.abstractmethod
    def _put(self, name: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def _delete_names(self, names: list[str]) -> None:
        """Delete these objects; absent ones are not an error."""

    # ---- ObjectStore
    def url(self, key: str = "") -> str:
        path = (self.prefix + clean_key(key)).rstrip("/")
        return f"{self.scheme}://{self.bucket}/{path}" if path else f"{self.scheme}://{self.bucket}"

    def list(self, prefix: str = "") -> list[str]:
        return self._list(clean_key(prefix))

    def _list(self, key_prefix: str) -> builtins.list[str]:
        n = len(self.prefix)
        with self._calling(f"list {self.url(key_prefix)}"):
            names = list(self._list_names(self.prefix + key_prefix))
        # "dir/" placeholder objects (console folders) are not keys
        return sorted(name[n:] for name in names if name.startswith(self.prefix) and is_object_key(name[n:]))

    def glob(self, pattern: str) -> builtins.list[str]:
        pat = clean_pattern(pattern)
        if not pat:
            return []
        return [k for k in self._list(literal_prefix(pat)) if glob_match(pat, k)]

    def read_bytes(self, key: str) -> bytes:
        k = clean_key(key)
        if not is_object_key(k):
            raise NotFound(f"read {self.url(k)}: not an object key")
        with self._calling(f"read {self.url(k)}"):
            return self._get(self.prefix + k)

    def write_bytes(self, key: str, data: bytes) -> None:
        k = clean_key(key)
        if not is_object_key(k):
            raise PermissionDenied(f"write {self.url(k)}: {key!r} is not an object key")
        with self._calling(f"write {self.url(k)}"):
            self._put(self.prefix + k, bytes(data))

    def exists(self, key: str) -> bool:
        k = clean_key(key)
        if not is_object_key(k):
            return False
        with self._calling(f"exists {self.url(k)}"):
            return self._exists(self.prefix + k)

    def delete(self, keys: builtins.list[str]) -> None:
        cleaned = [clean_key(k) for k in keys]  # all-or-nothing on escapes
        names = sorted({self.prefix + k for k in cleaned if is_object_key(k)})
        if names:
            with self._calling(f"delete {len(names)} object(s) under {self.url()}"):
                self._delete_names(names)
