from collections.abc import Iterator

from dagster import DynamicOut, DynamicOutput, OpExecutionContext, op

from batch_pipeline.core.common.models import BatchSpec, Chunk
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.planning import plan_or_reuse, select_chunks
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.ops.leases import keep_lease, take_lease
from batch_pipeline.resources import LedgerResource, StorageResource


@op(
    out={
        "chunks": DynamicOut(Chunk),
        "heavy_chunks": DynamicOut(
            Chunk,
            description="Chunks planned with more than chunking.heavy_records records.",
        ),
    },
    retry_policy=RETRY_POLICY,
    description="Take the batch's lease (another run of the batch is refused), cut the source "
    "into chunk descriptors (byte ranges, row groups, sheet rows), record them in the ledger, "
    "remove files of an earlier plan, and yield one dynamic output per chunk still to process: "
    "a resumed run skips what is done, a redrive takes only what failed. Chunks over "
    "chunking.heavy_records go out on heavy_chunks, the others on chunks.",
)
def plan_chunks(
    context: OpExecutionContext,
    spec: BatchSpec,
    storage: StorageResource,
    ledger: LedgerResource,
) -> Iterator[DynamicOutput[Chunk]]:
    with core_failures(f"planning {spec.source.uri} failed"):
        store = storage.get_storage()
        book = ledger.get_ledger()
        take_lease(context, book, spec.batch_id)  # before the first write: one run per batch
        with keep_lease(context, book, spec.batch_id):
            plan = plan_or_reuse(store, spec)
            todo, why = select_chunks(book, store, spec, plan, context.run_id)
        context.log.info(shown(f"batch {spec.batch_id}: {plan.reason}; {why}"))
        for chunk in todo:
            yield DynamicOutput(
                chunk,
                output_name="heavy_chunks" if spec.chunking.is_heavy(chunk) else "chunks",
                mapping_key=chunk.key,
                metadata={
                    "slice": chunk.describe(),
                    "records_planned": chunk.records if chunk.records is not None else -1,
                    "chunk_records": plan.chunk_records,
                    "plan_reason": plan.reason,
                    "heavy": spec.chunking.is_heavy(chunk),
                },
            )
