from dagster import MetadataValue, OpExecutionContext, op

from batch_pipeline.core.models import BatchSpec, Chunk, ChunkSummary
from batch_pipeline.core.processing import run_chunk
from batch_pipeline.ops.failures import core_failures
from batch_pipeline.resources import StorageResource


@op(
    description="Read one chunk's slice straight from storage, run the processor on it, write "
    "its valid and rejected records; idempotent.",
)
def process_chunk(
    context: OpExecutionContext, spec: BatchSpec, chunk: Chunk, storage: StorageResource
) -> ChunkSummary:
    with core_failures():
        summary = run_chunk(storage.get_storage(), spec, chunk)
    rate = summary.records_in / summary.seconds if summary.seconds else 0.0
    context.log.info(
        f"{chunk.describe()}: {summary.records_in:,} in, {summary.records_out:,} out, "
        f"{summary.records_rejected:,} rejected in {summary.seconds:.2f}s "
        f"({rate:,.0f} records/s, peak RSS {summary.peak_rss_bytes / 2**20:,.0f} MiB)"
    )
    context.add_output_metadata(
        {
            "chunk": chunk.index,
            "records_in": summary.records_in,
            "records_out": summary.records_out,
            "records_rejected": summary.records_rejected,
            "bytes_read": summary.bytes_read,
            "seconds": summary.seconds,
            "records_per_second": round(rate, 1),
            "peak_rss_bytes": summary.peak_rss_bytes,
            "valid": MetadataValue.path(summary.valid_uri),
            "rejection_reasons": MetadataValue.json(summary.rejection_reasons),
        }
    )
    return summary
