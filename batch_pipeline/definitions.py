"""Assembles the project's Dagster definitions. Nothing else happens here."""

from dagster import AssetSpec, Definitions, JobDefinition

from batch_pipeline.jobs import batch_job
from batch_pipeline.ops.aggregate import BATCH_RESULTS_ASSET
from batch_pipeline.resources import SQSResource, StorageResource

batch_results = AssetSpec(
    BATCH_RESULTS_ASSET,
    description="Valid and rejected records of each batch, behind a manifest.json; "
    "materialized by batch_job's aggregate step.",
    group_name="batch_pipeline",
)

defs = Definitions(
    jobs=[batch_job],
    assets=[batch_results],
    resources={"storage": StorageResource(), "sqs": SQSResource()},
)


def get_batch_job() -> JobDefinition:
    """``batch_job`` with its resources bound (for ``reconstructable``)."""
    return defs.resolve_job_def("batch_job")
