"""``batch_job`` and ``redrive_job`` with their resources bound: what a run needs, without the
schedule, the sensors and the rest of ``definitions`` (which builds its ``Definitions`` from
these). The CLI runs ``get_batch_job`` / ``get_redrive_job`` from here, so that its start-up
imports no sensor or schedule code."""

from typing import Any

from dagster import AssetSpec, Definitions, JobDefinition

from batch_pipeline.jobs import batch_job, redrive_job
from batch_pipeline.ops.aggregate import BATCH_RESULTS_ASSET
from batch_pipeline.partitions import SOURCE_FILES
from batch_pipeline.resources import (
    IntermediatesIOManager,
    LedgerResource,
    SQSResource,
    StateStoreResource,
    StorageResource,
)

batch_results = AssetSpec(
    BATCH_RESULTS_ASSET,
    description="Valid and rejected records of each source file, behind a manifest.json: one "
    "partition per file, materialized by batch_job's aggregate step with the batch's totals, "
    "rejection reasons, chunk timings and throughput.",
    group_name="batch_pipeline",
    partitions_def=SOURCE_FILES,
)

RESOURCES: dict[str, Any] = {
    "storage": StorageResource(),
    "sqs": SQSResource(),
    "ledger": LedgerResource(),
    "state_store": StateStoreResource(),
    "io_manager": IntermediatesIOManager(),
}

JOBS = [batch_job, redrive_job]

# The jobs and their asset, without schedules and sensors: the jobs resolve as in ``defs``.
job_defs = Definitions(jobs=JOBS, assets=[batch_results], resources=RESOURCES)


def get_batch_job() -> JobDefinition:
    """``batch_job`` with its resources bound (for ``reconstructable``)."""
    return job_defs.resolve_job_def("batch_job")


def get_redrive_job() -> JobDefinition:
    """``redrive_job`` with its resources bound (for ``reconstructable``)."""
    return job_defs.resolve_job_def("redrive_job")
