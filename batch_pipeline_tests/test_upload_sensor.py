"""The upload sensor ``batch_job_on_upload``, one scenario per test, evaluated tick by tick with
``build_sensor_context`` over a local folder and over S3 (a moto server, real HTTP)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    build_sensor_context,
)
from dagster._core.definitions.sensor_definition import SensorExecutionData

from batch_pipeline.automation.requests import (
    BATCH_ID_TAG,
    SOURCE_PARTITION_TAG,
    TRIGGER_TAG,
)
from batch_pipeline.automation.uploads import build_upload_sensor
from batch_pipeline.core.automation.discovery import UploadCursor, list_local, select_new
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.inputs.sources import derive_batch_id, inspect_source
from batch_pipeline.partitions import SOURCE_FILES, partition_key
from batch_pipeline.resources import StorageResource
from batch_pipeline.settings import WatchSettings

CSV = b"id,name\n1,ann\n2,bob\n"
JSONL = b'{"id": 1}\n{"id": 2}\n'
JSON = b'[{"id": 1}, {"id": 2}]'


# Backends: a local folder and an S3 prefix behind the same few calls -------------------------


class LocalBackend:
    """The watched folder ``root``; ``put`` can set a file's mtime (S3 cannot)."""

    name = "local"
    can_set_mtime = True

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.watch_uri = str(root)

    def resource(self) -> StorageResource:
        return StorageResource()

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def put(self, key: str, data: bytes = CSV, mtime: float | None = None) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    def put_many(self, keys: Iterable[str], data: bytes = CSV) -> None:
        for key in keys:
            self.put(key, data)

    def run_key(self, key: str) -> str:
        st = os.stat(self.root / key)
        return f"{self.uri(key)}@{st.st_size}-{int(st.st_mtime * 1e9)}"

    def last_modified(self, key: str) -> float:
        return os.stat(self.root / key).st_mtime


