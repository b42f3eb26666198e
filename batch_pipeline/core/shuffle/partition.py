"""Stage 1 of a keyed batch: a chunk's records, read and conformed as for any chunk, sent to the
buckets of their keys instead of a processor (``partition_chunk``; ``attempt_partition`` records
the attempt in the chunk's ledger row, as ``attempt_chunk`` does).

Each bucket that gets records from the chunk gets one Parquet part,
``{batch}/shuffle/bucket-{b:05d}/chunk-{c:05d}.parquet``, written atomically: the records in
input order, every column as conformed, plus three columns at the end (whatever their names,
``PROVENANCE`` unless the data has such a column): the chunk, the record's index in it and
its line, so that a bucket's rejected records name their chunk, record and line as a chunk's
do. The same chunk writes the same parts, so a re-run replaces them and never leaves a mix.
Before the hash, the processor's ``prepare`` sees the chunk's records (``KeyedProcessor.prepare``:
by default it keeps them as they are): the records it rejects, and those that did not parse,
are the chunk's own rejects (``rejected/chunk-NNNNN.parquet``), as in a batch of one stage; the
records it keeps, as it rewrote them, are what the buckets get. It must account for each record
once, in input order, else the chunk fails with a ProcessorError before anything is written.
The summary's ``shuffled`` says how many records went to each bucket
(``records_out`` is their sum): the buckets check they read exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from batch_pipeline.core.common.errors import ConfigError, ProcessorError
from batch_pipeline.core.common.models import BatchSpec, BucketPlan, Chunk, ChunkSummary
from batch_pipeline.core.inputs.readers import ChunkData
from batch_pipeline.core.ledger import Ledger, chunk_fingerprint
from batch_pipeline.core.planning import bucket_of, planned_buckets
from batch_pipeline.core.processing.attempts import record_attempt
from batch_pipeline.core.processing.processors import Processor, ProcessResult, get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedContext, KeyedProcessor
from batch_pipeline.core.processing.run import (
    PeakRss,
    processor_errors,
    read_conformed,
    rejected_table,
    rejection_reasons,
    write_rejected,
)
from batch_pipeline.core.stores.storage import Storage

PROVENANCE = ("_shuffle_chunk", "_shuffle_record", "_shuffle_line")


def partition_chunk(
    storage: Storage,
    spec: BatchSpec,
    chunk: Chunk,
    buckets: BucketPlan | None = None,
    schema: pa.Schema | None = None,
    secrets: Mapping[str, str] | None = None,
) -> ChunkSummary:
    """Send one chunk's records to their buckets: read, conform, prepare, hash the key, write a
    part per bucket that gets records, and the chunk's rejects. ``buckets``: by default the
    plan's (``plan.json``); ``schema`` as for ``run_chunk``; ``secrets`` the values of the
    processor's ``secret_names``. Idempotent."""
    buckets = buckets or planned_buckets(storage, spec)
    if buckets is None:
        raise ConfigError(
            f"{chunk.describe()}: batch {spec.batch_id}'s plan has no buckets, so its processor "
            f"{spec.processor!r} is not keyed, or plan.json is not this batch's: plan it again"
        )
    processor = get_processor(spec.processor, spec.processor_options, spec.processor_modules)
    started = time.perf_counter()
    with PeakRss() as memory:
        data = read_conformed(storage, spec, chunk, schema)
        prepared, kept = _prepare(processor, spec, chunk, data, secrets or {})
        table = prepared.valid
        n = table.num_rows
        if buckets.key_column in table.column_names:
            ids = bucket_of(table.column(buckets.key_column), buckets.count)
        else:  # no key in this chunk (a file of a set without it): null keys, bucket 0
            ids = np.zeros(n, dtype=np.int64)
        records = kept if data.records is None else np.asarray(data.records)[kept]
        table = _with_provenance(table, chunk.index, records, data.lines(records))
        order = np.argsort(ids, kind="stable")  # by bucket, input order within each
        bounds = np.searchsorted(ids[order], np.arange(buckets.count + 1))
        shuffled = np.diff(bounds).astype(int).tolist()
        for bucket, count in enumerate(shuffled):
            if count:
                part = table.take(pa.array(order[bounds[bucket] : bounds[bucket + 1]]))
                storage.write_parquet(part, spec.shuffle_part_uri(bucket, chunk.index))
        rejected = rejected_table(data, prepared.rejected, prepared.reasons, chunk)
        rejected_uri = write_rejected(storage, rejected, spec.rejected_uri(chunk.index))
    return ChunkSummary(
        index=chunk.index,
        key=chunk.key,
        count=chunk.chunks_in_plan,
        records_in=data.records_in,
        records_out=n,
        records_rejected=rejected.num_rows,
        bytes_read=data.bytes_read,
        seconds=round(time.perf_counter() - started, 6),
        peak_rss_bytes=memory.peak,
        valid_uri=None,
        rejected_uri=rejected_uri,
        rejection_reasons=rejection_reasons(rejected),
        shuffled=shuffled,
        counts=dict(prepared.counts),
    )


