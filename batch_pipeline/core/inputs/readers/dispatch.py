"""``read_chunk``: read one chunk's slice of its source, by the chunk's kind and format.

A chunk of kind ``bytes`` is one range read (a seek locally, a range GET on S3) handed to the
CSV or JSONL reader; ``row_groups`` and ``parts`` go to the Parquet reader; ``sheets`` to the
Excel reader; ``empty`` is an empty table of the source's columns. Before reading, the object
is checked to still be the version planned.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batch_pipeline.core.common.errors import ChunkReadError, SourceError
from batch_pipeline.core.common.models import Chunk, SourceSpec
from batch_pipeline.core.inputs.excel import read_sheet_ranges
from batch_pipeline.core.inputs.readers.chunk_data import ChunkData, _no_lines
from batch_pipeline.core.inputs.readers.csv_reader import read_csv_bytes
from batch_pipeline.core.inputs.readers.jsonl_reader import read_jsonl
from batch_pipeline.core.inputs.readers.parquet_reader import _read_parts, _read_row_groups
from batch_pipeline.core.stores.storage import Storage


def read_chunk(storage: Storage, source: SourceSpec, chunk: Chunk, check: bool = True) -> ChunkData:
    """Read ``chunk`` of ``source``. Raises ChunkReadError naming the chunk when the slice as a
    whole cannot be read (missing object, not the expected format). ``check``: first make sure
    the object is still the version planned (a caller that just did may skip it)."""
    if check and chunk.kind in ("bytes", "row_groups", "sheets"):
        check_unchanged(storage, source, chunk)
    try:
        if chunk.kind == "empty":
            names = list(source.columns or ())
            table = pa.table({n: pa.array([], type=pa.string()) for n in names})
            return ChunkData(table, 0, _no_lines)
        if chunk.kind == "bytes":
            data = storage.read_range(chunk.uri, chunk.start, chunk.end)
            if len(data) != chunk.end - chunk.start:
                raise ChunkReadError(
                    f"{chunk.describe()}: read {len(data)} bytes, expected "
                    f"{chunk.end - chunk.start}; the object changed after planning"
                )
            if source.format == "csv":
                return read_csv_bytes(data, source, chunk)
            return read_jsonl(data, chunk)
        if chunk.kind == "row_groups":
            return _read_row_groups(storage, chunk)
        if chunk.kind == "parts":
            return _read_parts(storage, chunk)
        if chunk.kind == "sheets":
            table, rows = read_sheet_ranges(storage, chunk.uri, chunk.sheets)
            row_numbers = np.asarray(rows, dtype=np.int64)
            return ChunkData(table, 0, lambda idx: row_numbers[np.asarray(idx, dtype=np.int64)])
    except (ChunkReadError, SourceError):
        raise
    except (OSError, pa.ArrowException) as exc:
        raise ChunkReadError(f"{chunk.describe()}: {exc}") from exc
    raise ChunkReadError(f"{chunk.describe()}: unknown chunk kind {chunk.kind!r}")


def check_unchanged(storage: Storage, source: SourceSpec, chunk: Chunk) -> None:
    """The object is still the version that was planned (its ETag, or size and mtime): a batch
    must not mix two versions of its source. One HEAD (or stat) per chunk."""
    try:
        current = storage.stat(chunk.uri).fingerprint
    except SourceError as exc:  # gone, or no longer readable
        raise SourceError(f"{chunk.describe()}: {exc}") from exc
    except Exception as exc:  # the HEAD itself failed (classify tells transient from permanent)
        raise ChunkReadError(f"{chunk.describe()}: {exc}") from exc
    if current != source.info.fingerprint:
        raise ChunkReadError(
            f"{chunk.describe()}: {chunk.uri} changed after the batch was planned (fingerprint "
            f"{source.info.fingerprint}, now {current}); run the new version as its own batch"
        )
