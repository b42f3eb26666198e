"""Conforming tables: columns cast to the join of their types, every value unchanged.

The chunks of one batch are brought to one schema with ``conform`` (a chunk's table against
the batch's schema); ``results.aggregate`` rewrites the files whose types a later chunk widened
(``align``); the tables of one chunk (a file set's files, staged parts) become one with
``concat_tables``. A column widened to text holds each value's own text (``values``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.columns.joining import NotExact, join_schemas, join_types
from batch_pipeline.core.columns.values import EXACT_FLOAT_INT, array_text


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
