"""Run one chunk: read its slice, process it, write valid and rejected records, summarise.

``run_chunk`` is the work of one ``process_chunk`` step; ``attempts.attempt_chunk`` wraps it
with the ledger, retries and dead letters, and ``processors`` are what it calls on the records.

Outputs go to deterministic paths named by batch id and chunk index, written atomically, so a
re-run of a chunk replaces its outputs and never leaves a mix of two runs. Before writing
anything, the runner checks that the reader gave the records the plan counted (when it counted
them exactly, see ``Chunk.expected_records``) and that the processor accounted for every record
(records in = out + rejected).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.columns import conform
from batch_pipeline.core.common.errors import ConfigError, ConservationError, ProcessorError
from batch_pipeline.core.common.models import BatchSpec, Chunk, ChunkSummary
from batch_pipeline.core.inputs.filesets import read_file_set_chunk
from batch_pipeline.core.inputs.readers import ChunkData, check_unchanged, read_chunk
from batch_pipeline.core.planning import plan_schema
from batch_pipeline.core.processing.processors import Processor, ProcessResult, get_processor
from batch_pipeline.core.processing.slices import run_slices, sliceable
from batch_pipeline.core.stores.storage import Storage

REJECT_META = ("_reason", "_chunk", "_record", "_line", "_raw")


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def run_chunk(
    storage: Storage,
    spec: BatchSpec,
    chunk: Chunk,
    processor: Processor | None = None,
    schema: pa.Schema | None = None,
) -> ChunkSummary:
    """Run one chunk in a step: read, process, write, summarise. Idempotent: the same chunk
    writes the same files. Raises ChunkReadError / ProcessorError / ConservationError naming
    the chunk. The records are conformed to the batch's ``schema`` (by default the one in
    ``plan.json``) before the processor sees them (see ``columns.conform``)."""
    processor = processor or get_processor(
        spec.processor, spec.processor_options, spec.processor_modules
    )
    started = time.perf_counter()
    valid_uri, rejected_uri = spec.valid_uri(chunk.index), spec.rejected_uri(chunk.index)
    with PeakRss() as memory:
        if sliceable(spec, chunk, processor):
            check_unchanged(storage, spec.source, chunk)
            sliced = run_slices(
                storage, spec, chunk, processor, schema or plan_schema(storage, spec), valid_uri
            )
            records_in, records_out, bytes_read = (
                sliced.records_in,
                sliced.records_out,
                sliced.bytes_read,
            )
            rejected = concat_rejected(sliced.rejected)
            counts = sliced.counts
        else:
            data = read_conformed(storage, spec, chunk, schema)
            with processor_errors(processor, chunk.describe()):
                result = processor.process(data.table)
            check_result(processor, chunk, data.table.num_rows, result)
            rejected = rejected_table(data, result.rejected, result.reasons, chunk)
            storage.write_parquet(result.valid, valid_uri)
            records_in, records_out, bytes_read = (
                data.records_in,
                result.valid.num_rows,
                data.bytes_read,
            )
            counts = dict(result.counts)
        write_rejected(storage, rejected, rejected_uri)
    return ChunkSummary(
        index=chunk.index,
        key=chunk.key,
        count=chunk.chunks_in_plan,
        records_in=records_in,
        records_out=records_out,
        records_rejected=rejected.num_rows,
        bytes_read=bytes_read,
        seconds=round(time.perf_counter() - started, 6),
        peak_rss_bytes=memory.peak,
        valid_uri=valid_uri,
        rejected_uri=rejected_uri if rejected.num_rows else None,
        rejection_reasons=rejection_reasons(rejected),
        counts=counts,
    )


def check_result(processor: Processor, chunk: Chunk, rows_in: int, result: ProcessResult) -> None:
    """The processor accounted for each of the ``rows_in`` records it was given, and its valid
    records have columns (Parquet cannot hold rows without any)."""
    if result.valid.num_rows + len(result.rejected) != rows_in:
        raise ProcessorError(
            f"processor {processor.name!r} lost records on {chunk.describe()}: "
            f"{rows_in} in, {result.valid.num_rows} valid + "
            f"{len(result.rejected)} rejected"
        )
    if result.valid.num_rows and not result.valid.num_columns:
        raise ConservationError(
            f"{chunk.describe()}: {result.valid.num_rows:,} valid record(s) with no field at "
            "all (such as {} in JSON); Parquet cannot hold rows without columns, so they "
            "would vanish from the output; nothing of this chunk was written"
        )


def concat_rejected(parts: list[pa.Table]) -> pa.Table:
    """Rejected records of a chunk's slices, in order, as one table (an empty one of just
    ``_reason`` when there are none, as ``rejected_table`` gives), its columns in the order
    ``rejected_table`` gives them: the data's, then ``REJECT_META`` (a slice with only parse
    rejects has no data columns, and the concatenation would put them after its own)."""
    if not parts:
        return pa.table({"_reason": pa.array([], type=pa.string())})
    table = pa.concat_tables(parts, promote_options="permissive")
    data_columns = [c for c in table.column_names if c not in REJECT_META]
    return table.select(data_columns + list(REJECT_META))


@contextmanager
def processor_errors(processor: Processor, where: str) -> Iterator[None]:
    """What a processor raises on a chunk or bucket (``where``), named: a ConfigError (the
    config does not fit this data: never retried) stays one; anything else is a
    ProcessorError."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except Exception as exc:
        raise ProcessorError(f"processor {processor.name!r} failed on {where}: {exc}") from exc


