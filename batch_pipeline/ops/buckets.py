"""The keyed stage's ops: ``plan_buckets`` (one dynamic output per bucket to process, once every
chunk has been shuffled; none for a batch whose processor has no key) and ``process_bucket``
(one bucket's keys with their states from the state store)."""

from collections.abc import Iterator

from dagster import DynamicOut, DynamicOutput, OpExecutionContext, op

from batch_pipeline.core.common.models import BatchSpec, ChunkSummary
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.ledger import ChunkStatus
from batch_pipeline.core.planning import plan_or_reuse
from batch_pipeline.core.shuffle.buckets import Bucket
from batch_pipeline.core.shuffle.stage import attempt_bucket, is_keyed, keyed_processor
from batch_pipeline.core.shuffle.stage import plan_buckets as select_buckets
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.ops.leases import keep_lease
from batch_pipeline.ops.metadata import chunk_metadata
from batch_pipeline.resources import (
    LedgerResource,
    SQSResource,
    StateStoreResource,
    StorageResource,
)
from batch_pipeline.settings import lease_settings


@op(
    out=DynamicOut(Bucket),
    retry_policy=RETRY_POLICY,
    description="Keyed processors only (none yielded otherwise): once every chunk sent its "
    "records to their keys' buckets, record the buckets in the ledger and yield one dynamic "
    "output per bucket still to process (a resumed run skips those done).",
)
def plan_buckets(
    context: OpExecutionContext,
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    heavy_summaries: list[ChunkSummary],
    storage: StorageResource,
    ledger: LedgerResource,
) -> Iterator[DynamicOutput[Bucket]]:
    with core_failures(f"planning the buckets of batch {spec.batch_id} failed"):
        if not is_keyed(spec):
            return
        store = storage.get_storage()
        book = ledger.get_ledger()
        with keep_lease(context, book, spec.batch_id):
            plan = plan_or_reuse(store, spec)
            todo, why = select_buckets(store, book, spec, plan)
        context.log.info(shown(f"batch {spec.batch_id}: {why}"))
        for bucket in todo:
            yield DynamicOutput(
                bucket, mapping_key=bucket.key, metadata={"bucket": bucket.describe()}
            )


@op(
    retry_policy=RETRY_POLICY,
    description="Process one bucket: its keys' records in order, each key from its state "
    "before this batch (loaded in bulk from the state store), valid and rejected records "
    "written, the new states saved in bulk. Idempotent and exactly-once per key; a bucket "
    "that keeps failing is dead-lettered.",
)
def process_bucket(
    context: OpExecutionContext,
    spec: BatchSpec,
    bucket: Bucket,
    storage: StorageResource,
    ledger: LedgerResource,
    sqs: SQSResource,
    state_store: StateStoreResource,
) -> ChunkSummary:
    with core_failures(f"{bucket.describe()} failed", spec.retry.max_retries):
        book = ledger.get_ledger()
        states = state_store.open(spec.retry, keyed_processor(spec).store_kind)
        try:
            with keep_lease(context, book, spec.batch_id):
                summary = attempt_bucket(
                    storage.get_storage(),
                    book,
                    spec,
                    bucket,
                    states,
                    retry_number=context.retry_number,
                    sqs_client=sqs.get_client,
                    lease=lease_settings(),
                )
        finally:
            states.close()
        if summary.status != ChunkStatus.SUCCEEDED:
            context.log.error(
                shown(
                    f"{bucket.describe()}: dead-lettered after {context.retry_number + 1} "
                    f"attempt(s): {summary.error}; dead letter at {summary.dead_letter}"
                )
            )
        else:
            context.log.info(
                shown(
                    f"{bucket.describe()}: {summary.records_in:,} in, {summary.records_out:,} "
                    f"out, {summary.records_rejected:,} rejected in {summary.seconds:.2f}s"
                )
            )
        metadata = {k.replace("chunk", "bucket", 1): v for k, v in chunk_metadata(summary).items()}
        context.add_output_metadata({**metadata, "state_store": states.description})
        return summary
