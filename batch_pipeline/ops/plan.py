from collections.abc import Iterator

from dagster import DynamicOut, DynamicOutput, OpExecutionContext, op

from batch_pipeline.core.models import BatchSpec, Chunk
from batch_pipeline.core.planning import plan_batch
from batch_pipeline.core.results import write_plan
from batch_pipeline.ops.failures import core_failures
from batch_pipeline.resources import StorageResource


@op(
    out=DynamicOut(Chunk),
    description="Cut the source into chunk descriptors (byte ranges, row groups, sheet rows); "
    "one dynamic output per chunk, at most max_chunks.",
)
def plan_chunks(
    context: OpExecutionContext, spec: BatchSpec, storage: StorageResource
) -> Iterator[DynamicOutput[Chunk]]:
    store = storage.get_storage()
    with core_failures():
        plan = plan_batch(store, spec)
        write_plan(store, spec, plan)
    context.log.info(f"batch {spec.batch_id}: {plan.reason}")
    for chunk in plan.chunks:
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
