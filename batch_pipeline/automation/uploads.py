"""``batch_job_on_upload``: one ``batch_job`` run per new or changed object under the watched
folder or S3 prefix (``BATCH_PIPELINE_WATCH_URI``; see ``batch_pipeline.settings``).

The decisions are the core's (``core.discovery.select_new``); this module lists, turns the
selection into run requests, partitions and a cursor, and says why it skipped. S3 is listed
with dagster-aws's ``get_objects`` (ListObjectsV2, paginated).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
    validate_run_config,
)
from dagster_aws.s3.sensor import get_objects

from batch_pipeline.config import BatchConfig
from batch_pipeline.core.automation.discovery import (
    SourceObject,
    UploadCursor,
    list_local,
    objects_from_s3_listing,
    select_new,
    split_watch_uri,
)
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.inputs.filesets import FileGroup
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.jobs import batch_job
from batch_pipeline.partitions import SOURCE_FILES, partition_key
from batch_pipeline.resources import StorageResource
from batch_pipeline.settings import WatchSettings

BATCH_ID_TAG = "batch_pipeline/batch_id"
TRIGGER_TAG = "batch_pipeline/trigger"
SOURCE_PARTITION_TAG = "batch_pipeline/source_partition"
FILES_TAG = "batch_pipeline/files"  # a file-set run: how many files it takes


def list_objects(
    storage: Storage, settings: WatchSettings, since: float | None = None
) -> list[SourceObject]:
    """The record files under the watched location (on S3: modified after ``since``)."""
    if settings.is_s3:
        bucket, prefix = split_watch_uri(settings.watch_uri)
        after = datetime.fromtimestamp(since, tz=UTC) if since is not None else None
        listing = get_objects(bucket, prefix, since_last_modified=after, client=storage.s3_client())
        return objects_from_s3_listing(bucket, listing, settings.suffixes)
    return list_local(settings.watch_uri, settings.suffixes)


def missing_folder(settings: WatchSettings) -> str | None:
    """Why a watched local folder cannot be listed (it does not exist yet), else None."""
    if settings.is_s3 or os.path.isdir(settings.watch_uri):
        return None
    return f"the watched folder {settings.watch_uri} does not exist: create it and drop files in"


def check_run_config(base_config: dict[str, Any], source: str) -> None:
    """Refuse a run config the job would refuse, before requesting any run with it: once per
    tick, since the runs differ only in their source. Names the bad option."""
    config = {**base_config, "source": source}
    try:
        BatchConfig(**config)
        validate_run_config(batch_job, {"ops": {"initialize": {"config": config}}})  # names typos
    except Exception as exc:  # pydantic's and Dagster's messages name the field
        raise ConfigError(f"the run config for {source} is not valid: {exc}") from exc


def run_request(
    obj: SourceObject, base_config: dict[str, Any], trigger: str, run_key: str | None = None
) -> RunRequest:
    """A ``batch_job`` run for one object (``base_config`` checked by ``check_run_config``),
    tagged with its batch id (the run queue keeps two runs of one batch from running at once)
    and its partition."""
    config = {**base_config, "source": obj.uri}
    return RunRequest(
        run_key=run_key or obj.run_key,
        run_config={"ops": {"initialize": {"config": config}}},
        tags={
            BATCH_ID_TAG: obj.batch_id,
            TRIGGER_TAG: trigger,
            SOURCE_PARTITION_TAG: partition_key(obj.uri),
        },
    )


def set_run_request(
    group: FileGroup, base_config: dict[str, Any], trigger: str, run_key: str
) -> RunRequest:
    """A ``batch_job`` run over a group of small files as one file set (the folder as source,
    the files as members), tagged with the set's batch id and the folder's partition."""
    config = {**base_config, "source": group.root, "members": group.members}
    return RunRequest(
        run_key=run_key,
        run_config={"ops": {"initialize": {"config": config}}},
        tags={
            BATCH_ID_TAG: group.batch_id,
            TRIGGER_TAG: trigger,
            SOURCE_PARTITION_TAG: partition_key(group.root),
            FILES_TAG: str(len(group.objects)),
        },
    )


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
