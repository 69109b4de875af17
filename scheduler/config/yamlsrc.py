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
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_size(node)
        except RecursionError:
            raise _Limit(None, (), f"nesting is deeper than {MAX_DEPTH} levels") from None
        if node is None:
            raise ConfigError([Problem(file, None, "", "file holds no YAML document")])
        problems: list[Problem] = []
        _index(node, (), smap, problems, set(), [0])
        if problems:
            raise ConfigError(problems)
        data = loader.construct_document(node)
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
    if not isinstance(data, Mapping):
        raise ConfigError([Problem(file, 1, "", f"top level must be a mapping, got {type(data).__name__}")])
    problems = []
    data = _expand_env(data, (), smap, problems)
    if problems:
        raise ConfigError(problems)
    return data, smap


def _check_size(root: yaml.Node) -> None:
    """Raise :class:`_Limit` when ``root`` nests deeper than :data:`MAX_DEPTH` or expands to more than
    :data:`MAX_NODES` nodes.  Aliases share node objects, so sizes are memoised per node: the cost is
    that of the text, not of the expansion."""
    size: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _Limit(node.start_mark.line + 1, (), f"nesting is deeper than {MAX_DEPTH} levels")
        key = id(node)
        if key in size:
            return size[key]
        if key in active:
            return 1  # a recursive alias: _index reports it where it is
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(walk(item, depth + 1) for item in node.value)
        else:
            n = 1
        active.discard(key)
        if n > MAX_NODES:
            raise _Limit(node.start_mark.line + 1, (), f"the document expands to more than {MAX_NODES:,} nodes "
                         "(YAML aliases repeating large parts?)")
        size[key] = n
        return n

    walk(root, 0)


def _index(node: yaml.Node, path: Path_, smap: SourceMap, problems: list[Problem], active: set[int],
           count: list[int]) -> None:
    """Record the line of every key path under ``node``; aliases are walked where they are used,
    so ``count`` (one cell) counts nodes as expanded and ``path`` measures the nesting."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _Limit(node.start_mark.line + 1, path, f"the document expands to more than {MAX_NODES:,} nodes "
                     "(YAML aliases repeating large parts?)")
    if len(path) > MAX_DEPTH:
        raise _Limit(node.start_mark.line + 1, path[:3], f"nesting is deeper than {MAX_DEPTH} levels")
    if id(node) in active:  # an alias to one of its own ancestors
        problems.append(Problem(smap.file, node.start_mark.line + 1, _fmt(path),
                                "recursive YAML alias: a node cannot contain itself"))
        return
    smap.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        active.add(id(node))
        seen: set[Any] = set()
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else str(knode.value)
            if key in seen:
                problems.append(
                    Problem(smap.file, knode.start_mark.line + 1, _fmt((*path, key)), "duplicate key")
                )
            seen.add(key)
            child = (*path, key)
            smap.lines[child] = knode.start_mark.line + 1
            if isinstance(vnode, yaml.ScalarNode):
                smap.scalars.setdefault(path, set()).add(vnode.value)
            _index(vnode, child, smap, problems, active, count)
            # a scalar value on its own line (e.g. block style) is reported at the key
        active.discard(id(node))
    elif isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        for i, item in enumerate(node.value):
            child = (*path, i)
            smap.lines[child] = item.start_mark.line + 1
            _index(item, child, smap, problems, active, count)
        active.discard(id(node))


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
