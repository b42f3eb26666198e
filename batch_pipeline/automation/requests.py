"""What the upload sensor and the nightly schedule share: listing the watched location, checking
the run config once per tick, and the run requests with their tags (batch id, trigger, partition,
files of a file set)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from dagster import RunRequest, validate_run_config
from dagster_aws.s3.sensor import get_objects

from batch_pipeline.config import BatchConfig
from batch_pipeline.core.automation.discovery import (
    SourceObject,
    list_local,
    objects_from_s3_listing,
    split_watch_uri,
)
from batch_pipeline.core.automation.grouping import FileGroup
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.jobs import batch_job
from batch_pipeline.partitions import partition_key
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