def _prepare(
    processor: Processor,
    spec: BatchSpec,
    chunk: Chunk,
    data: ChunkData,
    secrets: Mapping[str, str],
) -> tuple[ProcessResult, np.ndarray]:
    """The keyed processor's ``prepare`` on the chunk's records, checked: the result, and the
    row of each kept record in the chunk's table (ascending)."""
    table = data.table
    if not isinstance(processor, KeyedProcessor):
        return ProcessResult.keep_all(table), np.arange(table.num_rows)
    context = KeyedContext(spec.batch_id, spec.source.uri, secrets=secrets)
    with processor_errors(processor, chunk.describe()):
        result = processor.prepare(table, context)
    n, rejected = table.num_rows, np.asarray(result.rejected, dtype=np.int64)
    problem = None
    if len(result.reasons) != rejected.size:
        problem = f"{rejected.size} rejected record(s) with {len(result.reasons)} reason(s)"
    elif rejected.size and (
        rejected.min() < 0 or rejected.max() >= n or np.any(np.diff(rejected) <= 0)
    ):
        problem = f"rejected indices not ascending, unique and within 0..{n - 1}"
    elif result.valid.num_rows + rejected.size != n:
        problem = f"{n} in, {result.valid.num_rows} kept + {rejected.size} rejected"
    if problem:
        raise ProcessorError(
            f"processor {processor.name!r} lost or invented records while preparing "
            f"{chunk.describe()}: {problem}; nothing of this chunk was written"
        )
    keep = np.ones(n, dtype=bool)
    keep[rejected] = False
    return result, np.flatnonzero(keep)


def attempt_partition(
    storage: Storage,
    ledger: Ledger,
    spec: BatchSpec,
    chunk: Chunk,
    retry_number: int = 0,
    sqs_client: Callable[[], Any] | None = None,
    buckets: BucketPlan | None = None,
    secrets: Mapping[str, str] | None = None,
) -> ChunkSummary:
    """One recorded attempt at ``partition_chunk`` in the chunk's ledger row: success, a retry
    (``RetryableChunkError``) or a dead letter, as ``attempt_chunk``."""
    return record_attempt(
        storage,
        ledger,
        spec,
        chunk,
        chunk.chunks_in_plan,
        lambda: partition_chunk(storage, spec, chunk, buckets, secrets=secrets),
        chunk_fingerprint(spec, chunk),
        retry_number,
        sqs_client,
    )


def _with_provenance(
    table: pa.Table, chunk: int, records: np.ndarray, lines: np.ndarray | None
) -> pa.Table:
    """``table`` with the chunk, record index and line (null: unknown) of each row appended."""
    n = table.num_rows
    if lines is None:
        line = pa.nulls(n, pa.int64())
    else:  # a negative line is an unknown one (a file set's file whose lines are not known)
        values = np.asarray(lines, dtype=np.int64)
        line = pa.array(values, mask=values < 0)
    columns = [
        pa.array(np.full(n, chunk, dtype=np.int64)),
        pa.array(records.astype(np.int64)),
        line,
    ]
    for name, column in zip(_free_names(table.column_names), columns, strict=True):
        table = table.append_column(name, column)
    return table


def _free_names(names: list[str]) -> list[str]:
    """``PROVENANCE``, each with a suffix where the data has a column of that name."""
    used, free = set(names), []
    for name in PROVENANCE:
        candidate, suffix = name, 2
        while candidate in used:
            candidate, suffix = f"{name}_{suffix}", suffix + 1
        used.add(candidate)
        free.append(candidate)
    return free
