from collections.abc import Callable
from functools import partial
from typing import Any

from dagster import MetadataValue, OpExecutionContext, op

from batch_pipeline.core.common.models import BatchSpec, Chunk, ChunkSummary
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.ledger import ChunkStatus
from batch_pipeline.core.processing.attempts import attempt_chunk
from batch_pipeline.core.shuffle.partition import attempt_partition
from batch_pipeline.core.shuffle.stage import is_keyed, keyed_processor
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.ops.leases import keep_lease
from batch_pipeline.ops.metadata import chunk_metadata, progress_metadata
from batch_pipeline.resources import LedgerResource, SQSResource, StorageResource
from batch_pipeline.settings import processor_secrets

HEAVY_QUEUE = "heavy"
# Where heavy chunks run: the celery queue that only big workers serve, and on Kubernetes
# (dagster-k8s's step launcher reads this tag) a pod with more CPU and memory.
HEAVY_TAGS: dict[str, Any] = {
    "dagster-celery/queue": HEAVY_QUEUE,
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi"},
                "limits": {"cpu": "4", "memory": "16Gi"},
            }
        }
    },
}
_DESCRIPTION = (
    "Read one chunk's slice straight from storage, run the processor on it, write its valid "
    "and rejected records; idempotent. Transient failures are retried with backoff; a chunk "
    "that keeps failing is dead-lettered and the run carries on. With a keyed processor, the "
    "chunk's records go to their keys' buckets instead (stage 1 of the shuffle)."
)


def _process(
    context: OpExecutionContext,
    spec: BatchSpec,
    chunk: Chunk,
    storage: StorageResource,
    ledger: LedgerResource,
    sqs: SQSResource,
) -> ChunkSummary:
    with core_failures(f"{chunk.describe()} failed", spec.retry.max_retries):
        book = ledger.get_ledger()
        with keep_lease(context, book, spec.batch_id):
            # A keyed batch's chunks send their records to buckets (stage 1 of the shuffle).
            attempt: Callable[..., ChunkSummary] = attempt_chunk
            if is_keyed(spec):
                secrets = processor_secrets(keyed_processor(spec).secret_names())
                attempt = partial(attempt_partition, secrets=secrets)
            summary = attempt(
                storage.get_storage(),
                book,
                spec,
                chunk,
                retry_number=context.retry_number,
                sqs_client=sqs.get_client,
            )
        since = run_start_time(context)
        progress = progress_metadata(book.progress(spec.batch_id, since=since), since)
        if summary.status != ChunkStatus.SUCCEEDED:
            context.log.error(
                shown(
                    f"{chunk.describe()}: dead-lettered after {context.retry_number + 1} "
                    f"attempt(s): {summary.error}; dead letter at {summary.dead_letter}"
                )
            )
            context.add_output_metadata(
                {
                    "chunk": chunk.index,
                    "chunk_status": str(summary.status),
                    "chunk_error": summary.error or "",
                    "chunk_dead_letter": MetadataValue.path(summary.dead_letter or ""),
                    **progress,
                }
            )
            return summary
        rate = summary.records_in / summary.seconds if summary.seconds else 0.0
        context.log.info(
            shown(
                f"{chunk.describe()}: {summary.records_in:,} in, {summary.records_out:,} out, "
                f"{summary.records_rejected:,} rejected in {summary.seconds:.2f}s "
                f"({rate:,.0f} records/s, peak RSS {summary.peak_rss_bytes / 2**20:,.0f} MiB); "
                f"batch {progress['percent_complete']}% ({progress['chunks_succeeded']} of "
                f"{progress['chunks_total']} chunks)"
            )
        )
        context.add_output_metadata({**chunk_metadata(summary), **progress})
        return summary


process_chunk = op(
    name="process_chunk",
    retry_policy=RETRY_POLICY,
    description=_DESCRIPTION,
)(_process)

process_heavy_chunk = op(
    name="process_heavy_chunk",
    retry_policy=RETRY_POLICY,
    tags=HEAVY_TAGS,
    description=_DESCRIPTION + " For chunks over chunking.heavy_records: the celery executor "
    "sends it to the heavy queue.",
)(_process)


_RUN_STARTS: dict[str, float] = {}


def run_start_time(context: OpExecutionContext) -> float | None:
    """When this run started (for rates of this run only), from the run's record: read once
    per run and process, not once per chunk."""
    if context.run_id not in _RUN_STARTS:
        record = context.instance.get_run_record_by_id(context.run_id)
        if record is None or record.start_time is None:
            return None
        _RUN_STARTS[context.run_id] = record.start_time
    return _RUN_STARTS[context.run_id]
