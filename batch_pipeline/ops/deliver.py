from dagster import Failure, OpExecutionContext, RetryRequested, op

from batch_pipeline.core.aggregation import BatchResult
from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.common.models import BatchSpec
from batch_pipeline.core.common.retries import backoff_delay
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.delivery.breaker import CircuitOpenError
from batch_pipeline.core.delivery.deliver import DeliverySummary, deliver_batch, open_sink
from batch_pipeline.core.delivery.sinks import is_sqs_target
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.ops.leases import keep_lease
from batch_pipeline.resources import LedgerResource, SQSResource, StorageResource
from batch_pipeline.settings import kafka_security


@op(
    retry_policy=RETRY_POLICY,
    description="Send the valid records downstream in the seed's message format (a local JSONL "
    "outbox, SQS or Kafka), each message once: the ledger records what the sink accepted.",
)
def deliver(
    context: OpExecutionContext,
    spec: BatchSpec,
    result: BatchResult,
    storage: StorageResource,
    ledger: LedgerResource,
    sqs: SQSResource,
) -> DeliverySummary | None:
    with core_failures(f"delivering batch {spec.batch_id} failed"):
        store = storage.get_storage()
        book = ledger.get_ledger()
        client = sqs.get_client() if is_sqs_target(spec.delivery.target) else None
        sink = open_sink(store, spec, client, kafka_security())
        if sink is None:
            book.release_lease(spec.batch_id, context.run_id)  # the run is done
            context.log.info(shown(f"batch {spec.batch_id}: delivery is off"))
            return None
        try:
            with keep_lease(context, book, spec.batch_id):
                summary = deliver_batch(store, book, spec, sink, context.run_id)
        except DeliveryError as exc:
            if exc.permanent:
                raise
            if context.retry_number >= spec.retry.max_retries:
                raise Failure(
                    description=shown(
                        f"batch {spec.batch_id}: delivery still failing after "
                        f"{context.retry_number + 1} attempt(s): {exc}; run the batch again to "
                        "deliver the rest (nothing accepted is sent twice)"
                    ),
                    allow_retries=False,
                ) from exc
            delay = backoff_delay(context.retry_number, spec.retry)
            if isinstance(exc, CircuitOpenError):  # retrying into an open circuit is pointless
                delay = max(delay, exc.retry_in)
            context.log.warning(shown(f"delivery failed ({exc}); retrying in {delay:.1f}s"))
            raise RetryRequested(max_retries=spec.retry.max_retries, seconds_to_wait=delay) from exc
        book.release_lease(spec.batch_id, context.run_id)  # the run is done
        context.log.info(
            shown(
                f"batch {spec.batch_id}: {summary.records:,} records in {summary.messages:,} "
                f"messages to {summary.target} in {summary.seconds:.2f}s "
                f"({summary.already_delivered_chunks} chunk(s) delivered before)"
            )
        )
        context.add_output_metadata(
            {
                "target": summary.target,
                "messages": summary.messages,
                "records_delivered": summary.records,
                "chunks_delivered": summary.chunks,
                "chunks_delivered_before": summary.already_delivered_chunks,
                "seconds": summary.seconds,
            }
        )
        return summary
