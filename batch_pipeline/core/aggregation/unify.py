"""One schema for a batch's Parquet files: ``unify_files`` brings the files its chunks wrote
(each with the types its own records had) to the join of their schemas, so that they read as
one table; ``aggregate`` calls it for the valid and the rejected files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.columns import NotExact, align, cast_to, contains, join_schemas
from batch_pipeline.core.common.errors import ConservationError
from batch_pipeline.core.stores.storage import Storage


def unify_files(storage: Storage, uris: list[str], trailing: tuple[str, ...] = ()) -> list[str]:
    """Bring Parquet files of one batch to one schema, so that they read as one table
    (``pyarrow.dataset``): every column of any file, in first-seen order (``trailing`` ones
    last), each of the join of its types (``columns.join_types``; a file without rows imposes no
    type). Only files whose schema differs are rewritten, atomically, each value cast to the
    joined type (text: its own text; missing columns: null). Returns the rewritten files."""
    footers: list[tuple[str, pa.Schema, int]] = []
    for uri in uris:
        try:
            with storage.open_input_file(uri) as f:
                meta = pq.ParquetFile(f).metadata
        except FileNotFoundError:  # removed since its chunk succeeded: nothing to unify
            continue
        footers.append((uri, meta.schema.to_arrow_schema().remove_metadata(), meta.num_rows))
    if len(footers) < 2:
        return []
    vacuous = [pa.schema([(f.name, pa.null()) for f in s]) for _, s, rows in footers if not rows]
    target = join_schemas([s for _, s, rows in footers if rows] + vacuous)
    names = [n for n in target.names if n not in trailing]
    names += [n for n in trailing if n in target.names]
    target = pa.schema([target.field(n) for n in names])
    target = _text_where_ints_are_not_exact(storage, footers, target)
    rewritten = []
    for uri, schema, rows in footers:
        if schema.equals(target):
            continue
        with storage.open_input_file(uri) as f:
            table = pq.read_table(f)
        aligned = align(table, target)
        if aligned.num_rows != table.num_rows or aligned.num_rows != rows:
            raise ConservationError(
                f"{uri}: {rows} records before its schema was unified, {aligned.num_rows} after"
            )
        storage.write_parquet(aligned, uri)
        rewritten.append(uri)
    return rewritten


def _text_where_ints_are_not_exact(
    storage: Storage, footers: list[tuple[str, pa.Schema, int]], target: pa.Schema
) -> pa.Schema:
    """Ints joined with floats are float64 only when every int is exact as a float: the one
    join that depends on the values, checked by reading the column, only where it applies
    (an int column, or one holding ints, joined to one holding floats)."""
    for i, joined in enumerate(target):
        if not contains(joined.type, pa.types.is_float64):
            continue
        for uri, schema, _ in footers:
            at = schema.get_field_index(joined.name)
            if at < 0 or not contains(schema.field(at).type, pa.types.is_integer):
                continue
            if schema.field(at).type.equals(joined.type):
                continue
            with storage.open_input_file(uri) as f:
                column = pq.read_table(f, columns=[joined.name]).column(0)
            try:
                cast_to(column, joined.type)
            except NotExact:
                target = target.set(i, pa.field(joined.name, pa.string()))
                break
    return target
