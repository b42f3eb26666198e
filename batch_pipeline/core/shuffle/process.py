"""Stage 2 of a keyed batch: one bucket's keys through the keyed processor, with their states
(``run_bucket``, the work of one bucket step).

The bucket's parts are read in chunk order, so its records come in input order, each part
checked against the records its chunk wrote. The states of its keys are loaded in one bulk
``load``; each key starts from ``StoredState.start_for(batch_id)``: the state from before this
batch when the batch already saved one for it (a retry, a resume, a redrive), so that
processing a bucket again gives the same result and applies nothing twice. The processor must
account for every record (valid + rejected = records in, each rejected index valid and given
once) and return states only for the bucket's keys; otherwise the bucket fails with a
ProcessorError naming it, before anything is written. Records whose key no state store keeps
(longer than ``MAX_KEY_BYTES`` in UTF-8, or holding a NUL) are rejected with the reason before
the processor runs, rather than failing the bucket's every key in every retry. Valid and
rejected records are written as a chunk's are (``valid/bucket-NNNNN.parquet``,
``rejected/bucket-NNNNN.parquet`` with ``_reason``, ``_chunk``, ``_record``, ``_line``,
``_raw``), and only then the new states, in one bulk ``save``, each with the state the batch
started from as ``before``.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_pipeline.core.columns import concat_tables
from batch_pipeline.core.common.errors import ConfigError, ConservationError, ProcessorError
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary
from batch_pipeline.core.processing.processors.keyed import (
    KeyedContext,
    KeyedProcessor,
    KeyedResult,
    KeyState,
    key_text,
)
from batch_pipeline.core.processing.run import (
    REJECT_META,
    PeakRss,
    processor_errors,
    reject_file_names,
    rejection_reasons,
    write_rejected,
)
from batch_pipeline.core.shuffle.buckets import Bucket
from batch_pipeline.core.stores.state import MAX_KEY_BYTES, StateStore, StoredState
from batch_pipeline.core.stores.storage import Storage


def state_namespace(processor: KeyedProcessor) -> str:
    """Where a processor's states are kept in a store (``KeyedProcessor.state_namespace``:
    ``running_sum/device``, ``kalman/user_id/weight``)."""
    return processor.state_namespace()


def run_bucket(
    storage: Storage,
    spec: BatchSpec,
    bucket: Bucket,
    processor: KeyedProcessor,
    state_store: StateStore,
    batch_time: float | None = None,
) -> ChunkSummary:
    """Process one bucket: read its parts, load its keys' states, run the processor, check it
    accounted for every record, write valid and rejected records, save the new states.
    Idempotent within a batch (see the module). ``batch_time``: when the batch was first
    registered (``KeyedContext``; by default now). Raises ConservationError (a part lost or
    cut short), ProcessorError (the processor raised or lost records) or ConfigError (among
    others, a store of another kind than the processor's), naming the bucket."""
    kind = getattr(state_store, "kind", "state")
    if kind != processor.store_kind:
        raise ConfigError(
            f"{bucket.describe()}: processor {processor.name!r} keeps its keys in a "
            f"{processor.store_kind} store, and {state_store.description} was opened as a "
            f"{kind} store"
        )
    context = KeyedContext(spec.batch_id, spec.source.uri, batch_time or time.time())
    counts: dict[str, int] = {}
    started = time.perf_counter()
    with PeakRss() as memory:
        table, provenance, bytes_read = _read_parts(storage, bucket)
        n = table.num_rows
        valid_uri = spec.valid_uri(bucket.index, "bucket")
        rejected_uri = spec.rejected_uri(bucket.index, "bucket")
        if n == 0:  # no key hashed here: nothing to process, an empty result
            storage.write_parquet(pa.table({}), valid_uri)
            storage.delete(rejected_uri)
            rejected = _rejected(
                table, provenance, np.empty(0, np.int64), pa.array([], pa.string())
            )
        else:
            namespace = state_namespace(processor)
            # Records whose key no store keeps are rejected here; the processor sees the rest.
            kept, unkept, unkept_reasons = _storable_keys(table, bucket.key_column)
            work = table if not unkept.size else table.take(pa.array(kept))
            keys = _keys(work, bucket.key_column)
            stored = state_store.load(namespace, keys) if keys else {}
            starts = {key: found.start_for(spec.batch_id) for key, found in stored.items()}
            given = {key: state for key, state in starts.items() if state is not None}
            result = _process(processor, bucket, work, given, context)
            counts = dict(result.counts)
            order = _check(processor, bucket, result, work.num_rows, set(keys))
            rows = np.concatenate([kept[np.asarray(result.rejected)[order]], unkept])
            reasons = pa.concat_arrays(
                [result.reasons.take(order).cast(pa.string()), unkept_reasons]
            )
            by_row = np.argsort(rows, kind="stable")
            rejected = _rejected(table, provenance, rows[by_row], reasons.take(by_row))
            storage.write_parquet(result.valid, valid_uri)
            write_rejected(storage, rejected, rejected_uri)
            if result.states:  # only once the bucket's outputs are written
                state_store.save(
                    namespace,
                    {
                        key: StoredState(
                            state=state, batch_id=spec.batch_id, before=starts.get(key)
                        )
                        for key, state in result.states.items()
                    },
                )
    return ChunkSummary(
        index=bucket.index,
        key=bucket.key,
        count=bucket.buckets_in_plan,
        records_in=n,
        records_out=n - rejected.num_rows,
        records_rejected=rejected.num_rows,
        bytes_read=bytes_read,
        seconds=round(time.perf_counter() - started, 6),
        peak_rss_bytes=memory.peak,
        valid_uri=valid_uri,
        rejected_uri=rejected_uri if rejected.num_rows else None,
        rejection_reasons=rejection_reasons(rejected),
        state_store=state_store.description,
        counts=counts,
    )


def _read_parts(storage: Storage, bucket: Bucket) -> tuple[pa.Table, pa.Table, int]:
    """The bucket's records in input order (its data columns) and their provenance (chunk,
    record, line), and the bytes read. Each part must hold the records its chunk wrote."""
    tables, read = [], 0
    for uri, expected in zip(bucket.parts, bucket.records, strict=True):
        try:
            with storage.open_input_file(uri) as f:
                read += f.size()
                part = pq.read_table(f)
        except FileNotFoundError as exc:
            raise ConservationError(
                f"{bucket.describe()}: its shuffle part {uri} is gone; nothing of this bucket "
                "was written: run the batch again (its chunk is shuffled again)"
            ) from exc
        if part.num_rows != expected:
            raise ConservationError(
                f"{bucket.describe()}: {uri} holds {part.num_rows:,} records, its chunk wrote "
                f"{expected:,}; nothing of this bucket was written"
            )
        tables.append(part)
    if not tables:
        empty = pa.table({name: pa.array([], pa.int64()) for name in ("c", "r", "l")})
        return pa.table({}), empty, 0
    data = concat_tables([t.select(range(t.num_columns - 3)) for t in tables])
    provenance = pa.concat_tables(
        [t.select(range(t.num_columns - 3, t.num_columns)).rename_columns(["c", "r", "l"])
         for t in tables]
    )  # fmt: skip
    return data, provenance, read


def _keys(table: pa.Table, column: str) -> list[str]:
    """The distinct keys of the bucket, as text (what states are stored under), nulls left out."""
    if column not in table.column_names:
        return []
    return pc.unique(key_text(table.column(column))).drop_null().to_pylist()


def _storable_keys(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """The rows whose key a state store can keep (or that have none), the rows whose key it
    cannot (longer than ``MAX_KEY_BYTES`` in UTF-8, or holding a NUL), and their reasons."""
    n = table.num_rows
    if column not in table.column_names:
        return np.arange(n), np.empty(0, np.int64), pa.array([], pa.string())
    keys = key_text(table.column(column))
    sizes = pc.fill_null(pc.binary_length(keys), 0).to_numpy(zero_copy_only=False)
    nul = pc.fill_null(pc.match_substring(keys, "\0"), False).to_numpy(zero_copy_only=False)
    bad = (sizes > MAX_KEY_BYTES) | nul
    unkept = np.flatnonzero(bad)
    reasons = [
        f"{column}: key holds a NUL, which a state store cannot keep"
        if nul[i]
        else f"{column}: key of {int(sizes[i]):,} bytes in UTF-8, more than the "
        f"{MAX_KEY_BYTES:,} a state store keeps"
        for i in unkept.tolist()
    ]
    return np.flatnonzero(~bad), unkept, pa.array(reasons, pa.string())


def _process(
    processor: KeyedProcessor,
    bucket: Bucket,
    table: pa.Table,
    states: dict[str, KeyState],
    context: KeyedContext,
) -> KeyedResult:
    with processor_errors(processor, bucket.describe()):
        return processor.process_bucket(table, states, context)


def _check(
    processor: KeyedProcessor, bucket: Bucket, result: KeyedResult, n: int, keys: set[str]
) -> np.ndarray:
    """Raise ProcessorError naming the bucket unless the result accounts for each of the ``n``
    records once and has states only of the bucket's keys; returns the order that sorts the
    rejected indices."""
    rejected = np.asarray(result.rejected)
    problem = None
    if rejected.size and not np.issubdtype(rejected.dtype, np.integer):
        problem = f"rejected indices of type {rejected.dtype}, not integers"
    elif len(result.reasons) != rejected.size:
        problem = f"{rejected.size} rejected record(s) with {len(result.reasons)} reason(s)"
    elif rejected.size and (rejected.min() < 0 or rejected.max() >= n):
        problem = f"a rejected index outside 0..{n - 1}"
    elif np.unique(rejected).size != rejected.size:
        problem = "a record rejected twice"
    elif result.valid.num_rows + rejected.size != n:
        problem = f"{n} in, {result.valid.num_rows} valid + {rejected.size} rejected"
    elif result.valid.num_rows and not result.valid.num_columns:
        problem = f"{result.valid.num_rows} valid record(s) with no column, which Parquet drops"
    elif unknown := sorted(set(result.states) - keys):
        problem = f"states for {len(unknown)} key(s) not in the bucket, such as {unknown[0]!r}"
    if problem:
        raise ProcessorError(
            f"processor {processor.name!r} lost or invented records on {bucket.describe()}: "
            f"{problem}; nothing of this bucket was written"
        )
    return np.argsort(rejected, kind="stable")


def _rejected(
    table: pa.Table, provenance: pa.Table, rows: np.ndarray, reasons: pa.Array
) -> pa.Table:
    """Rejected records as a chunk's rejected file has them: their fields (renamed where named
    like ours, ``reject_file_names``), then ``_reason``, ``_chunk``, ``_record``, ``_line``,
    ``_raw``, in input order."""
    take = pa.array(rows, type=pa.int64())
    taken = table.rename_columns(reject_file_names(table.column_names)).take(take)
    where = provenance.take(take)
    extra = {
        "_reason": reasons.cast(pa.string()),
        "_chunk": where.column("c"),
        "_record": where.column("r"),
        "_line": where.column("l"),
        "_raw": pa.nulls(len(rows), pa.string()),
    }
    for name in REJECT_META:
        taken = taken.append_column(name, extra[name])
    return taken