class S3Backend:
    """The prefix ``inbox/`` of a bucket on the moto server."""

    name = "s3"
    can_set_mtime = False

    def __init__(self, client: Any, bucket: str, endpoint: str, config_dir: Path) -> None:
        self.client, self.bucket, self.endpoint = client, bucket, endpoint
        self.watch_uri = f"s3://{bucket}/inbox/"
        self.output = f"s3://{bucket}/results"  # an S3 watch must name an output
        self.run_config_file = config_dir / "s3-runs.yaml"
        self.run_config_file.write_text(f"output: {self.output}\n")

    def resource(self) -> StorageResource:
        return StorageResource(endpoint_url=self.endpoint)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/inbox/{key}"

    def put(self, key: str, data: bytes = CSV, mtime: float | None = None) -> None:
        assert mtime is None, "S3 sets LastModified itself"
        self.client.put_object(Bucket=self.bucket, Key=f"inbox/{key}", Body=data)

    def put_many(self, keys: Iterable[str], data: bytes = CSV) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: self.put(k, data), keys))

    def run_key(self, key: str) -> str:
        etag = self.client.head_object(Bucket=self.bucket, Key=f"inbox/{key}")["ETag"]
        return f"s3://{self.bucket}/inbox/{key}@{etag.strip(chr(34))}"

    def last_modified(self, key: str) -> float:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"inbox/{key}")
        (entry,) = [e for e in listing["Contents"] if e["Key"] == f"inbox/{key}"]
        return entry["LastModified"].timestamp()

    def delete_all(self) -> None:
        """Empty the bucket in batches (the fixture's one-by-one teardown is slow for 1,000s)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})


Backend = LocalBackend | S3Backend


@pytest.fixture
def local(tmp_path) -> LocalBackend:
    return LocalBackend(tmp_path / "inbox")


@pytest.fixture
def s3(s3_client, s3_bucket, aws_endpoint, tmp_path) -> S3Backend:
    return S3Backend(s3_client, s3_bucket, aws_endpoint, tmp_path)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.services)])
def backend(request) -> Backend:
    return request.getfixturevalue(request.param)


def watch(backend: Backend, **overrides: Any) -> WatchSettings:
    """Settings watching ``backend``; local files settle at once unless a test says otherwise."""
    defaults: dict[str, Any] = {"watch_uri": backend.watch_uri, "settle_seconds": 0.0}
    if isinstance(backend, S3Backend):
        defaults["run_config_file"] = str(backend.run_config_file)
    return WatchSettings(**{**defaults, **overrides})


def tick(
    sensor: SensorDefinition,
    backend: Backend,
    cursor: str | None = None,
    instance: DagsterInstance | None = None,
) -> SensorExecutionData:
    """One tick, as the daemon evaluates it."""
    context = build_sensor_context(
        cursor=cursor, resources={"storage": backend.resource()}, instance=instance
    )
    return sensor.evaluate_tick(context)


def drain(
    sensor: SensorDefinition, backend: Backend, cursor: str | None = None, max_ticks: int = 200
) -> tuple[list[list[RunRequest]], str | None, str]:
    """Tick until a tick skips: the run requests of each tick, the cursor, the skip message."""
    ticks: list[list[RunRequest]] = []
    for _ in range(max_ticks):
        data = tick(sensor, backend, cursor)
        if data.skip_message:
            assert not data.run_requests
            return ticks, cursor, data.skip_message
        assert data.run_requests
        ticks.append(list(data.run_requests))
        cursor = data.cursor
    raise AssertionError(f"the sensor did not run out of objects in {max_ticks} ticks")


def sources(requests: Iterable[RunRequest]) -> list[str]:
    return [r.run_config["ops"]["initialize"]["config"]["source"] for r in requests]


def added_partitions(data: SensorExecutionData) -> list[str]:
    keys: list[str] = []
    for request in data.dynamic_partitions_requests or []:
        assert request.partitions_def_name == SOURCE_FILES.name
        keys.extend(request.partition_keys)
    return keys


def assert_no_duplicates(requests: list[RunRequest]) -> None:
    keys = [r.run_key for r in requests]
    assert len(keys) == len(set(keys)), "a run key was requested twice"


def request_output(backend: Backend) -> str:
    """Where runs write: next to a watched folder, else the output the S3 run config names."""
    if isinstance(backend, LocalBackend):
        return str(backend.root.parent / "output")
    return backend.output


# Scenarios ---------------------------------------------------------------------------------


def test_first_tick_requests_every_object_with_key_config_tags_and_partition(backend):
    keys = ["a.csv", "sub/b.jsonl", "c.json"]
    for key, data in zip(keys, (CSV, JSONL, JSON), strict=True):
        backend.put(key, data)
    sensor = build_upload_sensor(watch(backend))
    data = tick(sensor, backend)

    assert data.skip_message is None
    by_source = {sources([r])[0]: r for r in data.run_requests}
    assert set(by_source) == {backend.uri(k) for k in keys}
    storage = backend.resource().get_storage()
    for key in keys:
        uri = backend.uri(key)
        request = by_source[uri]
        assert request.run_key == backend.run_key(key)
        assert request.run_config == {
            "ops": {"initialize": {"config": {"source": uri, "output": request_output(backend)}}}
        }
        assert request.tags[BATCH_ID_TAG] == derive_batch_id(inspect_source(storage, uri).info)
        assert request.tags[TRIGGER_TAG] == "sensor"
        assert request.tags[SOURCE_PARTITION_TAG] == partition_key(uri)
    assert sorted(added_partitions(data)) == sorted(partition_key(backend.uri(k)) for k in keys)
    cursor = UploadCursor.from_json(data.cursor)
    assert len(cursor.seen) == 3
    assert cursor.watermark == max(backend.last_modified(k) for k in keys)


def test_s3_run_key_is_uri_at_etag_without_quotes(s3):
    s3.put("x.csv")
    etag = s3.client.head_object(Bucket=s3.bucket, Key="inbox/x.csv")["ETag"]
    assert etag.startswith('"')
    (request,) = tick(build_upload_sensor(watch(s3)), s3).run_requests
    assert request.run_key == f"s3://{s3.bucket}/inbox/x.csv@{etag[1:-1]}"


def test_nothing_new_skips_saying_so(backend):
    sensor = build_upload_sensor(watch(backend))
    empty = tick(sensor, backend)
    assert empty.skip_message == f"no record files under {backend.watch_uri}"
    assert empty.run_requests == [] and empty.cursor is None

    backend.put_many(["a.csv", "b.csv", "c.csv"])
    first = tick(sensor, backend)
    assert len(first.run_requests) == 3
    again = tick(sensor, backend, first.cursor)
    assert again.run_requests == []
    assert again.skip_message == (
        f"no new or changed objects under {backend.watch_uri}: all 3 listed were requested before"
    )


def test_new_and_changed_objects_are_requested_again_with_new_run_keys(backend):
    backend.put("a.csv", CSV)
    backend.put("b.csv", CSV)
    sensor = build_upload_sensor(watch(backend))
    first = tick(sensor, backend)
    before = {sources([r])[0]: r for r in first.run_requests}

    if backend.can_set_mtime:  # a later write: a later mtime (explicitly, on coarse clocks)
        backend.put("a.csv", CSV + b"3,cy\n", mtime=backend.last_modified("a.csv") + 1)
    else:  # S3: a new ETag, LastModified possibly the same second
        backend.put("a.csv", CSV + b"3,cy\n")
    backend.put("c.csv", CSV)
    second = tick(sensor, backend, first.cursor)

    after = {sources([r])[0]: r for r in second.run_requests}
    assert set(after) == {backend.uri("a.csv"), backend.uri("c.csv")}
    changed, old = after[backend.uri("a.csv")], before[backend.uri("a.csv")]
    assert changed.run_key == backend.run_key("a.csv") != old.run_key
    assert changed.tags[SOURCE_PARTITION_TAG] == old.tags[SOURCE_PARTITION_TAG]
    assert changed.tags[BATCH_ID_TAG] != old.tags[BATCH_ID_TAG]
    assert partition_key(backend.uri("a.csv")) in added_partitions(second)
    third = tick(sensor, backend, second.cursor)
    assert third.skip_message and third.skip_message.startswith("no new or changed objects")


def test_overwrite_with_identical_content_on_s3_is_not_requested_again(s3):
    s3.put("a.csv", CSV)
    sensor = build_upload_sensor(watch(s3))
    first = tick(sensor, s3)
    s3.put("a.csv", CSV)  # same bytes, same ETag: same version
    assert tick(sensor, s3, first.cursor).skip_message


def test_more_than_the_cap_is_spread_over_ticks_none_missed_none_twice(backend):
    keys = [f"f{i}.csv" for i in range(5)]
    backend.put_many(keys)
    ticks, cursor, skip = drain(build_upload_sensor(watch(backend, max_runs_per_tick=2)), backend)
    assert [len(t) for t in ticks] == [2, 2, 1]
    requests = [r for t in ticks for r in t]
    assert_no_duplicates(requests)
    assert sorted(sources(requests)) == sorted(backend.uri(k) for k in keys)
    assert "all 5 listed were requested before" in skip
    assert len(UploadCursor.from_json(cursor).seen) == 5


def test_a_backlog_older_than_the_lookback_is_drained_oldest_first(local):
    """First start over files a day apart: the watermark must follow what was taken, or the
    files left over the cap fall behind the look-back and are never requested."""
    day = 86_400
    start = time.time() - 10 * day
    for i in range(7):
        local.put(f"day{i}.csv", mtime=start + i * day)
    sensor = build_upload_sensor(watch(local, max_runs_per_tick=3, lookback_seconds=60))
    ticks, cursor, _ = drain(sensor, local)
    assert [sources(t) for t in ticks] == [
        [local.uri(f"day{i}.csv") for i in range(0, 3)],
        [local.uri(f"day{i}.csv") for i in range(3, 6)],
        [local.uri("day6.csv")],
    ]
    assert UploadCursor.from_json(cursor).watermark == start + 6 * day


@pytest.mark.slow
def test_more_than_1000_s3_keys_are_all_listed(s3):
    """ListObjectsV2 returns 1,000 keys a page: the sensor must follow the pages, and a cap
    that cuts across them must neither repeat nor skip a key."""
    keys = [f"p/{i:05d}.csv" for i in range(1_050)]
    s3.put_many(keys)
    try:
        sensor = build_upload_sensor(watch(s3, max_runs_per_tick=600))
        first = tick(sensor, s3)
        assert len(first.run_requests) == 600
        assert len(added_partitions(first)) == 600
        ticks, _, skip = drain(sensor, s3, first.cursor)
        assert [len(t) for t in ticks] == [450]
        requests = list(first.run_requests) + ticks[0]
        assert_no_duplicates(requests)
        assert set(sources(requests)) == {s3.uri(k) for k in keys}
        assert "all 1050 listed were requested before" in skip
    finally:
        s3.delete_all()


@pytest.mark.slow
def test_equal_mtimes_on_local_files_are_all_taken_late_ones_within_the_lookback_too(local):
    stamp = time.time() - 3_600
    for i in range(5):
        local.put(f"tie{i}.csv", mtime=stamp)
    sensor = build_upload_sensor(watch(local, max_runs_per_tick=2, lookback_seconds=900))
    ticks, cursor, _ = drain(sensor, local)
    assert [len(t) for t in ticks] == [2, 2, 1]
    assert sorted(sources(r for t in ticks for r in t)) == [
        local.uri(f"tie{i}.csv") for i in range(5)
    ]
    assert UploadCursor.from_json(cursor).watermark == stamp

    local.put("same_second.csv", mtime=stamp)  # appears later, stamped the watermark itself
    local.put("older.csv", mtime=stamp - 600)  # older than the watermark, within the look-back
    # Older than the look-back by its mtime, but it just arrived (ctime): moved or copied in
    # with its mtime kept (mv, cp -p, rsync -a, unzip), it is new all the same.
    local.put("moved_in.csv", mtime=stamp - 100_000)
    later, cursor, _ = drain(sensor, local, cursor)
    assert [len(t) for t in later] == [2, 1]
    assert sorted(sources(r for t in later for r in t)) == [
        local.uri("moved_in.csv"),
        local.uri("older.csv"),
        local.uri("same_second.csv"),
    ]
    assert UploadCursor.from_json(cursor).watermark == stamp
    final = tick(sensor, local, cursor)
    assert final.run_requests == [] and final.skip_message


@pytest.mark.slow
def test_objects_uploaded_within_one_second_on_s3_are_all_taken(s3):
    keys = [f"burst{i}.csv" for i in range(8)]
    s3.put_many(keys)
    stamps = {k: s3.last_modified(k) for k in keys}
    # The scenario needs ties: objects sharing a LastModified second.
    assert len(set(stamps.values())) < len(keys), stamps
    assert all(s == int(s) for s in stamps.values())  # S3 stamps whole seconds
    sensor = build_upload_sensor(watch(s3, max_runs_per_tick=3))
    ticks, cursor, _ = drain(sensor, s3)
    requests = [r for t in ticks for r in t]
    assert [len(t) for t in ticks] == [3, 3, 2]
    assert_no_duplicates(requests)
    assert sorted(sources(requests)) == sorted(s3.uri(k) for k in keys)
    watermark = UploadCursor.from_json(cursor).watermark
    assert watermark == max(stamps.values())
    # Another upload right away: most likely within the watermark's second, taken either way.
    s3.put("straggler.csv")
    later = tick(sensor, s3, cursor)
    assert sources(later.run_requests) == [s3.uri("straggler.csv")]
    assert s3.last_modified("straggler.csv") >= watermark


def test_restart_from_a_stored_cursor_continues_without_duplicates(backend):
    backend.put_many([f"r{i}.csv" for i in range(5)])
    settings = watch(backend, max_runs_per_tick=2)
    first = tick(build_upload_sensor(settings), backend)
    stored = first.cursor
    assert isinstance(stored, str)
    json.loads(stored)  # what Dagster keeps: a string of JSON
    assert UploadCursor.from_json(stored).to_json() == stored

    backend.put("r5.csv")  # arrives while the sensor is stopped
    # A fresh sensor definition (a code reload) and a fresh context from the stored string.
    ticks, _, _ = drain(build_upload_sensor(settings), backend, cursor=stored)
    requests = list(first.run_requests) + [r for t in ticks for r in t]
    assert_no_duplicates(requests)
    assert sorted(sources(requests)) == sorted(backend.uri(f"r{i}.csv") for i in range(6))


@pytest.mark.parametrize(
    "cursor", ["not json", '{"v": 99, "watermark": null, "seen": {}}', '{"watermark": 1}']
)
def test_an_unreadable_cursor_gives_a_clear_error(local, cursor):
    local.put("a.csv")
    with pytest.raises(ConfigError, match=r"cannot read the upload sensor's cursor .*reset"):
        tick(build_upload_sensor(watch(local)), local, cursor)


def test_suffixes_and_ignored_names(backend):
    wanted = ["a.csv", "b.json", "sub/c.jsonl", "d.csv.gz", "e.parquet"]
    ignored = [
        ".hidden.csv",
        "sub/.hidden.jsonl",
        "f.csv.tmp",
        "g.csv.part",
        "h.csv.crdownload",
        "~$lock.xlsx",
        "_SUCCESS",
        "notes.md",
        "noext",
    ]
    backend.put_many(wanted + ignored)
    data = tick(build_upload_sensor(watch(backend)), backend)
    assert sorted(sources(data.run_requests)) == sorted(backend.uri(k) for k in wanted)

    only_csv = tick(build_upload_sensor(watch(backend, suffixes=(".csv",))), backend)
    assert sources(only_csv.run_requests) == [backend.uri("a.csv")]


def test_hidden_folders_are_skipped_locally(local):
    local.put(".git/objects/x.csv")
    local.put("_tmp/y.csv")
    local.put("ok/z.csv")
    data = tick(build_upload_sensor(watch(local)), local)
    assert sources(data.run_requests) == [local.uri("ok/z.csv")]


def test_suffixes_from_the_environment(monkeypatch, local):
    monkeypatch.setenv("BATCH_PIPELINE_WATCH_URI", local.watch_uri)
    monkeypatch.setenv("BATCH_PIPELINE_WATCH_SUFFIXES", "csv, .JSONL ,")
    monkeypatch.setenv("BATCH_PIPELINE_SETTLE_SECONDS", "0")
    settings = WatchSettings.from_env()
    assert settings.suffixes == (".csv", ".JSONL")
    local.put_many(["a.csv", "b.jsonl", "c.json"])
    data = tick(build_upload_sensor(settings), local)
    assert sorted(sources(data.run_requests)) == [local.uri("a.csv"), local.uri("b.jsonl")]


def test_a_local_file_just_written_waits_to_settle(local):
    local.put("old.csv", mtime=time.time() - 60)
    local.put("fresh.csv")  # mtime: now
    sensor = build_upload_sensor(watch(local, settle_seconds=30))
    first = tick(sensor, local)
    assert sources(first.run_requests) == [local.uri("old.csv")]
    waiting = tick(sensor, local, first.cursor)
    assert waiting.run_requests == []
    assert waiting.skip_message == (
        f"1 new file(s) under {local.watch_uri} modified in the last seconds, waiting for them "
        "to settle"
    )
    assert waiting.cursor == first.cursor
    os.utime(local.root / "fresh.csv", (time.time() - 40, time.time() - 40))  # time passes
    settled = tick(sensor, local, first.cursor)
    assert sources(settled.run_requests) == [local.uri("fresh.csv")]


def test_s3_objects_do_not_wait_to_settle(s3):
    s3.put("fresh.csv")
    data = tick(build_upload_sensor(watch(s3, settle_seconds=600)), s3)
    assert sources(data.run_requests) == [s3.uri("fresh.csv")]


# The run config file -------------------------------------------------------------------------

RUN_CONFIG_YAML = """\
processor: validate
processor_options:
  columns:
    id: {type: integer, required: true}
