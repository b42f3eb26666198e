"""The jobs: ``batch_job`` runs a source through the stages of the seed Step Function, chunks as
dynamic outputs; ``redrive_job`` runs a batch's failed chunks through the same stages. Both give
back the batch's lease when a step fails for good (``release_lease_on_failure``)."""

from dagster import job

from batch_pipeline.executor import batch_executor
from batch_pipeline.ops import (
    aggregate,
    deliver,
    initialize,
    load_batch,
    plan_buckets,
    plan_chunks,
    process_bucket,
    process_chunk,
    process_heavy_chunk,
)
from batch_pipeline.ops.leases import release_lease_on_failure


def _stages(spec) -> None:
    chunks, heavy_chunks = plan_chunks(spec)
    summaries = chunks.map(lambda chunk: process_chunk(spec, chunk)).collect()
    heavy = heavy_chunks.map(lambda chunk: process_heavy_chunk(spec, chunk)).collect()
    # The keyed stage: buckets of whole keys, once every chunk was shuffled; no bucket (and no
    # process_bucket step) for a processor without a key.
    buckets = plan_buckets(spec, summaries, heavy)
    bucket_summaries = buckets.map(lambda bucket: process_bucket(spec, bucket)).collect()
    result = aggregate(spec, summaries, heavy, bucket_summaries)
    deliver(spec, result)


# An automatic run retry (deploy/dagster.yaml's run_retries) runs every step again, not only the
# failed ones: planning takes the batch's lease back from the failed run, and the ledger skips
# the chunks and the messages that are done.
RUN_TAGS = {"team": "batch_pipeline", "dagster/retry_strategy": "ALL_STEPS"}


@job(
    executor_def=batch_executor,
    description="Initialize, plan chunks, process chunks in parallel, aggregate to a manifest, "
    "deliver valid records. Running a batch again resumes it.",
    tags=RUN_TAGS,
    hooks={release_lease_on_failure},
)
def batch_job() -> None:
    _stages(initialize())


@job(
    executor_def=batch_executor,
    description="Redrive a batch: process its failed and dead-lettered chunks again, "
    "re-aggregate, and deliver what was not delivered before.",
    tags=RUN_TAGS,
    hooks={release_lease_on_failure},
)
def redrive_job() -> None:
    _stages(load_batch())
