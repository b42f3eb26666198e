from collections.abc import Iterator

from dagster import DynamicOut, DynamicOutput, OpExecutionContext, op

from batch_pipeline.core.models import BatchSpec, Chunk
from batch_pipeline.core.planning import plan_or_reuse
from batch_pipeline.core.resume import select_chunks
from batch_pipeline.ops.failures import RETRY_POLICY, core_failures
from batch_pipeline.resources import LedgerResource, StorageResource


@op(
    out=DynamicOut(Chunk),
    retry_policy=RETRY_POLICY,
    description="Cut the source into chunk descriptors (byte ranges, row groups, sheet rows), "
    "record them in the ledger, and yield one dynamic output per chunk still to process: a "
    "resumed run skips what is done, a redrive takes only what failed.",
)
def plan_chunks(
    context: OpExecutionContext,
    spec: BatchSpec,
    storage: StorageResource,
    ledger: LedgerResource,
) -> Iterator[DynamicOutput[Chunk]]:
    with core_failures(f"planning {spec.source.uri} failed"):
        store = storage.get_storage()
        plan = plan_or_reuse(store, spec)
        todo, why = select_chunks(ledger.get_ledger(), store, spec, plan, context.run_id)
        context.log.info(f"batch {spec.batch_id}: {plan.reason}; {why}")
        for chunk in todo:
            yield DynamicOutput(
                chunk,
                mapping_key=chunk.key,
                metadata={
                    "slice": chunk.describe(),
                    "records_planned": chunk.records if chunk.records is not None else -1,
                    "chunk_records": plan.chunk_records,
                    "plan_reason": plan.reason,
                },
            )
