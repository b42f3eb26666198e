"""The nightly schedule's file-set runs: small files without a finished batch are grouped, per
format and in key order, into runs over the watched folder with the files as ``members``; big
ones (and formats with too few small files) get a run each. Evaluated with
``build_schedule_context`` against set batches that really ran (``core.pipeline.run_batch``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRequest, build_schedule_context
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun

from batch_pipeline.automation.nightly import batches_in_flight, build_nightly_schedule
from batch_pipeline.automation.requests import (
    BATCH_ID_TAG,
    FILES_TAG,
    SOURCE_PARTITION_TAG,
    TRIGGER_TAG,
)
from batch_pipeline.core.common.models import DeliverySettings
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.inputs.filesets import set_uri
from batch_pipeline.core.ledger import SUCCEEDED
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.partitions import partition_key
from batch_pipeline.resources import LedgerResource
from batch_pipeline.settings import WatchSettings
from batch_pipeline_tests.test_nightly_schedule import NIGHT, S3, Local, csv_for, settings_for


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


ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("batch_pipeline"), "__repository__"),
    "batch_job",
)


def jsonl_for(key: str) -> bytes:
    return f'{{"id": 1, "name": "{key}"}}\n{{"id": 2, "name": "other"}}\n'.encode()


def big_csv(key: str) -> bytes:
    return b"id,name\n" + b"".join(f"{i},{key}-{i}\n".encode() for i in range(200))


def settings(backend, max_bytes: int = 500, max_files: int = 5, min_files: int = 3):
    return replace(
        settings_for(backend),
        group_max_bytes=max_bytes,
        group_max_files=max_files,
        group_min_files=min_files,
    )


def tick(
    watch: WatchSettings, backend, ledger_url: str, instance: DagsterInstance | None = None
) -> ScheduleExecutionData:
    context = build_schedule_context(
        instance=instance,
        scheduled_execution_time=NIGHT,
        resources={"storage": backend.resource(), "ledger": LedgerResource(url=ledger_url)},
    )
    return build_nightly_schedule(watch).evaluate_tick(context)


def config_of(request: RunRequest) -> dict[str, Any]:
    return request.run_config["ops"]["initialize"]["config"]


def split(data: ScheduleExecutionData) -> tuple[list[RunRequest], list[RunRequest]]:
    """(runs of one file, file-set runs)."""
    sets = [r for r in data.run_requests if "members" in config_of(r)]
    return [r for r in data.run_requests if "members" not in config_of(r)], sets


def members_of(sets: list[RunRequest]) -> list[list[str]]:
    return [config_of(r)["members"] for r in sets]


def taken(data: ScheduleExecutionData, backend) -> list[str]:
    """The keys (relative to the watched folder) every request of a tick takes."""
    singles, sets = split(data)
    root = set_uri(backend.watch_uri)
    keys = [m for ms in members_of(sets) for m in ms]
    for request in singles:
        uri = config_of(request)["source"]
        keys.append(uri[len(root) :] if uri.startswith(root) else uri)
    return keys


def put_csvs(backend, keys: list[str]) -> None:
    for key in keys:
        backend.put(key, csv_for(key))


def small_keys(n: int, ext: str = "csv") -> list[str]:
    # a few in a sub-folder: members are relative keys, sorted with the folder's own files
    return [f"day/s-{i:03d}.{ext}" if i % 7 == 3 else f"s-{i:03d}.{ext}" for i in range(n)]


def test_small_files_are_grouped_per_format_and_big_ones_run_alone(backend, own_ledger, tmp_path):
    # S3 holds fewer objects (a slower listing); local has the full night
    n_csv, csv_sizes = (45, [20, 20, 5]) if isinstance(backend, Local) else (25, [20, 5])
    csvs, jsonls = small_keys(n_csv), small_keys(25, "jsonl")
    put_csvs(backend, csvs)
    for key in jsonls:
        backend.put(key, jsonl_for(key))
    for key in ("big-1.csv", "big-2.csv"):
        backend.put(key, big_csv(key))
    watch = settings(backend, max_bytes=500, max_files=20, min_files=10)
    data = tick(watch, backend, own_ledger)

    root = set_uri(backend.watch_uri)
    assert root.endswith("/") and root.rstrip("/") == backend.watch_uri.rstrip("/")
    output = watch.base_run_config()["output"]
    singles, sets = split(data)
    assert sorted(config_of(r)["source"] for r in singles) == [
        backend.uri("big-1.csv"),
        backend.uri("big-2.csv"),
    ]
    assert all(set(config_of(r)) == {"source", "output"} for r in singles)
    csv_sets = [ms for ms in members_of(sets) if ms[0].endswith(".csv")]
    jsonl_sets = [ms for ms in members_of(sets) if ms[0].endswith(".jsonl")]
    assert [len(ms) for ms in csv_sets] == csv_sizes
    assert [len(ms) for ms in jsonl_sets] == [20, 5]
    # key order, relative keys, each small file in exactly one request
    assert [m for ms in csv_sets for m in ms] == sorted(csvs)
    assert [m for ms in jsonl_sets for m in ms] == sorted(jsonls)
    assert sorted(taken(data, backend)) == sorted([*csvs, *jsonls, "big-1.csv", "big-2.csv"])

    storage = backend.resource().get_storage()
    for request in sets:
        config = config_of(request)
        assert config == {"source": root, "members": config["members"], "output": output}
        assert request.tags[TRIGGER_TAG] == "schedule"
        assert request.tags[SOURCE_PARTITION_TAG] == partition_key(root)
        assert request.tags[FILES_TAG] == str(len(config["members"]))
        stamp, _, rest = request.run_key.partition("|")
        assert stamp == NIGHT.isoformat()
        assert rest.startswith(f"{root}@set-{len(config['members'])}-")
    assert len({r.run_key for r in data.run_requests}) == len(data.run_requests)
    assert len({r.tags[BATCH_ID_TAG] for r in data.run_requests}) == len(data.run_requests)
    last = sets[-1]  # the batch initialize will derive for the set is the one tagged
    spec = prepare_batch(
        storage, root, members=tuple(config_of(last)["members"]), output=str(tmp_path / "o")
    )
    assert last.tags[BATCH_ID_TAG] == spec.batch_id
    assert last.run_key == f"{NIGHT.isoformat()}|{root}@{spec.source.info.fingerprint}"
    assert [m.uri for m in spec.source.members] == [root + k for k in config_of(last)["members"]]


@pytest.mark.slow
def test_files_a_finished_set_took_are_not_requested_until_they_change(
    backend, ledger, own_ledger, tmp_path
):
    keys = small_keys(12)
    put_csvs(backend, keys)
    watch = settings(backend)
    first = tick(watch, backend, own_ledger)
    _, sets = split(first)
    assert [len(ms) for ms in members_of(sets)] == [5, 5, 2]
    done = config_of(sets[0])["members"]

    storage = backend.resource().get_storage()
    root = set_uri(backend.watch_uri)
    spec = prepare_batch(
        storage,
        root,
        members=tuple(done),
        output=str(tmp_path / "out"),
        delivery=DeliverySettings(target="none"),
    )
    assert spec.batch_id == sets[0].tags[BATCH_ID_TAG]
    assert run_batch(storage, spec, ledger).result.status == SUCCEEDED
    assert ledger.processed_members([root + k for k in keys], frozenset({SUCCEEDED})) == {
        root + k: {storage.stat(root + k).fingerprint} for k in done
    }

    second = tick(watch, backend, own_ledger)
    rest = sorted(set(keys) - set(done))
    assert [m for ms in members_of(split(second)[1]) for m in ms] == rest
    assert sorted(taken(second, backend)) == rest

    changed = done[2]
    backend.put(changed, csv_for(changed) + b"3,rewritten\n")  # new size (and ETag)
    third = tick(watch, backend, own_ledger)
    assert sorted(taken(third, backend)) == sorted([*rest, changed])
    assert not set(taken(third, backend)) & (set(done) - {changed})


@pytest.mark.slow
def test_too_few_small_files_or_no_grouping_give_a_run_each(backend, own_ledger):
    csvs, jsonls = small_keys(6), small_keys(2, "jsonl")
    put_csvs(backend, csvs)
    for key in jsonls:
        backend.put(key, jsonl_for(key))

    few = tick(settings(backend, min_files=7), backend, own_ledger)  # 6 csv, 2 jsonl: too few
    assert not split(few)[1]
    assert sorted(config_of(r)["source"] for r in few.run_requests) == sorted(
        backend.uri(k) for k in [*csvs, *jsonls]
    )
    assert all(FILES_TAG not in r.tags for r in few.run_requests)

    mixed = tick(settings(backend, min_files=3), backend, own_ledger)  # csv grouped, jsonl not
    singles, sets = split(mixed)
    assert members_of(sets) == [sorted(csvs)[:5], sorted(csvs)[5:]]
    assert sorted(config_of(r)["source"] for r in singles) == sorted(backend.uri(k) for k in jsonls)

    off = tick(settings(backend, max_bytes=0, min_files=2), backend, own_ledger)
    assert len(off.run_requests) == len(csvs) + len(jsonls)
    assert not split(off)[1]


@pytest.mark.slow
def test_files_of_a_set_run_queued_or_in_progress_are_left_to_it(backend, own_ledger, tmp_path):
    keys = small_keys(12)
    put_csvs(backend, keys)
    watch = settings(backend)
    root = set_uri(backend.watch_uri)
    first_sets = split(tick(watch, backend, own_ledger))[1]
    queued, failed = first_sets[0], first_sets[1]

    (tmp_path / "home").mkdir()
    # a real instance (an ephemeral one has no ref: the schedule's context could not open it)
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        for request, status in ((queued, DagsterRunStatus.QUEUED), (failed, "FAILURE")):
            instance.add_run(
                DagsterRun(
                    job_name="batch_job",
                    status=DagsterRunStatus(status),
                    run_config=request.run_config,
                    tags=dict(request.tags),
                    remote_job_origin=ORIGIN,  # Dagster wants one for a queued run
                )
            )
        instance.add_run(  # another job naming the rest: not the schedule's concern
            DagsterRun(
                job_name="tuning_job",
                status=DagsterRunStatus.STARTED,
                run_config=first_sets[2].run_config,
                tags={BATCH_ID_TAG: "other-batch"},
            )
        )
        ids, files = batches_in_flight(instance)
        assert ids == {queued.tags[BATCH_ID_TAG]}
        assert files == {root + k for k in config_of(queued)["members"]}
        data = tick(watch, backend, own_ledger, instance)
    assert batches_in_flight(None) == (set(), set())

    busy = config_of(queued)["members"]
    rest = sorted(set(keys) - set(busy))
    _, sets = split(data)
    assert members_of(sets) == [rest[:5], rest[5:]]  # the failed run's files are requested again
    assert not set(taken(data, backend)) & set(busy)
