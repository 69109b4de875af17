"""YAML loading that remembers where every key came from.

``load_yaml`` returns the plain data plus a :class:`SourceMap` from key paths
(``("jobs", 0, "schedule", "expr")``) to 1-based line numbers, so that errors
found later (by pydantic, or by semantic checks) can name the line.
``${VAR}`` and ``${VAR:-default}`` references in string scalars are expanded
from the environment; an undefined variable without a default is an error.

The loader is bounded, so a hostile or broken file costs neither memory nor a
traceback: at most :data:`MAX_BYTES` of text, :data:`MAX_DEPTH` levels of nesting,
and :data:`MAX_NODES` nodes once aliases are expanded (a "billion laughs" file of
1.4 KB expands to 10^9); each limit ends in a :class:`ConfigError` that names it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from skyfeast.scheduler.errors import ConfigError, Problem

Path_ = tuple[str | int, ...]
# libyaml's loader is ~10x faster (a 10,000-job config parses in about a second); same marks
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 2_000_000  # a 10,000-job config has a few hundred thousand


class _Limit(Exception):
    """A bound of the loader was passed; the message says which."""

    def __init__(self, line: int | None, path: Path_, message: str):
        super().__init__(message)
        self.line, self.path = line, path


@dataclass
class SourceMap:
    """Key path → line number for one YAML document."""

    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    # scalar values held directly by each mapping (tells discriminator tags from keys)
    scalars: dict[Path_, set[str]] = field(default_factory=dict)

    def line_for(self, loc: Sequence[Any]) -> tuple[int | None, str]:
        """Best line for a (possibly pydantic) location, and the cleaned key path.

        Elements of ``loc`` that do not exist in the document (pydantic inserts
        discriminator tags and validator names) are skipped, so the result is
        the deepest real key that the location goes through.  A registered tag
        that is also a real key (``model`` in a ``kind: model`` job, ``job`` in
        a ``type: job`` source) is taken as the tag when the mapping holds that
        discriminator value and the rest of ``loc`` does not go through the key;
        at most one tag is skipped per mapping, as pydantic inserts one.
        """
        real: list[str | int] = []
        line = self.lines.get((), None)
        tagged: set[Path_] = set()
        for i, elem in enumerate(loc):
            here = tuple(real)
            candidate = (*here, elem)
            exists = candidate in self.lines
            if isinstance(elem, str) and _looks_like_tag(elem):
                if "[" in elem:
                    continue
                if here not in tagged:
                    nxt = loc[i + 1] if i + 1 < len(loc) else None
                    through = nxt is None or (*candidate, nxt) in self.lines
                    if not exists or (elem in self.scalars.get(here, ()) and not through):
                        tagged.add(here)
                        continue
            if exists:
                real.append(elem)
                line = self.lines[candidate]
            elif isinstance(elem, str):
                # a missing key: report it under its parent's line
                real.append(elem)
        return line, format_path(real)

    def problem(self, loc: Sequence[Any], message: str) -> Problem:
        line, path = self.line_for(loc)
        return Problem(self.file, line, path, message)


def _looks_like_tag(elem: str) -> bool:
    # pydantic adds tags such as "feature", "local", "function-after[...]"
    return "[" in elem or elem in _TAGS


_TAGS: set[str] = set()


def register_tags(*tags: str) -> None:
    """Declare discriminator values that pydantic inserts into error locations."""
    _TAGS.update(tags)


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse ``text``; return data and its source map. Raises :class:`ConfigError`."""
    smap = SourceMap(file)
    if len(text) > MAX_BYTES:
        raise ConfigError([Problem(file, None, "", f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                                                   "a skyfeast config is far smaller")])
    if not text.strip():
        raise ConfigError([Problem(file, None, "", "file is empty; expected a mapping with 'project', 'providers' and 'jobs'")])
    try:
        try:
            return _load(text, file, smap, _Loader)
        except ConfigError:
            if _Loader is yaml.SafeLoader:
                raise
        # the pure-Python parser words syntax errors better and places them more precisely
        return _load(text, file, SourceMap(file), yaml.SafeLoader)
    except _Limit as exc:  # the same on either parser: no second try
        raise ConfigError([Problem(file, exc.line, _fmt(exc.path), str(exc))]) from None


