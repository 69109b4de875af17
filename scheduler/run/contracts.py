"""Data contracts: what a feature job's input files must hold before its transform runs.

:func:`check_inputs` reads only each file's parquet footer (schema and row-group
statistics), never its rows, and raises :class:`~skyfeast.scheduler.errors.DataError`
(failure class ``data``: not retried, no failover) naming the file, the column and the
problem when

* a file is not readable parquet (truncated, corrupt, not parquet at all);
* a file lacks the join keys or the timestamp column, a column the source declares
  in ``columns``, or a column that the window's other files have (the first file is
  the reference: a day whose file lost a column would otherwise lose its rows silently);
* a column's type differs from the declared one or from the reference file's;
* the statistics count null join keys or timestamps (``1,204 null user_id values``);
* the statistics show timestamps outside what pandas can hold (the year 2300).

Files without statistics pass the null check here; the partition task counts nulls
again in the rows it reads (:func:`null_keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from skyfeast.scheduler.errors import DataError

# spellings users write in `columns:` → pyarrow's names
_TYPE_ALIASES = {"float64": "double", "float32": "float", "str": "string", "utf8": "string", "large_string": "string",
                 "large_utf8": "string", "boolean": "bool"}


@dataclass(frozen=True)
class _Footer:
    url: str
    types: dict[str, str]
    nulls: dict[str, int]
    out_of_range: dict[str, str]
    rows: int = 0


# pandas keeps timestamps in nanoseconds: outside these bounds a value cannot be read at all
_TS_MIN, _TS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


def _type_name(t: str) -> str:
    """A type's name for comparison: aliases resolved, a dictionary by its values, a timestamp without
    its unit (writers differ in ns/us; both read back as the same timestamps)."""
    t = t.strip().lower()
    if t.startswith("dictionary<values="):
        t = t[len("dictionary<values="):].split(",", 1)[0]
    if t.startswith("timestamp["):
        tz = t[len("timestamp["):-1].partition(",")[2].strip()
        return f"timestamp[{tz}]" if tz else "timestamp"
    return _TYPE_ALIASES.get(t, t)


def _footer(url: str, storage_options: dict, watched: Sequence[str], timestamp: str) -> _Footer:
    import fsspec
    import pyarrow.parquet as pq

    nulls: dict[str, int] = {}
    try:
        with fsspec.open(url, "rb", **storage_options) as fh:
            pf = pq.ParquetFile(fh)
            meta = pf.metadata
            schema = meta.schema.to_arrow_schema()
            names = list(schema.names)
            # statistics are per parquet leaf column: a nested column before a key shifts the leaves
            leaves = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
            for col in watched:
                if col not in names:
                    continue
                j, total, known = leaves.get(col), 0, True
                for g in range(meta.num_row_groups if j is not None else 0):
                    stats = meta.row_group(g).column(j).statistics
                    if stats is None or not stats.has_null_count:
                        known = False
                        break
                    total += stats.null_count
                if not known or j is None:  # no statistics (or none found): that column alone is read
                    total = pf.read(columns=[col]).column(0).null_count
                if total:
                    nulls[col] = total
    except FileNotFoundError:
        raise  # the storage, not the file: infrastructure
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"source file {url}: not readable parquet (truncated or corrupt?): {exc}") from None
    types = {f.name: _type_name(str(f.type)) for f in schema}
    out_of_range: dict[str, str] = {}
    j = leaves.get(timestamp)
    if timestamp in types and types[timestamp].startswith("timestamp") and j is not None:
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(j).statistics
            if stats is None or not stats.has_min_max:
                continue
            for edge in (stats.min, stats.max):
                t = pd.Timestamp(edge) if edge is not None else None
                if t is not None and not _TS_MIN <= (t if t.tzinfo else t.tz_localize("UTC")) <= _TS_MAX:
                    out_of_range[timestamp] = str(edge)
    return _Footer(url, types, nulls, out_of_range, meta.num_rows)


def check_inputs(urls: Sequence[str], storage_options: Mapping | None, *, keys: Sequence[str], timestamp: str,
                 declared: Mapping[str, str | None] | None = None, threads: int = 8) -> int:
    """Check every input file's footer against the contract (see the module docstring); raises DataError.
    Returns the files' row count (before any time filter)."""
    required = [*keys, timestamp, *(declared or {})]
    opts = dict(storage_options or {})
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(urls)))) as pool:
        footers = list(pool.map(lambda u: _footer(u, opts, [*keys, timestamp], timestamp), urls))
    if not footers:
        return 0
    reference = footers[0]
    problems: list[str] = []
    for ft in footers:
        missing = [c for c in dict.fromkeys([*required, *reference.types]) if c not in ft.types]
        if missing:
            has = ", ".join(ft.types)
            problems.append(f"source file {ft.url} lacks column(s) {missing} (it has {has})")
        for col, want in (declared or {}).items():
            if want is not None and col in ft.types and ft.types[col] != _type_name(want):
                problems.append(f"source file {ft.url}: column {col!r} is {ft.types[col]}, declared {_type_name(want)}")
        for col, typ in reference.types.items():
            if ft is not reference and col in ft.types and ft.types[col] != typ and col not in (declared or {}):
                problems.append(f"source file {ft.url}: column {col!r} is {ft.types[col]}, but {typ} in {reference.url}")
        for col, n in ft.nulls.items():
            problems.append(f"source file {ft.url}: {n:,} null {col} values")
        for col, edge in ft.out_of_range.items():
            problems.append(f"source file {ft.url}: {col} holds {edge}, outside the years 1677-2262 that "
                            "timestamps can hold")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError("input data breaks its contract: " + "; ".join(problems[:5]) + more)
    return sum(ft.rows for ft in footers)


def null_keys(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, int]:
    """Null counts of ``columns`` in ``frame`` (only the columns that have any)."""
    return {c: n for c in columns if c in frame.columns and (n := int(frame[c].isna().sum()))}


__all__ = ["check_inputs", "null_keys"]
