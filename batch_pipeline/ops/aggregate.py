from dagster import AssetMaterialization, MetadataValue, OpExecutionContext, op

from batch_pipeline.core.models import BatchSpec, ChunkSummary
from batch_pipeline.core.results import BatchResult
from batch_pipeline.core.results import aggregate as aggregate_results
from batch_pipeline.ops.failures import core_failures
from batch_pipeline.resources import StorageResource

BATCH_RESULTS_ASSET = "batch_results"


@op(
    description="Check records in = out + rejected for every chunk and the run, write "
    "manifest.json, materialize the batch_results asset.",
)
def aggregate(
    context: OpExecutionContext,
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    storage: StorageResource,
) -> BatchResult:
    with core_failures():
        result = aggregate_results(storage.get_storage(), spec, summaries, run_id=context.run_id)
    rate = result.records_in / result.processing_seconds if result.processing_seconds else 0.0
    metadata = {
        "batch_id": spec.batch_id,
        "source": spec.source.uri,
        "records_in": result.records_in,
        "records_out": result.records_out,
        "records_rejected": result.records_rejected,
        "chunks": result.chunks,
        "bytes_read": result.bytes_read,
        "processing_seconds": result.processing_seconds,
        "records_per_second": round(rate, 1),
        "peak_rss_bytes": result.peak_rss_bytes,
        "manifest": MetadataValue.path(result.manifest_uri),
        "rejection_reasons": MetadataValue.json(result.rejection_reasons),
    }
    context.log_event(
        AssetMaterialization(
            asset_key=BATCH_RESULTS_ASSET,
            description=f"Results of batch {spec.batch_id} from {spec.source.uri}",
            metadata=metadata,
        )
    )
    context.log.info(
        f"batch {spec.batch_id}: {result.records_in:,} records in = {result.records_out:,} out "
        f"+ {result.records_rejected:,} rejected over {result.chunks} chunk(s); "
        f"manifest {result.manifest_uri}"
    )
    context.add_output_metadata(metadata)
    return result
