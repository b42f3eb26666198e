"""Building Arrow tables from Python values, for the readers that cannot stay columnar
(Excel cells, JSON documents, JSON lines that pyarrow's reader refuses).

A column is typed when its values are of one kind (bool, int, float, str, datetime, date,
time, timedelta, Decimal, bytes, objects, arrays) and text otherwise, each value its own text
(``values.value_text``): pyarrow is never left to coerce one kind into another (it would read
45000 among timestamps as 1970-01-01 00:00:00.045, and ``true`` among floats as 1.0). The one
exception: ints among floats make a float64 column when every int is exact as a float."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from batch_pipeline.core.columns.nesting import PARQUET_MAX_DEPTH, record_depth
from batch_pipeline.core.columns.values import EXACT_FLOAT_INT, INT64_MAX, INT64_MIN, value_text


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
    exact as a float; ints beyond int64 are text. Objects make a struct of every key seen, each
    field built by the same rules (so a field whose values disagree is text, not the whole
    object), arrays a list of their items built so; objects nested deeper than Parquet reads
    are text (JSON)."""
    if any(
        isinstance(v, (dict, list)) and record_depth({"": v}) > PARQUET_MAX_DEPTH for v in values
    ):
        return _texts(values)
    return _column(values)


def _column(values: Sequence[Any]) -> pa.Array:
    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return pa.nulls(len(values))
    if kinds == {"dict"}:
        return _struct(values)
    if kinds == {"list"}:
        return _list(values)
    target: pa.DataType | None = None
    if kinds == {"int"}:
        if not all(INT64_MIN <= v <= INT64_MAX for v in values if v is not None):
            return _texts(values)
        target = pa.int64()
    elif kinds == {"int", "float"}:
        if not all(-EXACT_FLOAT_INT <= v <= EXACT_FLOAT_INT for v in values if type(v) is int):
            return _texts(values)
        target = pa.float64()
    elif len(kinds) == 1 and next(iter(kinds)) in _ONE_KIND:
        target = _ONE_KIND[next(iter(kinds))]
    else:
        return _texts(values)
    try:
        return pa.array(values, type=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return _texts(values)


def _struct(values: Sequence[Any]) -> pa.Array:
    keys: dict[str, None] = {}
    for value in values:
        if value is not None:
            keys.update(dict.fromkeys(value))
    if not keys:  # only {}: Parquet cannot store a struct without fields
        return _texts(values)
    children = [_column([None if v is None else v.get(k) for v in values]) for k in keys]
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.StructArray.from_arrays(children, names=[str(k) for k in keys], mask=mask)


def _list(values: Sequence[Any]) -> pa.Array:
    items = [item for value in values if value is not None for item in value]
    lengths = [0 if v is None else len(v) for v in values]
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]), pa.int32())
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.ListArray.from_arrays(offsets, _column(items), mask=mask)


def _texts(values: Sequence[Any]) -> pa.Array:
    return pa.array([value_text(v) for v in values], type=pa.string())


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


def unique_names(raw: Sequence[Any]) -> list[str]:
    """Column names from header cells: trimmed text, ``column_N`` for a blank one (N: its
    position), and a repeated name suffixed with the next number free among all the names
    (``a, a, a_2`` gives ``a, a_2, a_2_2``), so that no two columns share a name."""
    names: list[str] = []
    used: set[str] = set()
    for i, value in enumerate(raw):
        text = "" if value is None else str(value).strip()
        base = text or f"column_{i + 1}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names.append(name)
    return names
