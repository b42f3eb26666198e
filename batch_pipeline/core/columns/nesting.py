"""Nesting depth as Parquet counts it, and what Parquet cannot store as it is.

Parquet reads a schema at most ``PARQUET_MAX_DEPTH`` levels deep (the record is one level, an
object one more, an array two more, a value one). ``record_depth`` measures a record in those
levels so that readers can reject the records Parquet could write but not read back.
``storable`` turns the columns Parquet cannot store (an object without fields) into JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from batch_pipeline.core.columns.values import array_text

PARQUET_MAX_DEPTH = 100  # pyarrow's default schema depth limit for reading Parquet


def record_depth(record: Any) -> int:
    """How many levels deep Parquet would store ``record`` (a dict): the record itself is one,
    each object one more, each array two more, a value one. No recursion."""
    deepest = 1
    stack: list[tuple[Any, int]] = [(record, 0)]
    while stack:
        value, above = stack.pop()
        if isinstance(value, dict):
            level = above + 1
            stack.extend((v, level) for v in value.values())
            deepest = max(deepest, level + (0 if value else 1))
        elif isinstance(value, list):
            level = above + 2
            stack.extend((v, level) for v in value)
            deepest = max(deepest, level + (0 if value else 1))
        else:
            deepest = max(deepest, above + 1)
    return deepest


def type_depth(kind: pa.DataType) -> int:
    """Levels of an Arrow type in a Parquet schema (counted as ``record_depth`` counts)."""
    deepest = 0
    stack = [(kind, 0)]
    while stack:
        current, above = stack.pop()
        if pa.types.is_struct(current):
            stack.extend((current.field(i).type, above + 1) for i in range(current.num_fields))
            deepest = max(deepest, above + 1 + (0 if current.num_fields else 1))
        elif pa.types.is_map(current):
            stack.extend([(current.key_type, above + 2), (current.item_type, above + 2)])
        elif isinstance(current, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
            stack.append((current.value_type, above + 2))
        else:
            deepest = max(deepest, above + 1)
    return deepest


def schema_depth(schema: pa.Schema) -> int:
    """Levels of a Parquet schema of ``schema``: the root, then its deepest column."""
    return 1 + max((type_depth(f.type) for f in schema), default=0)


def too_deep(depth: int) -> str | None:
    """The reason a record ``depth`` levels deep is rejected, or None when Parquet reads it."""
    if depth <= PARQUET_MAX_DEPTH:
        return None
    return (
        f"nested {depth} levels deep; Parquet reads at most {PARQUET_MAX_DEPTH} (the record "
        "counts one level, an object one, an array two)"
    )


def text_depth(text: bytes) -> int:
    """``record_depth`` of a JSON text, without building it (ijson events, no recursion)."""
    import io

    import ijson

    try:
        return _events_depth(ijson.parse(io.BytesIO(text)))
    except ijson.JSONError:  # yajl stops at an int beyond int64; the Python backend does not
        return _events_depth(ijson.get_backend("python").parse(io.BytesIO(text)))


def _events_depth(events: Iterable[tuple[str, str, Any]]) -> int:
    deepest = 1
    level = 0
    stack: list[list[int]] = []  # [levels the container adds, values in it]
    for _, event, _ in events:
        if event == "map_key":
            continue
        if event in ("end_map", "end_array"):
            step, values = stack.pop()
            if not values:
                deepest = max(deepest, level + 1)
            level -= step
            continue
        if stack:
            stack[-1][1] += 1
        if event in ("start_map", "start_array"):
            step = 1 if event == "start_map" else 2
            level += step
            stack.append([step, 0])
            deepest = max(deepest, level)
        else:
            deepest = max(deepest, level + 1)
    return deepest


def storable(table: pa.Table) -> pa.Table:
    """``table`` with the columns Parquet cannot store as they are (an object without fields,
    ``{}``, anywhere in them) as JSON text."""
    for i, field in enumerate(table.schema):
        if _has_empty_struct(field.type):
            table = table.set_column(i, field.name, array_text(table.column(i)))
    return table


def _has_empty_struct(kind: pa.DataType) -> bool:
    return contains(kind, lambda t: pa.types.is_struct(t) and t.num_fields == 0)


def contains(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``kind`` or a type nested in it passes ``test``."""
    stack = [kind]
    while stack:
        current = stack.pop()
        if test(current):
            return True
        stack.extend(current.field(i).type for i in range(current.num_fields))
    return False
