"""Read Parquet chunks: row groups of a Parquet source, or staged parts with their rejects.

A ``row_groups`` chunk reads its row groups of the source; a ``parts`` chunk reads the Parquet
parts ``staging`` wrote, each beside its rejects file, and numbers their records as one chunk.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_pipeline.core.columns import concat_tables
from batch_pipeline.core.common.models import Chunk
from batch_pipeline.core.inputs.readers.chunk_data import ChunkData, offset_lines
from batch_pipeline.core.stores.storage import Storage


def _read_row_groups(storage: Storage, chunk: Chunk) -> ChunkData:
    with storage.open_input_file(chunk.uri) as f:
        parquet = pq.ParquetFile(f)
        groups = list(range(chunk.start, chunk.end))
        table = parquet.read_row_groups(groups, use_threads=True)
        meta = parquet.metadata
        size = sum(
            meta.row_group(g).column(c).total_compressed_size
            for g in groups
            for c in range(meta.num_columns)
        )
    return ChunkData(table, size, offset_lines(chunk.first_line))


def part_records(table: pa.Table, rejects: pa.Table | None) -> tuple[np.ndarray, pa.Table]:
    """The record indices of a staged part's rows, and its rejects with theirs in ``_record``
    (kept distinct from the rows': a part written by another build may number them oddly)."""
    if rejects is None:
        rejects = pa.table({"_record": pa.array([], pa.int64()), "_reason": pa.array(
            [], pa.string()), "_raw": pa.array([], pa.string())})  # fmt: skip
    total = table.num_rows + rejects.num_rows
    bad = np.asarray(rejects.column("_record").to_numpy(), dtype=np.int64)
    if np.unique(bad).size != rejects.num_rows or (bad >= total).any() or (bad < 0).any():
        bad = np.arange(table.num_rows, total, dtype=np.int64)
        rejects = rejects.set_column(0, "_record", pa.array(bad))
    good = np.setdiff1d(np.arange(total, dtype=np.int64), bad)
    return good, rejects


def _read_parts(storage: Storage, chunk: Chunk) -> ChunkData:
    """Staged parts, each with its rejects file (see ``staging``)."""
    pairs: list[tuple[pa.Table, pa.Table | None]] = []
    size = 0
    for uri in chunk.parts:
        with storage.open_input_file(uri) as f:
            size += f.size()
            table = pq.read_table(f)
        with storage.open_input_file(uri.removesuffix(".parquet") + ".rejects.parquet") as f:
            size += f.size()
            pairs.append((table, pq.read_table(f)))
    return combine_parts(pairs, size, chunk.first_line)


def combine_parts(
    pairs: Iterable[tuple[pa.Table, pa.Table | None]], size: int, first_line: int | None
) -> ChunkData:
    """One ChunkData from consecutive staged parts (rows and rejects of each)."""
    tables: list[pa.Table] = []
    rejects: list[pa.Table] = []
    records: list[np.ndarray] = []
    offset = 0
    for table, bad in pairs:
        good, bad = part_records(table, bad)
        tables.append(table)
        records.append(good + offset)
        shifted = pa.array(bad.column("_record").to_numpy() + offset, pa.int64())
        rejects.append(bad.set_column(0, "_record", shifted))
        offset += table.num_rows + bad.num_rows
    table = concat_tables(tables)  # parts staged apart may disagree on a column's type
    all_rejects = pa.concat_tables(rejects) if rejects else None
    return ChunkData(
        table,
        size,
        offset_lines(first_line),
        records=np.concatenate(records) if records else None,
        rejects=all_rejects if all_rejects is not None and all_rejects.num_rows else None,
    )
