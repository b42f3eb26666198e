"""Building Arrow tables from Python values, for the readers that cannot stay columnar
(Excel cells, JSON documents). Columns are typed when their values agree and become text when
they do not, so no record is dropped for a type clash."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa


def column_array(values: Sequence[Any]) -> pa.Array:
    """An Arrow array of ``values``: inferred type, or strings when the values disagree."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([_as_text(v) for v in values], type=pa.string())


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def table_from_columns(names: Sequence[str], columns: Sequence[Sequence[Any]]) -> pa.Table:
    return pa.Table.from_arrays([column_array(c) for c in columns], names=list(names))


def table_from_records(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A table from dicts: every key of every record becomes a column (first-seen order)."""
    rows = list(records)
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(key, None)
    columns = [[row.get(name) for row in rows] for name in names]
    return table_from_columns(list(names), columns)
