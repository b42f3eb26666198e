"""Building Arrow tables from Python values, for the readers that cannot stay columnar
(Excel cells, JSON documents, JSON lines that pyarrow's reader refuses).

A column is typed when its values are of one kind (bool, int, float, str, datetime, date,
time, timedelta, Decimal, bytes, objects, arrays) and text otherwise, each value its own text
(``types.value_text``): pyarrow is never left to coerce one kind into another (it would read
45000 among timestamps as 1970-01-01 00:00:00.045, and ``true`` among floats as 1.0). The one
exception: ints among floats make a float64 column when every int is exact as a float."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa

from batch_pipeline.core.types import (
    EXACT_FLOAT_INT,
    INT64_MAX,
    INT64_MIN,
    PARQUET_MAX_DEPTH,
    value_text,
)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dt.datetime):
        return "datetime" if value.tzinfo is None else "other"  # aware ones: their own text
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time" if value.tzinfo is None else "other"
    if isinstance(value, dt.timedelta):
        return "timedelta"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return "other"


_ONE_KIND: dict[str, pa.DataType | None] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "datetime": pa.timestamp("us"),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timedelta": pa.duration("us"),
    "decimal": None,  # inferred: precision and scale from the values
    "bytes": pa.binary(),
}


def column_array(values: Sequence[Any]) -> pa.Array:
    """An Arrow array of ``values``: typed when their kinds agree, else every value its own
    text. Kinds are never coerced into each other, except ints with floats when every int is
    exact as a float. Ints beyond int64, objects whose fields disagree in kind and values
    nested deeper than Parquet reads become text (JSON)."""
    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values))
    target: pa.DataType | None = None
    if kinds == {"int"}:
        if all(INT64_MIN <= v <= INT64_MAX for v in values if v is not None):
            target = pa.int64()
        else:
            return _texts(values)
    elif kinds == {"int", "float"}:
        if all(-EXACT_FLOAT_INT <= v <= EXACT_FLOAT_INT for v in values if type(v) is int):
            target = pa.float64()
        else:
            return _texts(values)
    elif len(kinds) == 1 and kinds <= {"dict", "list"}:
        if not nested_values_agree(values):
            return _texts(values)
    elif len(kinds) == 1 and next(iter(kinds)) in _ONE_KIND:
        target = _ONE_KIND[next(iter(kinds))]
    else:
        return _texts(values)
    try:
        return pa.array(values, type=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return _texts(values)


def _texts(values: Sequence[Any]) -> pa.Array:
    return pa.array([value_text(v) for v in values], type=pa.string())


def nested_values_agree(values: Iterable[Any]) -> bool:
    """Whether objects/arrays can be one Arrow struct/list column without coercing a value:
    at every path the values have one kind (ints with floats only when exact as floats), no
    int beyond int64, no empty object (Parquet cannot store a struct without fields), and
    nothing nested deeper than Parquet reads. Walks every value (no recursion)."""
    kinds: dict[tuple, set[str]] = {}
    big_ints: set[tuple] = set()  # paths holding ints that are not exact as floats
    stack: list[tuple[tuple, Any, int]] = [((), v, 1) for v in values if v is not None]
    while stack:
        path, value, above = stack.pop()  # above: the level of the value's container
        kind = _kind(value)
        level = above + (2 if kind == "list" else 1)
        if kind == "other" or level + (0 if value or kind not in ("dict", "list") else 1) > (
            PARQUET_MAX_DEPTH
        ):
            return False
        kinds.setdefault(path, set()).add(kind)
        if kind == "int":
            if not INT64_MIN <= value <= INT64_MAX:
                return False
            if not -EXACT_FLOAT_INT <= value <= EXACT_FLOAT_INT:
                big_ints.add(path)
        elif kind == "dict":
            if not value:
                return False
            stack.extend(((*path, k), v, level) for k, v in value.items() if v is not None)
        elif kind == "list":
            stack.extend(((*path, None), v, level) for v in value if v is not None)
    for path, found in kinds.items():
        if len(found) > 1 and (not found <= {"int", "float"} or path in big_ints):
            return False
    return True


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
