from collections.abc import Iterator

from dagster import (
    AssetMaterialization,
    AssetObservation,
    Failure,
    OpExecutionContext,
    Out,
    Output,
    op,
)

from batch_pipeline.core.aggregation import BatchResult
from batch_pipeline.core.aggregation import aggregate as aggregate_results
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.ledger import BatchStatus
from batch_pipeline.core.shuffle.stage import is_keyed, release_states
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.ops.leases import keep_lease
from batch_pipeline.ops.metadata import result_metadata
from batch_pipeline.ops.process import run_start_time
from batch_pipeline.partitions import ensure_partition, partition_key
from batch_pipeline.resources import LedgerResource, StorageResource

BATCH_RESULTS_ASSET = "batch_results"


@op(
    out=Out(BatchResult),
    retry_policy=RETRY_POLICY,
    description="From the ledger: check records in = out + rejected for every chunk (and "
    "bucket) and the run, apply the tolerated failures, write manifest.json, materialize the "
    "source file's partition of batch_results (observe it when the batch failed).",
)
def aggregate(
    context: OpExecutionContext,
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    heavy_summaries: list[ChunkSummary],
    bucket_summaries: list[ChunkSummary],
    storage: StorageResource,
    ledger: LedgerResource,
) -> Iterator[AssetMaterialization | AssetObservation | Output[BatchResult]]:
    with core_failures(f"aggregating batch {spec.batch_id} failed"):
        book = ledger.get_ledger()
        with keep_lease(context, book, spec.batch_id):
            batch = book.batch(spec.batch_id)
            forced = (
                batch.reason if batch and batch.status == BatchStatus.COMPLETED_FORCED else None
            )
            states = book.chunk_states(spec.batch_id)
            result = aggregate_results(
                storage.get_storage(),
                spec,
                states,
                run_id=context.run_id,
                forced=forced,
                buckets=book.buckets.chunk_states(spec.batch_id) if is_keyed(spec) else None,
            )
            book.set_batch_status(
                spec.batch_id, result.status, reason=result.failure, run_id=context.run_id
            )
            release_states(book, spec)  # a keyed batch's buckets are done with their states
        since = run_start_time(context)
        metadata = result_metadata(
            spec,
            result,
            states,
            book.progress(spec.batch_id, since=since),
            since,
            len(summaries) + len(heavy_summaries) + len(bucket_summaries),
        )
        partition = partition_key(spec.source.uri)
        if result.status == BatchStatus.FAILED:
            book.release_lease(spec.batch_id, context.run_id)  # the run ends here
            # Yielded (not logged) so that it is recorded before the failure ends the step.
            yield AssetObservation(
                asset_key=BATCH_RESULTS_ASSET,
                partition=_ensure(context, partition),
                description=shown(f"Batch {spec.batch_id} failed: {result.failure}"),
                metadata=metadata,
            )
            raise Failure(
                description=shown(
                    f"batch {spec.batch_id}: {result.failure}; manifest {result.manifest_uri}"
                ),
                metadata=metadata,
                allow_retries=False,
            )
        yield AssetMaterialization(
            asset_key=BATCH_RESULTS_ASSET,
            partition=_ensure(context, partition),
            description=shown(f"Results of batch {spec.batch_id} from {spec.source.uri}"),
            metadata=metadata,
        )
        context.log.info(
            shown(
                f"batch {spec.batch_id} {result.status}: {result.records_in:,} records in = "
                f"{result.records_out:,} out + {result.records_rejected:,} rejected over "
                f"{result.chunks_succeeded} of {result.chunks} chunk(s); manifest "
                f"{result.manifest_uri}"
            )
        )
        if result.failure or result.failed_chunks:
            context.log.warning(
                shown(f"batch {spec.batch_id}: failed chunks {result.failed_chunks}")
            )
        yield Output(result, metadata=metadata)


def _ensure(context: OpExecutionContext, partition: str) -> str:
    ensure_partition(context.instance, partition)
    return partition