def write_rejected(storage: Storage, rejected: pa.Table, uri: str) -> str | None:
    """The rejected records at ``uri`` (its URI), or no file there when there are none (a
    re-run with no rejects must not keep an earlier run's)."""
    if rejected.num_rows:
        storage.write_parquet(rejected, uri)
        return uri
    storage.delete(uri)
    return None


def read_conformed(
    storage: Storage, spec: BatchSpec, chunk: Chunk, schema: pa.Schema | None = None
) -> ChunkData:
    """The chunk's records read, checked against the plan's count (``check_records_read``)
    and conformed to the batch's ``schema`` (by default the one in ``plan.json``)."""
    if chunk.kind == "objects":
        data = read_file_set_chunk(storage, spec.source, chunk)
    else:
        data = read_chunk(storage, spec.source, chunk)
    check_records_read(chunk, data.records_in)
    data.table = conform(data.table, schema or plan_schema(storage, spec))
    return data


def rejection_reasons(rejected: pa.Table) -> dict[str, int]:
    """How many rejected records have each ``_reason``, the most frequent first."""
    if not rejected.num_rows:
        return {}
    counts = pc.value_counts(rejected.column("_reason").combine_chunks())
    reasons = {c["values"].as_py(): c["counts"].as_py() for c in counts}
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1]))


def check_records_read(chunk: Chunk, records_read: int) -> None:
    """Records read (parsed + rejected by the parser) must be the records the plan counted in
    the chunk, when it counted them (``Chunk.expected_records``): the reader and the planner
    find record boundaries separately, and a disagreement would lose or invent records."""
    expected = chunk.expected_records
    if expected is not None and records_read != expected:
        raise ConservationError(
            f"{chunk.describe()}: read {records_read:,} records (parsed and rejected), the plan "
            f"expected {expected:,}: the reader and the planner disagree about where records "
            "end; nothing of this chunk was written"
        )


def reject_file_names(names: list[str]) -> list[str]:
    """The data's column names as a rejected file has them: a column named like one the
    rejected file adds (``REJECT_META``) is renamed as a repeated header is, with the next
    suffix no other column has (``_reason`` -> ``_reason_2``, or ``_reason_3`` when the data
    has a ``_reason_2``); the others keep their names."""
    used = set(names) | set(REJECT_META)
    renamed = []
    for name in names:
        if name in REJECT_META:
            suffix = 2
            while f"{name}_{suffix}" in used:
                suffix += 1
            name = f"{name}_{suffix}"
            used.add(name)
        renamed.append(name)
    return renamed


def rejected_table(data: ChunkData, rows: np.ndarray, reasons: pa.Array, chunk: Chunk) -> pa.Table:
    """Rejected records with their original fields and ``_reason``, ``_chunk``, ``_record``
    (index in the chunk), ``_line`` (line/row in the source, when known) and ``_raw`` (the
    text of records that did not parse). Ordered as in the input. A field named like one of
    ours is renamed (``reject_file_names``)."""
    tables = []
    if len(rows):
        names = reject_file_names(data.table.column_names)
        taken = data.table.rename_columns(names).take(pa.array(rows, type=pa.int64()))
        records = rows if data.records is None else data.records[rows]
        taken = taken.append_column("_reason", reasons)
        taken = taken.append_column("_record", pa.array(records, type=pa.int64()))
        tables.append(taken)
    if data.rejects is not None and data.rejects.num_rows:
        tables.append(data.rejects)
    if not tables:
        return pa.table({"_reason": pa.array([], type=pa.string())})
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.sort_by("_record")
    record_idx = table.column("_record").to_numpy()
    lines = data.lines(record_idx)
    if lines is None:
        line_array = pa.nulls(table.num_rows, pa.int64())
    else:  # a negative line is an unknown one (a file set's file whose lines are not known)
        lines = np.asarray(lines, dtype=np.int64)
        line_array = pa.array(lines, mask=lines < 0)
    table = table.append_column("_chunk", pa.array(np.full(table.num_rows, chunk.index)))
    table = table.append_column("_line", line_array)
    if "_raw" not in table.column_names:
        table = table.append_column("_raw", pa.nulls(table.num_rows, pa.string()))
    data_columns = [c for c in table.column_names if c not in REJECT_META]
    return table.select(data_columns + list(REJECT_META))