def _load(text: str, file: str, smap: SourceMap, loader_cls: type) -> tuple[Any, SourceMap]:
    loader = loader_cls(text)
    try:
        problems: list[Problem] = []
        data = _Builder(loader, smap, problems).document()
        if problems:
            raise ConfigError(problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        if "nesting depth" in str(exc.problem):  # libyaml's own bound (1,000): ours, without a second parse
            raise _Limit(line, (), f"nesting is deeper than {MAX_DEPTH} levels") from None
        what = exc.problem or "invalid YAML"
        if exc.context:
            what = f"{exc.context}, {what}"
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError([Problem(file, None, "", "file holds no YAML document")])
    if not isinstance(data, Mapping):
        raise ConfigError([Problem(file, 1, "", f"top level must be a mapping, got {type(data).__name__}")])
    problems = []
    data = _expand_env(data, (), smap, problems)
    if problems:
        raise ConfigError(problems)
    return data, smap


_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass
class _Anchor:
    value: Any = None
    done: bool = False
    size: int = 0  # nodes, aliases expanded
    height: int = 0  # levels below the anchored node
    raw: str | None = None  # a scalar's text (a key's name in the source map)


class _Builder:
    """Python data and its :class:`SourceMap` built straight from the parser's events.

    Same data as ``yaml.safe_load`` (implicit types, explicit scalar tags, anchors shared by
    their aliases, ``<<`` merge keys), without composing a node tree first: for a 10,000-job
    config that tree alone took ~90 MB, about 40 times the text.  Aliases count as the nodes
    they repeat, so the bounds hold as expanded.  The source map holds the keys where they are
    written: a problem inside an alias's content is reported at the line of the alias.  An
    alias of an unfinished anchor (a node containing itself) is a problem."""

    def __init__(self, loader: Any, smap: SourceMap, problems: list[Problem]):
        self.loader, self.smap, self.problems = loader, smap, problems
        self.anchors: dict[str, _Anchor] = {}
        self.count = 0

    def document(self) -> Any:
        ev = self.loader
        ev.get_event()  # StreamStart
        if ev.check_event(yaml.StreamEndEvent):
            return None
        ev.get_event()  # DocumentStart
        value = self.node(())
        ev.get_event()  # DocumentEnd
        if not ev.check_event(yaml.StreamEndEvent):
            nxt = ev.get_event()
            raise yaml.composer.ComposerError("expected a single document in the stream", None,
                                              "but found another document", nxt.start_mark)
        return value

    def _line(self, path: Path_, line: int, *, first: bool = False) -> None:
        if first:
            self.smap.lines.setdefault(path, line)
        else:
            self.smap.lines[path] = line

    def _scalar_of(self, path: Path_, raw: str) -> None:
        self.smap.scalars.setdefault(path, set()).add(raw)

    def _count(self, n: int, line: int, path: Path_) -> None:
        self.count += n
        if self.count > MAX_NODES:
            raise _Limit(line, path, f"the document expands to more than {MAX_NODES:,} nodes "
                         "(YAML aliases repeating large parts?)")

    def node(self, path: Path_) -> Any:
        """Build the next node at ``path``; returns its value."""
        value, _, _ = self._node(path)
        return value

    def _node(self, path: Path_) -> tuple[Any, int, str | None]:
        """(value, height, scalar text or None) of the next node."""
        ev = self.loader.get_event()
        line = ev.start_mark.line + 1
        if isinstance(ev, yaml.AliasEvent):
            return self._alias(ev, path, line)
        self._count(1, line, path)
        if len(path) > MAX_DEPTH:
            raise _Limit(line, path[:3], f"nesting is deeper than {MAX_DEPTH} levels")
        self._line(path, line, first=True)
        anchor = None
        if ev.anchor is not None:
            if ev.anchor in self.anchors:
                raise yaml.composer.ComposerError(f"found duplicate anchor {ev.anchor!r}; first occurrence", None,
                                                  "second occurrence", ev.start_mark)
            anchor = self.anchors[ev.anchor] = _Anchor()
            count0 = self.count
        raw = None
        if isinstance(ev, yaml.ScalarEvent):
            value, height, raw = self._scalar(ev), 0, ev.value
        elif isinstance(ev, yaml.SequenceStartEvent):
            self._collection_tag(ev, _SEQ)
            value, height = self._sequence(path)
        elif isinstance(ev, yaml.MappingStartEvent):
            self._collection_tag(ev, _MAP)
            value, height = self._mapping(path)
        else:  # the parser guarantees a node here
            raise yaml.composer.ComposerError(None, None, f"unexpected {type(ev).__name__}", ev.start_mark)
        if anchor is not None:
            anchor.value, anchor.done, anchor.raw = value, True, raw
            anchor.size, anchor.height = self.count - count0 + 1, height
        return value, height, raw

    def _alias(self, ev: Any, path: Path_, line: int) -> tuple[Any, int, str | None]:
        anchor = self.anchors.get(ev.anchor)
        if anchor is None:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {ev.anchor!r}", ev.start_mark)
        if not anchor.done:  # an alias to one of its own ancestors
            self.problems.append(Problem(self.smap.file, line, _fmt(path),
                                         "recursive YAML alias: a node cannot contain itself"))
            return None, 0, None
        self._count(anchor.size, line, path)
        if len(path) + anchor.height > MAX_DEPTH:
            raise _Limit(line, path[:3], f"nesting is deeper than {MAX_DEPTH} levels")
        self._line(path, line, first=True)
        return anchor.value, anchor.height, anchor.raw

    def _collection_tag(self, ev: Any, want: str) -> None:
        if ev.tag not in (None, "!", want):
            raise yaml.constructor.ConstructorError(None, None, f"unsupported tag {ev.tag!r} here", ev.start_mark)

    def _scalar(self, ev: Any) -> Any:
        loader = self.loader
        tag = ev.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, ev.value, ev.implicit)
            if tag == "tag:yaml.org,2002:value":  # a plain "=": PyYAML's constructor reads it as a string
                tag = "tag:yaml.org,2002:str"
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, style=ev.style)
        construct = loader.yaml_constructors.get(tag) or loader.yaml_constructors[None]
        value = construct(loader, node)
        if hasattr(value, "__next__"):  # a collection's constructor given a scalar (e.g. !!map "x")
            raise yaml.constructor.ConstructorError(None, None, f"tag {tag!r} does not fit a scalar",
                                                    ev.start_mark)
        return value

    def _sequence(self, path: Path_) -> tuple[list, int]:
        out: list = []
        height = 0
        while not self.loader.check_event(yaml.SequenceEndEvent):
            child = (*path, len(out))
            self._line(child, self.loader.peek_event().start_mark.line + 1)
            value, h, _ = self._node(child)
            out.append(value)
            height = max(height, h + 1)
        self.loader.get_event()
        return out, height

    def _mapping(self, path: Path_) -> tuple[dict, int]:
        out: dict = {}
        merged: dict = {}
        seen: set[str] = set()
        height = 0
        loader = self.loader
        while not loader.check_event(yaml.MappingEndEvent):
            kev = loader.peek_event()
            kline = kev.start_mark.line + 1
            if isinstance(kev, yaml.AliasEvent):
                anchor = self.anchors.get(kev.anchor)
                name = anchor.raw if anchor is not None and anchor.done else None
            else:
                name = kev.value if isinstance(kev, yaml.ScalarEvent) else None
            if name is None:
                raise yaml.constructor.ConstructorError(None, None, "mapping keys must be plain scalars",
                                                        kev.start_mark)
            merge = isinstance(kev, yaml.ScalarEvent) and kev.tag is None and \
                loader.resolve(yaml.ScalarNode, kev.value, kev.implicit) == _MERGE
            if merge:
                loader.get_event()
                self._count(1, kline, path)
                key = None
            else:
                key, _, _ = self._node((*path, name))  # the key node, at its own path, as before
            if name in seen:
                self.problems.append(Problem(self.smap.file, kline, _fmt((*path, name)), "duplicate key"))
            seen.add(name)
            child = (*path, name)
            self._line(child, kline)
            vev = loader.peek_event()
            if isinstance(vev, yaml.ScalarEvent):
                self._scalar_of(path, vev.value)
            elif isinstance(vev, yaml.AliasEvent):
                anchor = self.anchors.get(vev.anchor)
                if anchor is not None and anchor.done and anchor.raw is not None:
                    self._scalar_of(path, anchor.raw)
            value, h, _ = self._node(child)
            height = max(height, h + 1)
            if merge:
                for m in (value if isinstance(value, list) else [value])[::-1]:
                    if not isinstance(m, dict):
                        raise yaml.constructor.ConstructorError(
                            None, None, "a merge key (<<) takes a mapping or a list of mappings", vev.start_mark)
                    merged.update(m)
                continue
            try:
                out[key] = value
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, f"unhashable key {name!r}",
                                                        kev.start_mark) from None
        loader.get_event()
        return ({**merged, **out} if merged else out), height


def _fmt(path: Path_) -> str:
    return format_path(path)


def _expand_env(value: Any, path: Path_, smap: SourceMap, problems: list[Problem]) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if default is not None and not value:
                return default  # shell semantics: ${VAR:-d} also replaces an empty VAR
            if value is not None:
                return value
            problems.append(smap.problem(path, f"environment variable ${{{name}}} is not set"))
            return m.group(0)

        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), smap, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), smap, problems) for i, v in enumerate(value)]
    return value
