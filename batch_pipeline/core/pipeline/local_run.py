"""``run_batch``: every stage of a batch in this process, one after the other, without Dagster.

What ``batch_job`` does over its ops (plan, process each chunk, aggregate, deliver), with the
same ledger, lease, retry and dead-letter logic: retries sleep in place. For tests, benchmarks
and debugging; the batch's spec comes from ``initialize.prepare_batch``. A batch whose
processor is keyed runs the keyed stage (``core.shuffle``): every chunk shuffled, then every
bucket processed with the states of a ``StateStore``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from batch_pipeline.core.aggregation import BatchResult, aggregate
from batch_pipeline.core.common.errors import ConfigError, RetryableChunkError
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary
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
from batch_pipeline.core.processing.processors.keyed import KeyedProcessor
from batch_pipeline.core.shuffle import attempt_bucket, attempt_partition, plan_buckets
from batch_pipeline.core.shuffle.stage import release_states
from batch_pipeline.core.stores.state import StateStore
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
    state_store: StateStore | None = None,
    secrets: Mapping[str, str] | None = None,
) -> LocalRun:
    """Every stage in order, in this process (tests, benchmarks, debugging). Uses an in-memory
    ledger unless one is given. Delivery happens unless the batch failed. Holds the batch's
    lease throughout (``holder``: default a new uuid; ``lease``: default 60 s, renewed every
    10 s), with a heartbeat, and gives it back at the end; another run of the batch meanwhile
    is refused (BatchBusyError). ``kafka_security``: a Kafka target's SASL/TLS settings.
    ``state_store``: where a keyed processor's states are (ConfigError when the processor is
    keyed and there is none); ``secrets``: the values of its ``secret_names``."""
    processor = get_processor(spec.processor, spec.processor_options, spec.processor_modules)
    keyed = isinstance(processor, KeyedProcessor)
    if keyed and state_store is None:
        raise ConfigError(
            f"processor {processor.name!r} is keyed: batch {spec.batch_id} needs a state store "
            "for its keys' states (run_batch's state_store)"
        )
    wanted = processor.store_kind if isinstance(processor, KeyedProcessor) else None
    if wanted is not None and getattr(state_store, "kind", "state") != wanted:
        raise ConfigError(
            f"processor {processor.name!r} keeps its keys in a {wanted} store, and "
            f"{getattr(state_store, 'description', state_store)} is a "
            f"{getattr(state_store, 'kind', 'state')} store: open it with "
            f"open_state_store(url, kind={wanted!r})"
        )
    ledger = ledger or Ledger("sqlite://")
    holder = holder or uuid.uuid4().hex
    settings = lease or LeaseSettings()
    ledger.acquire_lease(spec.batch_id, holder, settings.ttl_seconds)
    try:
        with LeaseKeeper(ledger, spec.batch_id, holder, settings) as keeper:
            plan = plan_or_reuse(storage, spec)
            chunks, _ = select_chunks(ledger, storage, spec, plan, holder)

            def sqs() -> Any:  # the SQS client, as the ops' resource gives it
                return sqs_client

            for chunk in chunks:
                if keyed:
                    work = partial(
                        attempt_partition, storage, ledger, spec, chunk, sqs_client=sqs,
                        buckets=plan.buckets, secrets=secrets,
                    )  # fmt: skip
                else:
                    work = partial(
                        attempt_chunk, storage, ledger, spec, chunk, sqs_client=sqs,
                        processor=processor,
                    )  # fmt: skip
                _retrying(keeper, work)
            buckets = None
            if keyed:
                assert state_store is not None
                keeper.check()
                for bucket in plan_buckets(storage, ledger, spec, plan)[0]:
                    work = partial(
                        attempt_bucket, storage, ledger, spec, bucket, state_store,
                        sqs_client=sqs, processor=processor, lease=settings,
                    )  # fmt: skip
                    _retrying(keeper, work)
                release_states(ledger, spec)  # the buckets are done
                buckets = ledger.buckets.chunk_states(spec.batch_id)
            keeper.check()
            batch = ledger.batch(spec.batch_id)
            forced = batch.reason if batch and batch.status == COMPLETED_FORCED else None
            result = aggregate(
                storage, spec, ledger.chunk_states(spec.batch_id), forced=forced, buckets=buckets
            )
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


def _retrying(keeper: LeaseKeeper, attempt: Callable[[int], ChunkSummary]) -> ChunkSummary:
    """``attempt(retry_number)`` until it does not ask for a retry, sleeping its delay between
    (as Dagster's RetryRequested would), the lease checked before each attempt."""
    retry_number = 0
    while True:
        keeper.check()
        try:
            return attempt(retry_number)
        except RetryableChunkError as exc:
            time.sleep(exc.delay)
            retry_number += 1
