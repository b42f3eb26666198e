"""``batch_job``: the stages of the seed Step Function as ops, chunks as dynamic outputs."""

from dagster import job

from batch_pipeline.executor import batch_executor
from batch_pipeline.ops import aggregate, deliver, initialize, plan_chunks, process_chunk


@job(
    executor_def=batch_executor,
    description="Initialize, plan chunks, process chunks in parallel, aggregate to a manifest, "
    "deliver valid records.",
    tags={"team": "batch_pipeline"},
)
def batch_job() -> None:
    spec = initialize()
    summaries = plan_chunks(spec).map(lambda chunk: process_chunk(spec, chunk))
    result = aggregate(spec, summaries.collect())
    deliver(spec, result)
