"""Column types: the text of a value, the join of two types, conforming a table to a schema.

The one rule: a value comes out as it went in. A column is typed when its values agree (all
ints, all timestamps, ...); where they disagree it becomes text, each value its own text
(``value_text``), never a value pyarrow coerced into another kind (a number read as a
timestamp, ``true`` as ``1.0``). Readers build columns from Python values with
``tables.column_array``; the chunks of one batch are brought to one schema with
``join_types``/``conform`` (objects join field by field, arrays item by item, anything that
disagrees becomes text); ``results.aggregate`` rewrites the files whose types a later chunk
widened (``align``).

The text of a value: a string as it is; ``true``/``false``; an int in decimal; a float that
is a whole number within 2**53 as that whole number (``5.0`` as ``5``: JSON does not tell
``5`` from ``5.0``, and an int that met floats in one chunk must keep its text when a later
chunk makes the column text), other floats as Python's ``repr`` (``0.1``, ``1e+20``); a
date, time or timestamp in ISO 8601 (``isoformat()``); a duration as Python prints it
(``1 day, 2:00:00``); a decimal as it is written; an object or array as JSON (UTF-8, nested
values as JSON); bytes as UTF-8 text when they decode, else base64.

Parquet reads a schema at most ``PARQUET_MAX_DEPTH`` levels deep (the record is one level, an
object one more, an array two more, a value one). ``record_depth`` measures a record in those
levels so that readers can reject the records Parquet could write but not read back.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARQUET_MAX_DEPTH = 100  # pyarrow's default schema depth limit for reading Parquet
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_INT = 2**53  # ints up to this magnitude are exact as a float64


# The text of a value ----------------------------------------------------------------------------


def value_text(value: Any) -> str | None:
    """A value's own text (None stays None); see the module docstring."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if _whole(value) else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if hasattr(value, "isoformat") and not isinstance(value, dt.timedelta):
        return value.isoformat()  # pandas' Timestamp (nanoseconds)
    return str(value)  # Decimal, timedelta, anything else


def _whole(value: float) -> bool:
    """A float that is a whole number exactly representable as one (its text drops ``.0``)."""
    return value.is_integer() and abs(value) <= EXACT_FLOAT_INT


def _plain_numbers(value: Any) -> Any:
    """``value`` with its whole floats as ints, at any depth (so JSON text writes ``5``, as
    ``value_text`` does); iterative, for records nested deeper than the recursion limit."""
    if isinstance(value, float):
        return int(value) if _whole(value) else value
    if not isinstance(value, (dict, list, tuple)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, dict):
            copy: Any = dict(item)
            stack.extend((copy, k, v) for k, v in copy.items())
        elif isinstance(item, (list, tuple)):
            copy = list(item)
            stack.extend((copy, i, v) for i, v in enumerate(copy))
        elif isinstance(item, float) and _whole(item):
            copy = int(item)
        else:
            continue
        parent[key] = copy
    return root[0]


def _json_default(value: Any) -> Any:
    return value_text(value)  # a value JSON has no type for (a time, bytes, a decimal)


