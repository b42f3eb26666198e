"""``batch_job_on_upload``: one ``batch_job`` run per new or changed object under the watched
folder or S3 prefix (``BATCH_PIPELINE_WATCH_URI``; see ``batch_pipeline.settings``).

The decisions are the core's (``core.automation.discovery.select_new``); this module turns the
selection into run requests, partitions and a cursor, and says why it skipped. Listing and the
run requests are ``automation.requests``, which the nightly schedule shares.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from batch_pipeline.automation.requests import (
    check_run_config,
    list_objects,
    missing_folder,
    run_request,
)
from batch_pipeline.core.automation.discovery import (
    UploadCursor,
    select_new,
)
from batch_pipeline.core.common.text import shown
from batch_pipeline.jobs import batch_job
from batch_pipeline.partitions import SOURCE_FILES, partition_key
from batch_pipeline.resources import StorageResource
from batch_pipeline.settings import WatchSettings


def build_upload_sensor(settings: WatchSettings | None = None) -> SensorDefinition:
    """The upload sensor for ``settings`` (default: from the environment)."""
    settings = settings or WatchSettings.from_env()

    @sensor(
        name="batch_job_on_upload",
        job=batch_job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Starts batch_job for each new or changed record file under "
        f"{settings.watch_uri} (run key: the object's key and ETag), at most "
        f"{settings.max_runs_per_tick} runs per tick, and adds the file's partition of "
        "batch_results.",
    )
    def batch_job_on_upload(
        context: SensorEvaluationContext, storage: StorageResource
    ) -> SensorResult | SkipReason:
        missing = missing_folder(settings)
        if missing:
            return SkipReason(shown(missing))
        cursor = UploadCursor.from_json(context.cursor)
        since = None
        if cursor.watermark is not None:  # S3: list only what could still be new (1 s margin)
            since = cursor.watermark - settings.lookback_seconds - 1.0
        objects = list_objects(storage.get_storage(), settings, since)
        selection = select_new(
            objects,
            cursor,
            max_requests=settings.max_runs_per_tick,
            lookback_seconds=settings.lookback_seconds,
            settle_seconds=0.0 if settings.is_s3 else settings.settle_seconds,
        )
        if not selection.requested:
            if since is not None and settings.is_s3 and not objects:
                stamp = datetime.fromtimestamp(since, tz=UTC).isoformat(timespec="seconds")
                return SkipReason(
                    shown(f"no record files under {settings.watch_uri} modified since {stamp}")
                )
            return SkipReason(shown(selection.skip_reason(settings.watch_uri)))
        base = settings.base_run_config()
        check_run_config(base, selection.requested[0].uri)
        requests = [run_request(o, base, "sensor") for o in selection.requested]
        context.log.info(
            shown(
                f"{len(requests)} run(s) for new or changed objects under {settings.watch_uri}; "
                f"{selection.over_cap} more over the cap of {settings.max_runs_per_tick} wait for "
                f"the next tick; {selection.settling} still settling"
            )
        )
        keys = list(dict.fromkeys(partition_key(o.uri) for o in selection.requested))
        return SensorResult(
            run_requests=requests,
            cursor=selection.cursor.to_json(),
            dynamic_partitions_requests=[SOURCE_FILES.build_add_request(keys)],
        )

    return batch_job_on_upload
