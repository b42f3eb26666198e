"""Assembles the project's Dagster definitions. Nothing else happens here.

The upload sensor and the nightly schedule read their settings from the environment when this
module loads (``batch_pipeline.settings``); both start stopped: turn them on in the UI.
"""

from dagster import AssetSpec, Definitions, JobDefinition

from batch_pipeline.automation.alerts import ALERT_SENSORS
from batch_pipeline.automation.nightly import build_nightly_schedule
from batch_pipeline.automation.uploads import build_upload_sensor
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
from batch_pipeline.settings import WatchSettings

batch_results = AssetSpec(
    BATCH_RESULTS_ASSET,
    description="Valid and rejected records of each source file, behind a manifest.json: one "
    "partition per file, materialized by batch_job's aggregate step with the batch's totals, "
    "rejection reasons, chunk timings and throughput.",
    group_name="batch_pipeline",
    partitions_def=SOURCE_FILES,
)

watch_settings = WatchSettings.from_env()

defs = Definitions(
    jobs=[batch_job, redrive_job],
    assets=[batch_results],
    sensors=[build_upload_sensor(watch_settings), *ALERT_SENSORS],
    schedules=[build_nightly_schedule(watch_settings)],
    resources={
        "storage": StorageResource(),
        "sqs": SQSResource(),
        "ledger": LedgerResource(),
        "state_store": StateStoreResource(),
        "io_manager": IntermediatesIOManager(),
    },
)


def get_batch_job() -> JobDefinition:
    """``batch_job`` with its resources bound (for ``reconstructable``)."""
    return defs.resolve_job_def("batch_job")


def get_redrive_job() -> JobDefinition:
    """``redrive_job`` with its resources bound (for ``reconstructable``)."""
    return defs.resolve_job_def("redrive_job")
