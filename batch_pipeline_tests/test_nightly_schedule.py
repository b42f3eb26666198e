"""The nightly schedule ``batch_job_nightly_schedule``: a run for every object under the watched
folder or S3 prefix without a finished batch in the ledger, evaluated with
``build_schedule_context`` against batches that really ran (``core.pipeline.run_batch``)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ScheduleDefinition,
    build_schedule_context,
)
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._core.errors import ScheduleExecutionError

from batch_pipeline.automation.nightly import build_nightly_schedule
from batch_pipeline.automation.requests import BATCH_ID_TAG, SOURCE_PARTITION_TAG, TRIGGER_TAG
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.inputs.sources import derive_batch_id, inspect_source
from batch_pipeline.core.ledger import COMPLETED_FORCED, FAILED, RUNNING, SUCCEEDED
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.partitions import partition_key
from batch_pipeline.resources import LedgerResource, StorageResource
from batch_pipeline.settings import WatchSettings

NIGHT = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
# The batch each file ends with in the ledger before the tick (None: never processed).
STATUSES: dict[str, str | None] = {
    "done.csv": SUCCEEDED,
    "partial.csv": "partial",
    "forced.csv": COMPLETED_FORCED,
    "failed.csv": FAILED,
    "died.csv": RUNNING,  # a run that died mid-way
    "sub/never.csv": None,
}
NOT_FINISHED = ["failed.csv", "died.csv", "sub/never.csv"]


class Local:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.watch_uri = str(root)

    def resource(self) -> StorageResource:
        return StorageResource()

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def put(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)
        os.utime(self.root / key, (1_700_000_000, 1_700_000_000))  # old: settled long ago


def settings_for(backend: Any) -> WatchSettings:
    config = getattr(backend, "run_config_file", None)
    return WatchSettings(
        watch_uri=backend.watch_uri, run_config_file=str(config) if config else None
    )


class S3:
    def __init__(self, client: Any, bucket: str, endpoint: str, config_dir: Path) -> None:
        self.client, self.bucket, self.endpoint = client, bucket, endpoint
        self.watch_uri = f"s3://{bucket}/nightly/"
        self.run_config_file = config_dir / "s3-runs.yaml"  # an S3 watch must name an output
        self.run_config_file.write_text(f"output: s3://{bucket}/results\n")

    def resource(self) -> StorageResource:
        return StorageResource(endpoint_url=self.endpoint)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/nightly/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"nightly/{key}", Body=data)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def backend(request, tmp_path):
    if request.param == "local":
        return Local(tmp_path / "inbox")
    return S3(
        request.getfixturevalue("s3_client"),
        request.getfixturevalue("s3_bucket"),
        request.getfixturevalue("aws_endpoint"),
        tmp_path,
    )


def csv_for(key: str) -> bytes:
    return f"id,name\n1,{key}\n2,other\n".encode()


def batch_id_of(backend, key: str) -> str:
    storage = backend.resource().get_storage()
    return derive_batch_id(inspect_source(storage, backend.uri(key)).info)


def process(backend, ledger, key: str, output: Path) -> str:
    """Run the batch of ``key`` for real, to the end; its batch id."""
    storage = backend.resource().get_storage()
    spec = prepare_batch(
        storage, backend.uri(key), output=str(output), delivery=DeliverySettings(target="none")
    )
    run = run_batch(storage, spec, ledger)
    assert run.result.status == SUCCEEDED
    return spec.batch_id


def seed(backend, ledger, output: Path) -> dict[str, str]:
    """Every file of STATUSES under the watched location, its batch in the ledger as listed."""
    ids = {}
    for key, status in STATUSES.items():
        backend.put(key, csv_for(key))
        if status is None:
            ids[key] = batch_id_of(backend, key)
            continue
        ids[key] = process(backend, ledger, key, output)
        if status != SUCCEEDED:
            ledger.set_batch_status(ids[key], status)
    known = ledger.batch_statuses(list(ids.values()))
    assert known == {ids[k]: s for k, s in STATUSES.items() if s is not None}
    return ids


def evaluate(
    schedule: ScheduleDefinition, backend, ledger_url: str, when: datetime = NIGHT
) -> ScheduleExecutionData:
    context = build_schedule_context(
        scheduled_execution_time=when,
        resources={"storage": backend.resource(), "ledger": LedgerResource(url=ledger_url)},
    )
    return schedule.evaluate_tick(context)


def sources(data: ScheduleExecutionData) -> list[str]:
    return [r.run_config["ops"]["initialize"]["config"]["source"] for r in data.run_requests]


def test_only_batches_not_finished_are_requested(backend, ledger, own_ledger, tmp_path):
    ids = seed(backend, ledger, tmp_path / "out")
    schedule = build_nightly_schedule(settings_for(backend))
    data = evaluate(schedule, backend, own_ledger)

    assert data.skip_message is None
    assert sorted(sources(data)) == sorted(backend.uri(k) for k in NOT_FINISHED)
    storage = backend.resource().get_storage()
    for request in data.run_requests:
        uri = request.run_config["ops"]["initialize"]["config"]["source"]
        key = next(k for k in NOT_FINISHED if backend.uri(k) == uri)
        fingerprint = storage.stat(uri).fingerprint
        assert request.run_key == f"{NIGHT.isoformat()}|{uri}@{fingerprint}"
        assert request.tags[BATCH_ID_TAG] == ids[key]
        assert request.tags[TRIGGER_TAG] == "schedule"
        assert request.tags[SOURCE_PARTITION_TAG] == partition_key(uri)
        assert set(request.run_config["ops"]["initialize"]["config"]) == {"source", "output"}


def test_the_same_tick_gives_the_same_run_keys_the_next_night_new_ones(
    backend, ledger, own_ledger, tmp_path
):
    seed(backend, ledger, tmp_path / "out")
    schedule = build_nightly_schedule(settings_for(backend))
    first = evaluate(schedule, backend, own_ledger)
    again = evaluate(schedule, backend, own_ledger)
    next_night = evaluate(schedule, backend, own_ledger, NIGHT + timedelta(days=1))

    keys = sorted(r.run_key for r in first.run_requests)
    assert len(keys) == len(set(keys)) == len(NOT_FINISHED)
    assert sorted(r.run_key for r in again.run_requests) == keys
    later = sorted(r.run_key for r in next_night.run_requests)
    assert not set(later) & set(keys)
    assert all(k.startswith("2025-03-02T02:00:00+00:00|") for k in later)
    assert sorted(sources(next_night)) == sorted(sources(first))


def test_a_changed_file_is_requested_although_its_old_version_succeeded(
    backend, ledger, own_ledger, tmp_path
):
    backend.put("a.csv", csv_for("a"))
    old_id = process(backend, ledger, "a.csv", tmp_path / "out")
    schedule = build_nightly_schedule(settings_for(backend))
    assert evaluate(schedule, backend, own_ledger).skip_message

    backend.put("a.csv", csv_for("a, changed"))
    data = evaluate(schedule, backend, own_ledger)
    assert sources(data) == [backend.uri("a.csv")]
    assert data.run_requests[0].tags[BATCH_ID_TAG] == batch_id_of(backend, "a.csv") != old_id


def test_skips_when_every_batch_is_finished(backend, ledger, own_ledger, tmp_path):
    ids = seed(backend, ledger, tmp_path / "out")
    process(backend, ledger, "sub/never.csv", tmp_path / "out")
    ledger.set_batch_status(ids["failed.csv"], SUCCEEDED)
    ledger.set_batch_status(ids["died.csv"], COMPLETED_FORCED, reason="operator")
    schedule = build_nightly_schedule(settings_for(backend))
    data = evaluate(schedule, backend, own_ledger)
    assert data.run_requests == []
    assert data.skip_message == (
        f"all 6 record file(s) under {backend.watch_uri} have a finished batch in the ledger"
    )


def test_skips_when_the_folder_is_empty(backend, own_ledger):
    backend.put("ignored.csv.part", b"id\n1\n")  # not a record file
    schedule = build_nightly_schedule(settings_for(backend))
    data = evaluate(schedule, backend, own_ledger)
    assert data.run_requests == []
    assert data.skip_message == f"no record files under {backend.watch_uri}"


def test_skips_when_the_folder_does_not_exist(tmp_path, own_ledger):
    inbox = Local(tmp_path / "inbox")
    inbox.root.rmdir()
    schedule = build_nightly_schedule(WatchSettings(watch_uri=inbox.watch_uri))
    data = evaluate(schedule, inbox, own_ledger)
    assert data.run_requests == []
    assert data.skip_message and f"the watched folder {inbox.root} does not exist" in (
        data.skip_message
    )


@pytest.mark.slow
def test_runs_take_their_options_from_the_run_config_file(tmp_path, own_ledger):
    inbox = Local(tmp_path / "inbox")
    inbox.put("a.csv", csv_for("a"))
    config_file = tmp_path / "runs.yaml"
    config_file.write_text(f"delivery: {{target: none}}\noutput: {tmp_path / 'results'}\n")
    settings = WatchSettings(watch_uri=inbox.watch_uri, run_config_file=str(config_file))
    data = evaluate(build_nightly_schedule(settings), inbox, own_ledger)
    assert data.run_requests[0].run_config["ops"]["initialize"]["config"] == {
        "delivery": {"target": "none"},
        "output": str(tmp_path / "results"),
        "source": inbox.uri("a.csv"),
    }

    config_file.write_text("batch_id: fixed\n")
    with pytest.raises(ScheduleExecutionError) as raised:  # Dagster wraps the schedule's error
        evaluate(build_nightly_schedule(settings), inbox, own_ledger)
    cause = raised.value.__cause__
    assert isinstance(cause, ConfigError)
    assert "sets 'batch_id'" in str(cause)


# Definition --------------------------------------------------------------------------------


def test_cron_and_timezone_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("BATCH_PIPELINE_SCHEDULE_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("BATCH_PIPELINE_SCHEDULE_TIMEZONE", "Europe/Paris")
    schedule = build_nightly_schedule(WatchSettings.from_env())
    assert schedule.name == "batch_job_nightly_schedule"
    assert schedule.job_name == "batch_job"
    assert schedule.cron_schedule == "30 3 * * 1-5"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert build_nightly_schedule().cron_schedule == "30 3 * * 1-5"  # default: from_env


def test_cron_and_timezone_defaults(monkeypatch):
    monkeypatch.delenv("BATCH_PIPELINE_SCHEDULE_CRON", raising=False)
    monkeypatch.delenv("BATCH_PIPELINE_SCHEDULE_TIMEZONE", raising=False)
    schedule = build_nightly_schedule(WatchSettings.from_env())
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SCHEDULE_CRON", "every night", "invalid cron schedule 'every night'"),
        ("SCHEDULE_TIMEZONE", "Mars/Olympus", "Invalid execution timezone Mars/Olympus"),
    ],
)
def test_a_bad_cron_or_timezone_fails_loading_naming_it(monkeypatch, variable, value, message):
    monkeypatch.setenv(f"BATCH_PIPELINE_{variable}", value)
    with pytest.raises(DagsterInvalidDefinitionError, match=message):
        build_nightly_schedule(WatchSettings.from_env())


def test_definitions_hold_the_sensor_and_the_schedule_stopped():
    from batch_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def("batch_job_on_upload")
    schedule = defs.resolve_schedule_def("batch_job_nightly_schedule")
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert sensor.job_name == schedule.job_name == "batch_job"
    assert {s.name for s in defs.sensors or []} >= {"batch_job_on_upload"}
    assert {s.name for s in defs.schedules or []} == {"batch_job_nightly_schedule"}


@pytest.mark.slow
def test_a_local_file_still_being_written_waits(tmp_path, own_ledger):
    inbox = Local(tmp_path / "inbox")
    inbox.put("done.csv", csv_for("done"))  # settled long ago
    inbox.put("copying.csv", csv_for("copying"))
    now = time.time()
    os.utime(inbox.root / "copying.csv", (now, now))  # modified just now
    settings = WatchSettings(watch_uri=inbox.watch_uri, settle_seconds=30)
    data = evaluate(build_nightly_schedule(settings), inbox, own_ledger)
    assert sources(data) == [inbox.uri("done.csv")]
    (inbox.root / "done.csv").unlink()
    data = evaluate(build_nightly_schedule(settings), inbox, own_ledger)
    assert data.run_requests == []
    assert data.skip_message == (
        f"1 record file(s) under {inbox.watch_uri} changed in the last 30 s and may still be "
        "being written: they wait"
    )


def test_an_output_inside_the_watched_folder_is_refused(tmp_path, own_ledger):
    """Results written under the watched folder would be taken for uploads, run after run."""
    inbox = Local(tmp_path / "inbox")
    inbox.put("a.csv", csv_for("a"))
    config_file = tmp_path / "runs.yaml"
    config_file.write_text(f"output: {inbox.root / 'results'}\n")
    settings = WatchSettings(watch_uri=inbox.watch_uri, run_config_file=str(config_file))
    with pytest.raises(ConfigError, match="inside the watched location"):
        settings.base_run_config()
    config_file.write_text(f"output: {tmp_path / 'inbox-results'}\n")  # a sibling is fine
    assert settings.base_run_config()["output"] == str(tmp_path / "inbox-results")


@pytest.mark.parametrize("output", ["''", "s3://", "s3://b/a/../../other"])
def test_an_output_naming_no_place_or_another_is_refused(tmp_path, own_ledger, output):
    """Before any run is requested: the runs would write to the current folder, or to another
    bucket."""
    inbox = Local(tmp_path / "inbox")
    config_file = tmp_path / "runs.yaml"
    config_file.write_text(f"output: {output}\n")
    settings = WatchSettings(watch_uri=inbox.watch_uri, run_config_file=str(config_file))
    with pytest.raises(ConfigError, match=r"^output '.*' (is empty|names no bucket|has an empty)"):
        settings.base_run_config()


@pytest.mark.slow
def test_a_batch_with_a_run_queued_or_in_progress_is_left_to_that_run(tmp_path, own_ledger):
    """The sensor's run of a file is queued: the schedule does not queue a second one."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun

    inbox = Local(tmp_path / "inbox")
    for key in ("queued.csv", "finished-run.csv", "waiting.csv"):
        inbox.put(key, csv_for(key))
    (tmp_path / "home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:  # schedules need one
        for key, status in (
            ("queued.csv", DagsterRunStatus.STARTED),
            ("finished-run.csv", DagsterRunStatus.FAILURE),  # over: may be requested again
        ):
            instance.add_run(
                DagsterRun(
                    job_name="batch_job",
                    status=status,
                    tags={BATCH_ID_TAG: batch_id_of(inbox, key)},
                )
            )
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=NIGHT,
            resources={"storage": inbox.resource(), "ledger": LedgerResource(url=own_ledger)},
        )
        data = build_nightly_schedule(settings_for(inbox)).evaluate_tick(context)
    assert sorted(sources(data)) == [inbox.uri("finished-run.csv"), inbox.uri("waiting.csv")]
