"""Loading ``skyfeast.yaml``: the only entry point from a file to a :class:`Config`.

:func:`load_config` parses YAML with line tracking (:mod:`.yamlsrc`), expands
``${ENV}``, validates the models (:mod:`.models`), runs the semantic checks
(:mod:`.checks`) and raises :class:`~skyfeast.scheduler.errors.ConfigError`
naming file, key path and line for every problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from skyfeast.scheduler.config.models import Config
from skyfeast.scheduler.config.yamlsrc import SourceMap, load_yaml
from skyfeast.scheduler.errors import ConfigError, Problem


def _pydantic_problems(exc: ValidationError, smap: SourceMap) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        msg = err["msg"]
        etype = err["type"]
        if etype == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif etype == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        elif etype == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"{ctx.get('discriminator', 'type')} must be one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}"
            loc = (*loc, str(ctx.get("discriminator", "type")).strip("'\""))  # point at the `type`/`kind` key
        elif etype == "union_tag_not_found":
            ctx = err.get("ctx", {})
            msg = f"missing discriminator key {ctx.get('discriminator', 'type')}"
            loc = (*loc, str(ctx.get("discriminator", "type")).strip("'\""))
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append(smap.problem(loc, msg))
    return out


def load_config(path: str | Path, *, check_imports: bool = True, check_feast: bool = True,
                keep_source_map: bool = True,
                meanwhile: Callable[[Config], Callable[[], None]] | None = None) -> Config:
    """Load, validate and cross-check a config file.

    Raises :class:`ConfigError` with every problem found (never a traceback).
    ``check_imports``/``check_feast`` can be disabled by callers that only
    need the shape (for example ``skyfeast schema``).  Without ``keep_source_map``
    the file's key → line map is dropped once the file is checked (the daemon: for
    10,000 jobs it holds ~40 MB, and only later checks of ``validate`` and ``run``
    name lines with it); problems found afterwards name the file and key, without a line.

    ``meanwhile(cfg)`` is called once every check but the slow ones (the jobs' imports, Feast's
    repo) has passed, and starts work that overlaps them (a command reaching its ledger's
    server); the call it returns is made after they pass too, and may raise.
    """
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(file, None, "", "config file not found")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(file, None, "", "is a directory, expected a YAML file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read: {exc}")]) from None
    data, smap = load_yaml(text, file)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, smap)) from None
    cfg._base_dir = p.resolve().parent
    cfg._file = file
    cfg._smap = smap

    from skyfeast.scheduler.config.checks import semantic_problems, slow_problems

    problems = semantic_problems(cfg, smap)
    done = meanwhile(cfg) if meanwhile is not None and not problems else None
    problems += slow_problems(cfg, smap, check_imports=check_imports, check_feast=check_feast)
    if problems:
        raise ConfigError(problems)
    if done is not None:
        done()
    if not keep_source_map:
        cfg._smap = None
    return cfg


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()
