"""Assembles the project's Dagster definitions. Nothing else happens here.

The jobs, their asset and their resources come from ``bound_jobs`` (which the CLI loads alone);
the upload sensor and the nightly schedule read their settings from the environment when this
module loads (``batch_pipeline.settings``); both start stopped: turn them on in the UI.
"""

from dagster import Definitions

from batch_pipeline.automation.alerts import ALERT_SENSORS
from batch_pipeline.automation.nightly import build_nightly_schedule
from batch_pipeline.automation.uploads import build_upload_sensor
from batch_pipeline.bound_jobs import (
    JOBS,
    RESOURCES,
    batch_results,
    get_batch_job,
    get_redrive_job,
)
from batch_pipeline.settings import WatchSettings

watch_settings = WatchSettings.from_env()

defs = Definitions(
    jobs=JOBS,
    assets=[batch_results],
    sensors=[build_upload_sensor(watch_settings), *ALERT_SENSORS],
    schedules=[build_nightly_schedule(watch_settings)],
    resources=RESOURCES,
)

__all__ = ["batch_results", "defs", "get_batch_job", "get_redrive_job", "watch_settings"]
