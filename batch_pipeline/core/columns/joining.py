"""Joining types: the narrowest type two columns' types both fit in without changing a value.

Equal types stay; null joins anything; ints with float64 give float64 (unless an int is not
exact as a float: ``NotExact``, and the column is text); objects join field by field, arrays
item by item; anything else that disagrees becomes text.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa


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
