"""A directory as an object store; the embedded default."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from skyfeast.adapters.base import AdapterError, NotFound, ObjectStore, PermissionDenied, QuotaExceeded, Transient


@contextlib.contextmanager
def map_errors(what: str) -> Iterator[None]:
    try:
        yield
    except AdapterError:
        raise
    except (FileNotFoundError, NotADirectoryError) as exc:  # a/b where a is a file: no such object either
        raise NotFound(f"{what}: not found") from exc
    except PermissionError as exc:
        raise PermissionDenied(f"{what}: permission denied") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise QuotaExceeded(f"{what}: {exc.strerror}") from exc
        raise Transient(f"{what}: {exc.strerror or exc}") from exc


class LocalStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve() if key else self.root.resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise PermissionDenied(f"key {key!r} escapes the storage root {self.root}")
        return p

    def url(self, key: str = "") -> str:
        return str(self.root.resolve() / key) if key else str(self.root.resolve())

    @property
    def storage_options(self) -> dict:
        # writers open files directly; let fsspec create the directories
        return {"auto_mkdir": True}

    def list(self, prefix: str = "") -> list[str]:
        # object-store semantics: every key that starts with ``prefix`` ("a/b" matches
        # "a/b.txt", "a/bc/d.txt" and "a/b/c.txt"; "a/b/" only the last)
        base = self.root.resolve()
        start = self._path(prefix)
        with map_errors(f"list {start}"):
            if not base.is_dir():
                return []
            if start == base or prefix.endswith("/"):
                tops = [start] if start.is_dir() else []
            else:
                parent = start.parent
                tops = [p for p in parent.iterdir() if p.name.startswith(start.name)] if parent.is_dir() else []
            found = []
            for p in tops:
                if p.is_dir():
                    found += [q for q in p.rglob("*") if q.is_file()]
                elif p.is_file():
                    found.append(p)
            return sorted(str(p.relative_to(base)) for p in found)

    def glob(self, pattern: str) -> list[str]:
        base = self.root.resolve()
        norm = os.path.normpath(pattern) if pattern else ""
        if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
            raise PermissionDenied(f"pattern {pattern!r} escapes the storage root {self.root}")
        if norm in ("", "."):
            return []
        pattern = norm
        with map_errors(f"glob {pattern}"):
            if not base.exists():
                return []
            return sorted(
                str(p.relative_to(base)) for p in base.glob(pattern) if p.is_file() and fnmatch.fnmatch(str(p.relative_to(base)), pattern)
            )

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with map_errors(f"read {path}"):
            if path.is_dir():
                raise NotFound(f"read {path}: is a directory")
            return path.read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with map_errors(f"write {path}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            with map_errors(f"delete {path}"):
                if path.is_dir():  # a "directory" is not an object: nothing to delete
                    continue
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    path.unlink()

    def check(self) -> None:
        with map_errors(f"check {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionDenied(f"storage root {self.root} is not writable")
