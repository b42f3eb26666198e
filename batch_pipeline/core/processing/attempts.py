"""One attempt at a chunk, recorded in the ledger, with the retry-or-dead-letter decision.

``attempt_chunk`` calls ``run.run_chunk`` once, between the ledger's running and finished
states; the op ``process_chunk`` and ``run_batch`` both call it.

The decision is the same under Dagster and without it: a transient failure with retries left
raises RetryableChunkError carrying the backoff delay (the op turns it into Dagster's
``RetryRequested``); a permanent failure, or the last attempt, writes the dead letter and
returns a summary with status ``dead_lettered``, so that the other chunks carry on and
``aggregate`` decides whether the batch tolerates it. ``record_attempt`` is that decision for
any unit of work and its ledger rows: a keyed batch's chunks and buckets use it too
(``core.shuffle``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from batch_pipeline.core.common.errors import RetryableChunkError, classify
from batch_pipeline.core.common.models import BatchSpec, Chunk, ChunkSummary
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.ledger import DEAD_LETTERED, Ledger, LedgerQueries, chunk_fingerprint
from batch_pipeline.core.processing.dead_letters import (
    WorkUnit,
    dead_letter_document,
    send_dead_letter,
    write_dead_letter,
)
from batch_pipeline.core.processing.processors import Processor
from batch_pipeline.core.processing.run import run_chunk
from batch_pipeline.core.stores.storage import Storage

log = logging.getLogger(__name__)


def attempt_chunk(
    storage: Storage,
    ledger: Ledger,
    spec: BatchSpec,
    chunk: Chunk,
    retry_number: int = 0,
    sqs_client: Callable[[], Any] | None = None,
    processor: Processor | None = None,
) -> ChunkSummary:
    """One recorded attempt: ``run_chunk`` once, then success, a retry or a dead letter.
    ``retry_number`` retries were made before this attempt."""
    return record_attempt(
        storage,
        ledger,
        spec,
        chunk,
        chunk.chunks_in_plan,
        lambda: run_chunk(storage, spec, chunk, processor),
        chunk_fingerprint(spec, chunk),
        retry_number,
        sqs_client,
    )


def record_attempt(
    storage: Storage,
    rows: LedgerQueries,
    spec: BatchSpec,
    unit: WorkUnit,
    count: int,
    work: Callable[[], ChunkSummary],
    fingerprint: str,
    retry_number: int = 0,
    sqs_client: Callable[[], Any] | None = None,
) -> ChunkSummary:
    """One attempt at ``unit`` (one of ``count``: a chunk, or a keyed batch's bucket) recorded
    in its ``rows`` of the ledger (``ledger`` or ``ledger.buckets``): ``work()`` once, then
    success (recorded with ``fingerprint``), a retry or a dead letter."""
    started = time.perf_counter()
    before = rows.chunk_state(spec.batch_id, unit.index)
    rows.mark_running(spec.batch_id, unit.index)
    try:
        summary = work()
    except Exception as exc:
        info = classify(exc)
        rows.mark_failed(spec.batch_id, unit.index, info.category, info.message)
        if info.transient and retry_number < spec.retry.max_retries:
            delay = backoff_delay(retry_number, spec.retry)
            raise RetryableChunkError(
                f"{unit.describe()}: {info.category} ({info.message}); retry "
                f"{retry_number + 1} of {spec.retry.max_retries} in {delay:.1f}s",
                info.category,
                delay,
            ) from exc
        document = dead_letter_document(
            spec, unit, info, traceback.format_exc(), attempts=retry_number + 1
        )
        uri = write_dead_letter(storage, spec, unit, document)
        rows.mark_dead_lettered(spec.batch_id, unit.index, info.category, info.message, uri)
        error = f"{info.category}: {info.message}"
        queue = spec.failures.dead_letter_queue
        if queue:
            try:
                client = sqs_client() if sqs_client else None
                if client is None:
                    raise RuntimeError("no SQS client")
                send_dead_letter(client, queue, document)
            except Exception as sent:  # the dead letter is stored; the queue only has a copy
                log.warning("dead letter of %s not sent to %s: %s", unit.key, queue, sent)
                error += f" (its copy to {queue} failed: {sent})"
        return ChunkSummary(
            index=unit.index,
            key=unit.key,
            count=count,
            records_in=0,
            records_out=0,
            records_rejected=0,
            bytes_read=0,
            seconds=round(time.perf_counter() - started, 6),
            peak_rss_bytes=0,
            valid_uri=None,
            rejected_uri=None,
            status=DEAD_LETTERED,
            error=error,
            dead_letter=uri,
        )
    rows.mark_succeeded(spec.batch_id, summary, fingerprint)
    if before is not None and before.dead_letter:
        storage.delete(before.dead_letter)  # redriven: its dead letter no longer applies
    return summary
