"""Assembles the project's Dagster definitions. Nothing else happens here."""

from dagster import AssetSpec, Definitions, JobDefinition

from batch_pipeline.jobs import batch_job, redrive_job
from batch_pipeline.ops.aggregate import BATCH_RESULTS_ASSET
from batch_pipeline.resources import LedgerResource, SQSResource, StorageResource

batch_results = AssetSpec(
    BATCH_RESULTS_ASSET,
    description="Valid and rejected records of each batch, behind a manifest.json; "
    "materialized by batch_job's aggregate step.",
    group_name="batch_pipeline",
)

defs = Definitions(
    jobs=[batch_job, redrive_job],
    assets=[batch_results],
    resources={
        "storage": StorageResource(),
        "sqs": SQSResource(),
        "ledger": LedgerResource(),
    },
)


def get_batch_job() -> JobDefinition:
    """``batch_job`` with its resources bound (for ``reconstructable``)."""
    return defs.resolve_job_def("batch_job")


def get_redrive_job() -> JobDefinition:
    """``redrive_job`` with its resources bound (for ``reconstructable``)."""
    return defs.resolve_job_def("redrive_job")
