"""Column types: the text of a value, the join of two types, conforming a table to a schema.

The one rule: a value comes out as it went in. A column is typed when its values agree (all
ints, all timestamps, ...); where they disagree it becomes text, each value its own text
(``value_text``), never a value pyarrow coerced into another kind (a number read as a
timestamp, ``true`` as ``1.0``). Readers build columns from Python values with
``tables.column_array``; the chunks of one batch are brought to one schema with
``join_types``/``conform`` (objects join field by field, arrays item by item, anything that
disagrees becomes text); ``results.aggregate`` rewrites the files whose types a later chunk
widened (``align``).

Modules: ``values`` (the text of a value, ``value_text``/``array_text``), ``nesting`` (the
depth Parquet counts, ``storable``), ``joining`` (``join_types``/``join_schemas``),
``conforming`` (``cast_to``, ``conform``, ``align``, ``concat_tables``), ``schemas`` (the
schema's form in ``plan.json``) and ``tables`` (Arrow tables from Python values).
"""

from batch_pipeline.core.columns.conforming import align, cast_to, concat_tables, conform
from batch_pipeline.core.columns.joining import NotExact, join_schemas, join_types
from batch_pipeline.core.columns.nesting import (
    PARQUET_MAX_DEPTH,
    contains,
    record_depth,
    schema_depth,
    storable,
    text_depth,
    too_deep,
    type_depth,
)
from batch_pipeline.core.columns.schemas import schema_from_json, schema_to_json, string_schema
from batch_pipeline.core.columns.tables import (
    column_array,
    table_from_columns,
    table_from_records,
    unique_names,
)
from batch_pipeline.core.columns.values import (
    EXACT_FLOAT_INT,
    INT64_MAX,
    INT64_MIN,
    array_text,
    json_text,
    value_text,
)

__all__ = [
    "EXACT_FLOAT_INT",
    "INT64_MAX",
    "INT64_MIN",
    "PARQUET_MAX_DEPTH",
    "NotExact",
    "align",
    "array_text",
    "cast_to",
    "column_array",
    "concat_tables",
    "conform",
    "contains",
    "join_schemas",
    "join_types",
    "json_text",
    "record_depth",
    "schema_depth",
    "schema_from_json",
    "schema_to_json",
    "storable",
    "string_schema",
    "table_from_columns",
    "table_from_records",
    "text_depth",
    "too_deep",
    "type_depth",
    "unique_names",
    "value_text",
]
