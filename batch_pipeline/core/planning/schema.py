"""The batch schema: the column types every chunk of a batch conforms to, learned from a sample
of its source while planning (``batch_schema``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.columns import string_schema
from batch_pipeline.core.common.models import (
    BatchSpec,
    Chunk,
    Plan,
    SheetRange,
    SourceSpec,
    join_uri,
)
from batch_pipeline.core.inputs.staging import staged_schema
from batch_pipeline.core.stores.storage import Storage

SCHEMA_SAMPLE_BYTES = 1 << 20  # JSON lines read from the start of the source
SCHEMA_SAMPLE_ROWS = 1000  # rows read from the start of each worksheet


def batch_schema(storage: Storage, spec: BatchSpec, plan: Plan) -> pa.Schema | None:
    """The column types every chunk of the batch conforms to (``columns.conform``), learned from
    a sample: CSV, every column text (values are read as text); Parquet, the file's schema;
    JSON lines, the first MiB of lines, read as a chunk reads them; JSON documents and gzip
    files, the join of the staged parts' schemas (exact); Excel, the first 1,000 rows of each
    sheet; a file set, its first file with records. A chunk meeting a wider type keeps it, and
    ``results.aggregate`` brings every file to the join."""
    source = spec.source
    if source.is_file_set:
        return _file_set_schema(storage, spec)
    if source.needs_staging:
        parts = [uri for chunk in plan.chunks for uri in chunk.parts]
        return staged_schema(storage, join_uri(spec.output, "_staging"), parts)
    if source.format == "csv":
        return string_schema(source.columns or ())
    if source.format == "parquet":
        with storage.open_input_file(source.uri) as f:
            return pq.read_schema(f).remove_metadata()
    if source.format == "jsonl":
        from batch_pipeline.core.inputs.readers import read_jsonl

        end = min(source.info.size, source.data_start + SCHEMA_SAMPLE_BYTES)
        head = storage.read_range(source.uri, source.data_start, end)
        if end < source.info.size:
            head = head[: head.rfind(b"\n") + 1]  # whole lines only
        sample = Chunk(0, 1, "bytes", source.uri, source.data_start, source.data_start + len(head))
        return read_jsonl(head, sample).table.schema
    return _sheets_schema(storage, source)


def _sheets_schema(storage: Storage, source: SourceSpec) -> pa.Schema | None:
    from batch_pipeline.core.inputs.excel import read_sheet_ranges

    rows = SCHEMA_SAMPLE_ROWS
    ranges = [
        SheetRange(s["name"], s["header_row"], s["header_row"] + 1, s["header_row"] + rows)
        for s in source.layout.get("sheets", [])
        if not s["empty"]
    ]
    if not ranges:
        return None
    return read_sheet_ranges(storage, source.uri, ranges)[0].schema


def _file_set_schema(storage: Storage, spec: BatchSpec) -> pa.Schema | None:
    """The schema of the set's first file with records, read as its chunk reads it (a CSV
    set: every column text, each file naming its own columns)."""
    from batch_pipeline.core.inputs.filesets import read_file_set_chunk

    source = spec.source
    first = next((m for m in source.members if m.size), None)
    if first is None or source.format == "csv":
        return None
    chunk = Chunk(
        0, 1, "objects", source.uri, members=(first.uri,), fingerprints=(first.fingerprint,)
    )
    return read_file_set_chunk(storage, source, chunk).table.schema
