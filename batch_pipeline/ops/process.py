from dagster import MetadataValue, OpExecutionContext, op

from batch_pipeline.core.execution import attempt_chunk
from batch_pipeline.core.models import BatchSpec, Chunk, ChunkSummary
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.resources import LedgerResource, SQSResource, StorageResource


@op(
    retry_policy=RETRY_POLICY,
    description="Read one chunk's slice straight from storage, run the processor on it, write "
    "its valid and rejected records; idempotent. Transient failures are retried with backoff; "
    "a chunk that keeps failing is dead-lettered and the run carries on.",
)
def process_chunk(
    context: OpExecutionContext,
    spec: BatchSpec,
    chunk: Chunk,
    storage: StorageResource,
    ledger: LedgerResource,
    sqs: SQSResource,
) -> ChunkSummary:
    with core_failures(f"{chunk.describe()} failed", spec.retry.max_retries):
        summary = attempt_chunk(
            storage.get_storage(),
            ledger.get_ledger(),
            spec,
            chunk,
            retry_number=context.retry_number,
            sqs_client=sqs.get_client,
        )
    if summary.status != "succeeded":
        context.log.error(
            f"{chunk.describe()}: dead-lettered after {context.retry_number + 1} attempt(s): "
            f"{summary.error}; dead letter at {summary.dead_letter}"
        )
        context.add_output_metadata(
            {
                "chunk": chunk.index,
                "status": summary.status,
                "error": summary.error or "",
                "dead_letter": MetadataValue.path(summary.dead_letter or ""),
            }
        )
        return summary
    rate = summary.records_in / summary.seconds if summary.seconds else 0.0
    context.log.info(
        f"{chunk.describe()}: {summary.records_in:,} in, {summary.records_out:,} out, "
        f"{summary.records_rejected:,} rejected in {summary.seconds:.2f}s "
        f"({rate:,.0f} records/s, peak RSS {summary.peak_rss_bytes / 2**20:,.0f} MiB)"
    )
    context.add_output_metadata(
        {
            "chunk": chunk.index,
            "status": summary.status,
            "records_in": summary.records_in,
            "records_out": summary.records_out,
            "records_rejected": summary.records_rejected,
            "bytes_read": summary.bytes_read,
            "seconds": summary.seconds,
            "records_per_second": round(rate, 1),
            "peak_rss_bytes": summary.peak_rss_bytes,
            "valid": MetadataValue.path(summary.valid_uri or ""),
            "rejection_reasons": MetadataValue.json(summary.rejection_reasons),
        }
    )
    return summary
