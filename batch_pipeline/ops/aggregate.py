from dagster import AssetMaterialization, Failure, MetadataValue, OpExecutionContext, op

from batch_pipeline.core.ledger import COMPLETED_FORCED
from batch_pipeline.core.models import BatchSpec, ChunkSummary
from batch_pipeline.core.results import BatchResult
from batch_pipeline.core.results import aggregate as aggregate_results
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.resources import LedgerResource, StorageResource

BATCH_RESULTS_ASSET = "batch_results"


@op(
    retry_policy=RETRY_POLICY,
    description="From the ledger: check records in = out + rejected for every chunk and the "
    "run, apply the tolerated failures, write manifest.json, materialize batch_results.",
)
def aggregate(
    context: OpExecutionContext,
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    storage: StorageResource,
    ledger: LedgerResource,
) -> BatchResult:
    book = ledger.get_ledger()
    with core_failures(f"aggregating batch {spec.batch_id} failed"):
        batch = book.batch(spec.batch_id)
        forced = batch.reason if batch and batch.status == COMPLETED_FORCED else None
        result = aggregate_results(
            storage.get_storage(),
            spec,
            book.chunk_states(spec.batch_id),
            run_id=context.run_id,
            forced=forced,
        )
    book.set_batch_status(
        spec.batch_id, result.status, reason=result.failure, run_id=context.run_id
    )
    rate = result.records_in / result.processing_seconds if result.processing_seconds else 0.0
    metadata = {
        "batch_id": spec.batch_id,
        "source": spec.source.uri,
        "status": result.status,
        "records_in": result.records_in,
        "records_out": result.records_out,
        "records_rejected": result.records_rejected,
        "chunks": result.chunks,
        "chunks_succeeded": result.chunks_succeeded,
        "chunks_failed": result.chunks_failed,
        "chunks_processed_this_run": len(summaries),
        "bytes_read": result.bytes_read,
        "processing_seconds": result.processing_seconds,
        "records_per_second": round(rate, 1),
        "peak_rss_bytes": result.peak_rss_bytes,
        "manifest": MetadataValue.path(result.manifest_uri),
        "rejection_reasons": MetadataValue.json(result.rejection_reasons),
        "failed_chunks": MetadataValue.json(result.failed_chunks),
    }
    if result.status == "failed":
        raise Failure(
            description=f"batch {spec.batch_id}: {result.failure}; manifest {result.manifest_uri}",
            metadata=metadata,
            allow_retries=False,
        )
    context.log_event(
        AssetMaterialization(
            asset_key=BATCH_RESULTS_ASSET,
            description=f"Results of batch {spec.batch_id} from {spec.source.uri}",
            metadata=metadata,
        )
    )
    context.log.info(
        f"batch {spec.batch_id} {result.status}: {result.records_in:,} records in = "
        f"{result.records_out:,} out + {result.records_rejected:,} rejected over "
        f"{result.chunks_succeeded} of {result.chunks} chunk(s); manifest {result.manifest_uri}"
    )
    if result.failure or result.failed_chunks:
        context.log.warning(f"batch {spec.batch_id}: failed chunks {result.failed_chunks}")
    context.add_output_metadata(metadata)
    return result
