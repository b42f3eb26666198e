"""``run_batch``: every stage of a batch in this process, one after the other, without Dagster.

What ``batch_job`` does over its ops (plan, process each chunk, aggregate, deliver), with the
same ledger, lease, retry and dead-letter logic: retries sleep in place. For tests, benchmarks
and debugging; the batch's spec comes from ``initialize.prepare_batch``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batch_pipeline.core.aggregation import BatchResult, aggregate
from batch_pipeline.core.common.errors import RetryableChunkError
from batch_pipeline.core.common.models import BatchSpec
from batch_pipeline.core.delivery.deliver import DeliverySummary, deliver_batch, open_sink
from batch_pipeline.core.ledger import (
    COMPLETED_FORCED,
    BatchStatus,
    LeaseKeeper,
    LeaseSettings,
    Ledger,
)
from batch_pipeline.core.planning import plan_or_reuse, select_chunks
from batch_pipeline.core.processing.attempts import attempt_chunk
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.stores.storage import Storage


@dataclass
class LocalRun:
    """What ``run_batch`` did: the batch's spec, its result and its delivery (None: none)."""

    spec: BatchSpec
    result: BatchResult
    delivery: DeliverySummary | None


def run_batch(
    storage: Storage,
    spec: BatchSpec,
    ledger: Ledger | None = None,
    sqs_client: Any = None,
    holder: str | None = None,
    lease: LeaseSettings | None = None,
    kafka_security: Mapping[str, str] | None = None,
) -> LocalRun:
    """Every stage in order, in this process (tests, benchmarks, debugging). Uses an in-memory
    ledger unless one is given. Delivery happens unless the batch failed. Holds the batch's
    lease throughout (``holder``: default a new uuid; ``lease``: default 60 s, renewed every
    10 s), with a heartbeat, and gives it back at the end; another run of the batch meanwhile
    is refused (BatchBusyError). ``kafka_security``: a Kafka target's SASL/TLS settings."""
    ledger = ledger or Ledger("sqlite://")
    holder = holder or uuid.uuid4().hex
    settings = lease or LeaseSettings()
    ledger.acquire_lease(spec.batch_id, holder, settings.ttl_seconds)
    try:
        with LeaseKeeper(ledger, spec.batch_id, holder, settings) as keeper:
            plan = plan_or_reuse(storage, spec)
            chunks, _ = select_chunks(ledger, storage, spec, plan, holder)
            processor = get_processor(
                spec.processor, spec.processor_options, spec.processor_modules
            )
            for chunk in chunks:
                retry_number = 0
                while True:
                    keeper.check()
                    try:
                        attempt_chunk(storage, ledger, spec, chunk, retry_number,
                                      lambda: sqs_client, processor)  # fmt: skip
                        break
                    except RetryableChunkError as exc:
                        time.sleep(exc.delay)
                        retry_number += 1
            keeper.check()
            batch = ledger.batch(spec.batch_id)
            forced = batch.reason if batch and batch.status == COMPLETED_FORCED else None
            result = aggregate(storage, spec, ledger.chunk_states(spec.batch_id), forced=forced)
            ledger.set_batch_status(spec.batch_id, result.status, reason=result.failure)
            sink = (
                open_sink(storage, spec, sqs_client, kafka_security)
                if result.status != BatchStatus.FAILED
                else None
            )
            keeper.check()
            delivered = deliver_batch(storage, ledger, spec, sink, holder) if sink else None
    finally:
        ledger.release_lease(spec.batch_id, holder)
    return LocalRun(spec, result, delivered)