chunking:
  chunk_records: 1000
delivery:
  target: none
customer_id: acme
"""


def test_run_config_file_options_go_into_every_run(backend, tmp_path, monkeypatch):
    config_file = tmp_path / "runs.yaml"
    config_file.write_text(RUN_CONFIG_YAML + f"output: {tmp_path / 'results'}\n")
    monkeypatch.setenv("BATCH_PIPELINE_WATCH_URI", backend.watch_uri)
    monkeypatch.setenv("BATCH_PIPELINE_RUN_CONFIG", str(config_file))
    monkeypatch.setenv("BATCH_PIPELINE_SETTLE_SECONDS", "0")
    settings = WatchSettings.from_env()
    assert settings.run_config_file == str(config_file)
    backend.put_many(["a.csv", "b.csv"])
    data = tick(build_upload_sensor(settings), backend)
    assert len(data.run_requests) == 2
    for request in data.run_requests:
        uri = sources([request])[0]
        assert request.run_config["ops"]["initialize"]["config"] == {
            "processor": "validate",
            "processor_options": {"columns": {"id": {"type": "integer", "required": True}}},
            "chunking": {"chunk_records": 1000},
            "delivery": {"target": "none"},
            "customer_id": "acme",
            "output": str(tmp_path / "results"),
            "source": uri,
        }


def test_run_config_file_is_read_at_every_tick(local, tmp_path):
    config_file = tmp_path / "runs.json"
    config_file.write_text(json.dumps({"customer_id": "first"}))
    sensor = build_upload_sensor(watch(local, run_config_file=str(config_file)))
    local.put("a.csv")
    first = tick(sensor, local)
    config_file.write_text(json.dumps({"customer_id": "second"}))
    local.put("b.csv")
    second = tick(sensor, local, first.cursor)
    assert first.run_requests[0].run_config["ops"]["initialize"]["config"]["customer_id"] == (
        "first"
    )
    assert second.run_requests[0].run_config["ops"]["initialize"]["config"]["customer_id"] == (
        "second"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: /elsewhere/x.csv\n", r"sets 'source'.*remove it"),
        ("batch_id: fixed\n", r"sets 'batch_id'.*remove it"),
        ("format: xml\n", r"(?s)the run config for .*a\.csv is not valid.*format"),
        ("chunking: {chunk_records: many}\n", r"the run config for .*a\.csv is not valid"),
        ("- a\n- b\n", r"must hold a mapping"),
        ("processor: [unclosed\n", r"cannot read the run config file"),
    ],
)
def test_a_bad_run_config_file_gives_a_clear_error(local, tmp_path, text, message):
    config_file = tmp_path / "runs.yaml"
    config_file.write_text(text)
    local.put("a.csv")
    sensor = build_upload_sensor(watch(local, run_config_file=str(config_file)))
    with pytest.raises(ConfigError, match=message):
        tick(sensor, local)


def test_an_unknown_option_in_the_run_config_file_gives_a_clear_error(local, tmp_path):
    """A misspelt option must fail the tick, not every run it starts."""
    config_file = tmp_path / "runs.yaml"
    config_file.write_text("chunking:\n  chunk_recordz: 1000\n")
    local.put("a.csv")
    sensor = build_upload_sensor(watch(local, run_config_file=str(config_file)))
    with pytest.raises(
        ConfigError, match=r"(?s)is not valid.*unexpected config entry \"chunk_recordz\""
    ):
        tick(sensor, local)


def test_a_missing_run_config_file_gives_a_clear_error(local, tmp_path):
    local.put("a.csv")
    missing = tmp_path / "nowhere.yaml"
    sensor = build_upload_sensor(watch(local, run_config_file=str(missing)))
    with pytest.raises(ConfigError, match=f"cannot read the run config file {missing}"):
        tick(sensor, local)


# Bursts and big listings ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("cap", "per_tick"), [(100, [100]), (30, [30, 30, 30, 10])])
def test_a_burst_of_100_s3_uploads_gives_100_runs(s3, cap, per_tick):
    keys = [f"burst/{i:03d}.csv" for i in range(100)]
    s3.put_many(keys)  # concurrently
    ticks, _, _ = drain(build_upload_sensor(watch(s3, max_runs_per_tick=cap)), s3)
    assert [len(t) for t in ticks] == per_tick
    requests = [r for t in ticks for r in t]
    assert_no_duplicates(requests)
    assert sorted(sources(requests)) == sorted(s3.uri(k) for k in keys)


@pytest.mark.slow
def test_a_tick_over_12000_new_local_files_stays_fast(local, capsys):
    count = 12_000
    for i in range(40):
        (local.root / f"d{i:02d}").mkdir()
    for i in range(count):
        (local.root / f"d{i % 40:02d}" / f"{i:05d}.csv").write_bytes(b"a\n1\n")
    settings = watch(local)  # default cap: 100
    sensor = build_upload_sensor(settings)

    started = time.perf_counter()
    first = tick(sensor, local)
    first_seconds = time.perf_counter() - started
    assert len(first.run_requests) == 100
    assert_no_duplicates(first.run_requests)
    assert len(first.cursor) < 10_000

    # The cursor once every file was requested (the 119 ticks after this one, at once: the
    # sensor's own decision function over the same listing).
    listed = list_local(settings.watch_uri, settings.suffixes)
    assert len(listed) == count
    rest = select_new(
        listed,
        UploadCursor.from_json(first.cursor),
        max_requests=count,
        lookback_seconds=settings.lookback_seconds,
    )
    assert len(rest.requested) == count - 100
    assert not {o.run_key for o in rest.requested} & {r.run_key for r in first.run_requests}
    drained = rest.cursor.to_json()
    assert len(drained.encode()) < 2_000_000
    assert len(UploadCursor.from_json(drained).seen) == count

    started = time.perf_counter()
    idle = tick(sensor, local, drained)
    idle_seconds = time.perf_counter() - started
    assert idle.skip_message and f"all {count} listed were requested before" in idle.skip_message

    local.put("d00/new.csv")
    started = time.perf_counter()
    one = tick(sensor, local, drained)
    one_seconds = time.perf_counter() - started
    assert sources(one.run_requests) == [local.uri("d00/new.csv")]
    assert len(one.cursor.encode()) < 2_000_000

    with capsys.disabled():
        sys.stdout.write(
            f"\n[upload sensor, {count} local files] first tick (100 requests): "
            f"{first_seconds:.2f} s; idle tick over a full cursor: {idle_seconds:.2f} s; tick "
            f"with 1 new file: {one_seconds:.2f} s; full cursor {len(drained) / 1000:.0f} kB\n"
        )
    assert max(first_seconds, idle_seconds, one_seconds) < 30


# Definition and instance ---------------------------------------------------------------------


def test_sensor_definition_follows_the_settings(local):
    sensor = build_upload_sensor(watch(local, sensor_interval_seconds=45, max_runs_per_tick=7))
    assert sensor.name == "batch_job_on_upload"
    assert sensor.job_name == "batch_job"
    assert sensor.minimum_interval_seconds == 45
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    assert "at most 7 runs per tick" in (sensor.description or "")


def test_cap_interval_and_lookback_from_the_environment(monkeypatch, local):
    monkeypatch.setenv("BATCH_PIPELINE_WATCH_URI", local.watch_uri)
    monkeypatch.setenv("BATCH_PIPELINE_MAX_RUNS_PER_TICK", "2")
    monkeypatch.setenv("BATCH_PIPELINE_SENSOR_INTERVAL", "15")
    monkeypatch.setenv("BATCH_PIPELINE_LOOKBACK_SECONDS", "120")
    monkeypatch.setenv("BATCH_PIPELINE_SETTLE_SECONDS", "0")
    settings = WatchSettings.from_env()
    assert (settings.max_runs_per_tick, settings.lookback_seconds) == (2, 120)
    sensor = build_upload_sensor()  # from the environment
    assert sensor.minimum_interval_seconds == 15
    local.put_many(["a.csv", "b.csv", "c.csv"])
    assert len(tick(sensor, local).run_requests) == 2

    monkeypatch.setenv("BATCH_PIPELINE_MAX_RUNS_PER_TICK", "lots")
    with pytest.raises(ConfigError, match="BATCH_PIPELINE_MAX_RUNS_PER_TICK='lots' is not a"):
        WatchSettings.from_env()
    monkeypatch.setenv("BATCH_PIPELINE_MAX_RUNS_PER_TICK", "0")
    with pytest.raises(ConfigError, match="must be at least 1"):
        WatchSettings.from_env()


def test_a_missing_watched_folder_skips_saying_so(tmp_path):
    missing = LocalBackend(tmp_path / "inbox")
    missing.root.rmdir()
    data = tick(build_upload_sensor(watch(missing)), missing)
    assert data.run_requests == []
    assert data.skip_message == (
        f"the watched folder {missing.root} does not exist: create it and drop files in"
    )


def test_partition_requests_apply_to_a_real_instance(local):
    local.put("plain.csv")
    local.put("odd...name.csv")  # '...' is refused in a partition key
    with DagsterInstance.ephemeral() as instance:
        data = tick(build_upload_sensor(watch(local)), local, instance=instance)
        for request in data.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        stored = set(instance.get_dynamic_partitions(SOURCE_FILES.name))
    assert stored == {
        partition_key(local.uri("plain.csv")),
        partition_key(local.uri("odd...name.csv")),
    }
    assert all("..." not in key for key in stored)
    assert {r.tags[SOURCE_PARTITION_TAG] for r in data.run_requests} == stored


@pytest.mark.parametrize("name", ["a...csv", "a....csv", "a.....csv", "a" + "." * 9 + "csv"])
def test_partition_keys_never_hold_a_range_separator(name):
    key = partition_key(f"s3://bucket/in/{name}")
    assert "..." not in key and key.startswith("s3://bucket/in/a")


def test_an_s3_watch_without_an_output_is_refused(s3):
    """Results would land on the local disk of whichever machine runs the job."""
    settings = WatchSettings(watch_uri=s3.watch_uri)
    with pytest.raises(ConfigError, match="set output"):
        settings.base_run_config()


def test_an_output_beside_a_prefix_without_slash_is_not_listed(s3):
    """s3://b/inbox is a folder: its sibling inbox-out/ (the results) is not watched."""
    s3.client.put_object(Bucket=s3.bucket, Key="inbox-out/manifest.json", Body=b"{}")
    s3.put("a.csv")
    settings = watch(s3, watch_uri=s3.watch_uri.rstrip("/"))
    data = tick(build_upload_sensor(settings), s3)
    assert [r.run_config["ops"]["initialize"]["config"]["source"] for r in data.run_requests] == [
        s3.uri("a.csv")
    ]
