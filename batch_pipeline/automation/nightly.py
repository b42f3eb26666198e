"""``batch_job_nightly_schedule``: each night, ``batch_job`` runs for the objects under the
watched location that have no finished batch in the ledger.

Objects above ``BATCH_PIPELINE_GROUP_MAX_BYTES`` (64 MiB) get a run each. Smaller ones, once
a format has ``BATCH_PIPELINE_GROUP_MIN_FILES`` (20) of them, are grouped in key order into
file-set runs of at most ``BATCH_PIPELINE_GROUP_MAX_FILES`` files (the folder as source, the
files as ``members``): a night of thousands of small files is a few runs whose chunks each read
many whole files, not thousands of runs of one step each. A file that a finished set processed
(the ledger's ``bp_members``), or that a set run queued or in progress takes, is not requested
again.

Finished means ``succeeded``, ``partial`` (failures within the tolerance: redrive those) or
``completed_forced``. Anything else (never seen, ``failed``, or ``running`` because a run died)
is requested again, and the new run resumes the batch where the ledger says it stopped. A run
key of the tick's time and the object's key and ETag keeps a tick from requesting twice; the
batch id tag and the run queue's per-batch limit keep a run from overlapping one the upload
sensor started.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterInvariantViolationError,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._check import CheckError

from batch_pipeline.automation.requests import (
    BATCH_ID_TAG,
    check_run_config,
    list_objects,
    missing_folder,
    run_request,
    set_run_request,
)
from batch_pipeline.core.automation.discovery import SourceObject
from batch_pipeline.core.automation.grouping import group_small_files
from batch_pipeline.core.common.settings import Batch
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.inputs.filesets import set_uri
from batch_pipeline.core.ledger import BatchStatus
from batch_pipeline.jobs import batch_job
from batch_pipeline.resources import LedgerResource, StorageResource
from batch_pipeline.settings import WatchSettings

FINISHED = frozenset({BatchStatus.SUCCEEDED, BatchStatus.PARTIAL, BatchStatus.COMPLETED_FORCED})


def build_nightly_schedule(settings: WatchSettings | None = None) -> ScheduleDefinition:
    """The nightly schedule for ``settings`` (default: from the environment)."""
    settings = settings or WatchSettings.from_env()

    @schedule(
        name="batch_job_nightly_schedule",
        job=batch_job,
        cron_schedule=settings.cron,
        execution_timezone=settings.timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"At '{settings.cron}' ({settings.timezone}): batch_job for every record "
        f"file under {settings.watch_uri} without a finished batch in the ledger.",
    )
    def batch_job_nightly_schedule(
        context: ScheduleEvaluationContext, storage: StorageResource, ledger: LedgerResource
    ) -> list[RunRequest] | SkipReason:
        missing = missing_folder(settings)
        if missing:
            return SkipReason(shown(missing))
        objects = list_objects(storage.get_storage(), settings)
        writing = 0
        if not settings.is_s3:  # a local file still being written waits for the next night
            settled = time.time() - settings.settle_seconds
            writing = sum(o.last_modified > settled for o in objects)
            objects = [o for o in objects if o.last_modified <= settled]
        if not objects and writing:
            return SkipReason(
                shown(
                    f"{writing} record file(s) under {settings.watch_uri} changed in the last "
                    f"{settings.settle_seconds:g} s and may still be being written: they wait"
                )
            )
        if not objects:
            return SkipReason(shown(f"no record files under {settings.watch_uri}"))
        book = ledger.get_ledger()
        statuses = book.batch_statuses([o.batch_id for o in objects])
        processed = book.processed_members([o.uri for o in objects], FINISHED)
        busy, busy_files = batches_in_flight(_instance(context))

        def in_flight(o: SourceObject) -> bool:
            return o.batch_id in busy or o.uri in busy_files

        todo = sorted(
            (
                o
                for o in objects
                if statuses.get(o.batch_id) not in FINISHED
                and o.fingerprint not in processed.get(o.uri, ())
                and not in_flight(o)
            ),
            key=lambda o: (o.last_modified, o.uri),
        )
        if not todo:
            queued = sum(in_flight(o) for o in objects)
            text = (
                f"all {len(objects)} record file(s) under {settings.watch_uri} have a finished "
                "batch in the ledger"
            )
            if queued:
                text += f", or a run queued or in progress ({queued})"
            return SkipReason(shown(text))
        stamp = _tick_stamp(context)
        base = settings.base_run_config()
        check_run_config(base, todo[0].uri)
        singles, groups = group_small_files(
            todo,
            set_uri(settings.watch_uri),
            settings.group_max_bytes,
            settings.group_max_files,
            settings.group_min_files,
            fmt=str(base.get("format") or Batch.format.default),
        )
        grouped = sum(len(g.objects) for g in groups)
        context.log.info(
            shown(
                f"{len(todo)} of {len(objects)} record file(s) under {settings.watch_uri} have no "
                f"finished batch: requesting {len(singles)} run(s) of one file and {len(groups)} "
                f"file-set run(s) of {grouped} small file(s)"
            )
        )
        requests = [run_request(o, base, "schedule", f"{stamp}|{o.run_key}") for o in singles]
        requests += [set_run_request(g, base, "schedule", f"{stamp}|{g.run_key}") for g in groups]
        return requests

    return batch_job_nightly_schedule


def _tick_stamp(context: ScheduleEvaluationContext) -> str:
    """The tick's scheduled time (an evaluation outside a tick: the current minute, UTC)."""
    try:
        tick = context.scheduled_execution_time
    except CheckError:
        tick = None
    return (tick or datetime.now(UTC).replace(second=0, microsecond=0)).isoformat()


def _instance(context: ScheduleEvaluationContext) -> DagsterInstance | None:
    """The instance of a real tick (a context built in a test may have none)."""
    try:
        return context.instance
    except DagsterInvariantViolationError:
        return None


IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def batches_in_flight(instance: DagsterInstance | None) -> tuple[set[str], set[str]]:
    """The batch ids of ``batch_job`` runs queued or in progress (the sensor's, say), and the
    files of those that are file sets: the schedule leaves them to those runs rather than
    queueing a second run of the same batch or file."""
    if instance is None:
        return set(), set()
    records = instance.get_run_records(
        RunsFilter(job_name=batch_job.name, statuses=IN_FLIGHT), limit=10_000
    )
    ids: set[str] = set()
    files: set[str] = set()
    for record in records:
        run = record.dagster_run
        if BATCH_ID_TAG in run.tags:
            ids.add(run.tags[BATCH_ID_TAG])
        run_config: Mapping[str, Any] = run.run_config or {}
        ops = run_config.get("ops") or {}
        config = ops.get("initialize", {}).get("config")
        if isinstance(config, dict) and config.get("members"):
            root = set_uri(str(config["source"]))
            files.update(root + str(m).lstrip("/") for m in config["members"])
    return ids, files
