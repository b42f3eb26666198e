from dagster import Failure, OpExecutionContext, op

from batch_pipeline.core.batch import deliver_batch, open_sink
from batch_pipeline.core.delivery.deliver import DeliverySummary
from batch_pipeline.core.delivery.sinks import is_sqs_target
from batch_pipeline.core.models import BatchSpec
from batch_pipeline.core.results import BatchResult
from batch_pipeline.ops.failures import core_failures
from batch_pipeline.resources import SQSResource, StorageResource


@op(
    description="Send the valid records downstream in the seed's message format: a local JSONL "
    "outbox or SQS (batches of 10, failed entries retried).",
)
def deliver(
    context: OpExecutionContext,
    spec: BatchSpec,
    result: BatchResult,
    storage: StorageResource,
    sqs: SQSResource,
) -> DeliverySummary | None:
    store = storage.get_storage()
    with core_failures():
        client = sqs.get_client() if is_sqs_target(spec.delivery.target) else None
        sink = open_sink(store, spec, client)
        if sink is None:
            context.log.info(f"batch {spec.batch_id}: delivery is off")
            return None
        summary = deliver_batch(store, spec, result, sink)
    if summary.records != result.records_out:
        raise Failure(
            f"batch {spec.batch_id}: delivered {summary.records} records, expected "
            f"{result.records_out}"
        )
    context.log.info(
        f"batch {spec.batch_id}: {summary.records:,} records in {summary.messages:,} messages "
        f"to {summary.target} in {summary.seconds:.2f}s"
    )
    context.add_output_metadata(
        {
            "target": summary.target,
            "messages": summary.messages,
            "records_delivered": summary.records,
            "seconds": summary.seconds,
        }
    )
    return summary