def json_text(value: Any) -> str:
    """``value`` as JSON text (non-ASCII kept, nested non-JSON values as their text), also when
    it is nested deeper than Python's recursion limit. Whole floats are written as ints."""
    value = _plain_numbers(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except RecursionError:
        return _deep_json_text(value)


def _deep_json_text(value: Any) -> str:
    """json.dumps without recursion (for records nested thousands of levels deep)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            out.append(item.text)
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Literal("}"))
            for i, (key, val) in reversed(list(enumerate(item.items()))):
                stack.append(val)
                head = json.dumps(str(key), ensure_ascii=False) + ": "
                stack.append(_Literal(head if i == 0 else ", " + head))
        elif isinstance(item, (list, tuple)):
            out.append("[")
            stack.append(_Literal("]"))
            for i, val in reversed(list(enumerate(item))):
                stack.append(val)
                if i:
                    stack.append(_Literal(", "))
        else:
            out.append(json.dumps(item, ensure_ascii=False, default=_json_default))
    return "".join(out)


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def array_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column as text, each value its own text (the same text ``value_text`` gives)."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([array_text(c) for c in column.chunks], pa.string())
    kind = column.type
    if pa.types.is_string(kind):
        return column
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return column.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_dictionary(kind):
        return array_text(column.dictionary_decode())
    if pa.types.is_integer(kind):
        return column.cast(pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "true", "false")
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        # A float32's shortest text is its own (numpy's), not that of the float64 it widens to.
        numbers = column.to_numpy(zero_copy_only=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        texts = [str(n) if ok else None for n, ok in zip(numbers, valid, strict=True)]
        return pa.array(texts, pa.string())
    # Floats (Arrow's cast writes 1.23456789012345e+14, not repr), times, decimals, nested
    # values: the rare path, through Python.
    return pa.array([value_text(v) for v in column.to_pylist()], pa.string())


# Nesting depth ----------------------------------------------------------------------------------


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


# Joining types ----------------------------------------------------------------------------------


class NotExact(ValueError):
    """Ints joined with floats hold one that a float64 cannot hold exactly: the column must be
    text instead (the one join that depends on the values, not only on the types)."""

    def __init__(self, column: str = "") -> None:
        super().__init__(f"column {column} holds ints beyond 2**53 beside floats")
        self.column = column


def join_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The narrowest type both fit in without changing a value: equal types stay; null joins
    anything; ints and float64 give float64 (``cast_to`` refuses an int not exact as a float:
    the column is then text); objects (structs) give an object with every field of both, each
    of the join of its types, and arrays (lists) an array of the join of their items; any other
    pair gives text."""
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if {_numeric(a), _numeric(b)} == {"int", "float"}:
        return pa.float64()
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {f.name: f.type for f in a}
        for f in b:
            fields[f.name] = join_types(fields[f.name], f.type) if f.name in fields else f.type
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(a.value_field.with_type(join_types(a.value_type, b.value_type)))
    return pa.string()


def contains(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``kind`` or a type nested in it passes ``test``."""
    stack = [kind]
    while stack:
        current = stack.pop()
        if test(current):
            return True
        stack.extend(current.field(i).type for i in range(current.num_fields))
    return False


def _numeric(kind: pa.DataType) -> str | None:
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_float64(kind):
        return "float"
    return None


def join_schemas(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """Every column of the schemas, in first-seen order, each of its types joined."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema:
            seen = types.get(field.name)
            types[field.name] = field.type if seen is None else join_types(seen, field.type)
    return pa.schema(list(types.items()))


def cast_to(column: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """``column`` as ``target``, a join of its type (``join_types``), every value unchanged:
    text through ``array_text``, objects and arrays field by field. Raises NotExact for an
    int that a float64 cannot hold exactly."""
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([cast_to(c, target) for c in column.chunks], target)
    kind = column.type
    if kind.equals(target):
        return column
    if pa.types.is_string(target):
        return array_text(column)
    if pa.types.is_null(kind):
        return pa.nulls(len(column), target)
    if pa.types.is_float64(target) and pa.types.is_integer(kind):
        low, high = pc.min_max(column).values()
        if low.is_valid and (low.as_py() < -EXACT_FLOAT_INT or high.as_py() > EXACT_FLOAT_INT):
            raise NotExact()
    if pa.types.is_struct(target) and pa.types.is_struct(kind):
        children = [
            cast_to(column.field(f.name), f.type)
            if kind.get_field_index(f.name) >= 0
            else pa.nulls(len(column), f.type)
            for f in target
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=column.is_null())
    if pa.types.is_list(target) and pa.types.is_list(kind):
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        values = cast_to(column.flatten(), target.value_type)
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=column.is_null())
    return column.cast(target)


def conform(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """A chunk's table against the batch's schema: each column the batch knows takes the join
    of its type and the batch's (a column null in the whole chunk takes the batch's type, ints
    the batch's float64, an object the fields it lacks); a column the batch lacks keeps its
    own; columns the chunk lacks stay absent. Never changes a value."""
    if schema is None:
        return table
    for i, field in enumerate(table.schema):
        at = schema.get_field_index(field.name)
        if at < 0:
            continue
        target = join_types(field.type, schema.field(at).type)
        if not target.equals(field.type):
            try:
                column = cast_to(table.column(i), target)
            except NotExact:
                column = array_text(table.column(i))
            table = table.set_column(i, field.name, column)
    return table


def align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns in its order (missing ones null), each cast
    to its type, a join of the table's (see ``join_schemas``). Raises NotExact naming the
    column whose ints a float64 cannot hold."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            columns.append(cast_to(table.column(field.name), field.type))
        except NotExact as exc:
            raise NotExact(field.name) from exc
    return pa.Table.from_arrays(columns, schema=schema)


def concat_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of one chunk as one: their columns joined (first-seen order, types joined, a
    value of a column widened to text becoming its own text), missing columns null."""
    tables = list(tables)
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    schema = join_schemas(t.schema for t in tables)
    while True:
        try:
            return pa.concat_tables([align(t, schema) for t in tables])
        except NotExact as exc:  # ints beside floats that a float64 cannot hold: text
            at = schema.get_field_index(exc.column)
            schema = schema.set(at, pa.field(exc.column, pa.string()))


# Schemas as text (plan.json) --------------------------------------------------------------------


def schema_to_json(schema: pa.Schema) -> dict[str, Any]:
    """A schema for plan.json: exact (Arrow IPC, base64) and readable (type per column)."""
    data = schema.serialize().to_pybytes()
    return {
        "arrow": base64.b64encode(data).decode("ascii"),
        "columns": {f.name: str(f.type) for f in schema},
    }


def schema_from_json(data: Any) -> pa.Schema | None:
    """The schema ``schema_to_json`` wrote, or None (absent or unreadable: a plan from before
    schemas were planned, which then conforms nothing)."""
    if not isinstance(data, dict) or not isinstance(data.get("arrow"), str):
        return None
    try:
        import pyarrow.ipc as ipc

        return ipc.read_schema(pa.py_buffer(base64.b64decode(data["arrow"])))
    except (ValueError, pa.ArrowException):
        return None


def string_schema(names: Iterable[str]) -> pa.Schema:
    return pa.schema([(n, pa.string()) for n in names])
