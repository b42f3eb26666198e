"""``batch_job`` with a keyed processor (``kalman``): chunks shuffled into buckets, one step per
bucket with its keys' states from the state store.

What a run writes is compared with a reference: the ``kalman`` processor applied to each whole
file in one call, the states carried from file to file as a user's state would be. The core's
own tests (``core/processing/test_kalman.py``) check the processor against a plain per-record
loop; these check that the job around it (chunks, shuffle, buckets, stores, resume after
SIGKILL, redrive) changes nothing."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch_pipeline.cli import main
from batch_pipeline.core.ledger import SUCCEEDED, open_ledger
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedProcessor
from batch_pipeline.core.stores.state import StateStore
from batch_pipeline.core.stores.state_stores import open_state_store
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.core.ledger.test_ledger import postgres_url  # noqa: F401  (a fixture)
from batch_pipeline_tests.fault_helpers import (
    SHORT_LEASE,
    cli_env,
    cli_process,
    kill,
    run_cli,
    wait_for,
    wait_for_lease_to_expire,
)

OPTIONS = {"key": "user_id", "time": "ts", "value": "weight", "gate": 4}
NAMESPACE = "kalman/user_id/weight"
FAULT_NAMESPACE = "fault_kalman/user_id/weight"  # a processor's states are its own
MODULES = "batch_pipeline_tests.fault_processors"


def write_measurements(path: Path, records: int, users: int, day: int, seed: int) -> Path:
    """Interleaved users' weights over a day, a few outliers and repeated times."""
    rng = random.Random(seed)
    lines = ["user_id,ts,weight"]
    for _ in range(records):
        user = f"u{rng.randrange(users)}"
        second = rng.randrange(86_400 // 4) * 4  # repeats: equal times happen
        ts = f"2026-03-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        weight = 500.0 if rng.random() < 0.01 else 70 + rng.gauss(0, 1)
        lines.append(f"{user},{ts},{weight:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def reference(files: list[Path]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each file through ``kalman`` in one call, states carried: every file's valid records,
    and the states after the last."""
    processor = get_processor("kalman", OPTIONS)
    assert isinstance(processor, KeyedProcessor)
    states: dict[str, dict[str, Any]] = {}
    valid: list[dict[str, Any]] = []
    for path in files:
        table = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types=text_columns(path))
        )
        result = processor.process_keys(table, states)
        valid += result.valid.to_pylist()
        states.update(result.states)
    return valid, states


def text_columns(path: Path) -> dict[str, pa.DataType]:
    header = path.read_text().split("\n", 1)[0].split(",")
    return {name: pa.string() for name in header}


def by_record(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[float, ...]]:
    """Each record (user, time, weight as text) -> (smoothed, variance, innovation)."""
    found: dict[tuple[str, str, str], tuple[float, ...]] = {}
    for row in rows:
        key = (str(row["user_id"]), str(row["ts"]), str(row["weight"]))
        found[key] = (row["smoothed"], row["smoothed_variance"], row["innovation"])
    return found


def valid_rows(output: Path, batch_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in sorted((output / batch_id / "valid").glob("*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def assert_close(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, rel=1e-12, abs=1e-12), key


def assert_states(got: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    """The same keys, each with the same state (floats to 1e-12)."""
    assert got.keys() == expected.keys()
    for key, state in expected.items():
        assert got[key].keys() == state.keys(), key
        for name, value in state.items():
            assert got[key][name] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, name)


def stored_states(
    store: StateStore, users: list[str], namespace: str = NAMESPACE
) -> dict[str, dict[str, Any]]:
    return {key: found.state for key, found in store.load(namespace, users).items()}


def run_args(source: str, output: str, batch_id: str, store_url: str, *extra: str) -> list[str]:
    return ["run", source, "--processor", "kalman", "--processor-options", json.dumps(OPTIONS),
            "--output", output, "--batch-id", batch_id, "--state-store", store_url,
            "--chunk-records", "400", *extra]  # fmt: skip


def test_kalman_through_the_job_continues_each_user_across_files(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_measurements(tmp_path / "day1.csv", 2_000, 30, day=1, seed=1)
    second = write_measurements(tmp_path / "day2.csv", 1_500, 40, day=2, seed=2)
    store_url = f"sqlite:///{tmp_path / 'state' / 'states.db'}"
    output = tmp_path / "out"
    for path, batch in ((first, "day1"), (second, "day2")):
        code, summary, out = run_cli(capsys, *run_args(str(path), str(output), batch, store_url))
        assert code == 0, out
        assert summary["records_in"] == summary["records_out"] + summary["records_rejected"]
        assert summary["chunks"] >= 4  # shuffled from several chunks into several buckets
    expected_valid, expected_states = reference([first, second])
    got = valid_rows(output, "day1") + valid_rows(output, "day2")
    assert_close(by_record(got), by_record(expected_valid))
    assert len(got) == len(expected_valid) < 3_500  # the outliers were rejected
    store = open_state_store(store_url)
    try:
        assert_states(stored_states(store, [f"u{i}" for i in range(40)]), expected_states)
    finally:
        store.close()
    ledger = open_ledger(own_ledger)
    buckets = ledger.buckets.chunk_states("day2")
    assert len(buckets) > 1 and all(b.status == SUCCEEDED for b in buckets)
    reasons = json.loads((output / "day1" / "manifest.json").read_text())["rejection_reasons"]
    assert set(reasons) == {"weight: outlier (|innovation| > gate * sigma)"}


def test_the_launchpad_config_runs_it_with_the_state_store_resource(tmp_path: Path) -> None:
    source = write_measurements(tmp_path / "m.csv", 600, 12, day=1, seed=3)
    store_url = f"sqlite:///{tmp_path / 'launchpad-states.db'}"
    run_config = {
        "ops": {
            "initialize": {
                "config": {
                    "source": str(source),
                    "output": str(tmp_path / "out"),
                    "batch_id": "from-launchpad",
                    "processor": "kalman",
                    "processor_options": OPTIONS,
                    "chunking": {"chunk_records": 200},
                }
            }
        },
        "resources": {"state_store": {"config": {"url": store_url}}},
    }
    result = get_batch_job().execute_in_process(run_config=run_config)
    assert result.success
    steps = {e.step_key for e in result.all_events if e.step_key}
    assert {s.split("[")[0] for s in steps} >= {"plan_buckets", "process_bucket"}
    store = open_state_store(store_url)
    try:
        _, expected = reference([source])
        assert_states(stored_states(store, list(expected)), expected)
    finally:
        store.close()


def test_a_failing_key_fails_only_its_bucket_and_a_redrive_completes_the_batch(
    tmp_path: Path, own_ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_measurements(tmp_path / "m.csv", 1_600, 30, day=1, seed=4)
    marker = tmp_path / "broken"
    marker.touch()
    options = {**OPTIONS, "fail_key": "u7", "marker": str(marker)}
    store_url = f"sqlite:///{tmp_path / 'states.db'}"
    output = tmp_path / "out"
    args = ["run", str(source), "--processor", "fault_kalman", "--processor-options",
            json.dumps(options), "--processor-module", MODULES, "--output", str(output),
            "--batch-id", "one-bad-key", "--state-store", store_url, "--chunk-records", "400",
            "--max-retries", "0", "--tolerated-failure-count", "1"]  # fmt: skip
    code, summary, out = run_cli(capsys, *args)
    assert code == 0 and summary["batch_status"] == "partial", out
    ledger = open_ledger(own_ledger)
    buckets = ledger.buckets.chunk_states("one-bad-key")
    failed = [b for b in buckets if b.status != SUCCEEDED]
    assert len(failed) == 1 and len(buckets) > 1
    assert "fault_kalman fails on key 'u7'" in (failed[0].error_message or "")
    code = main(["dead-letters", "one-bad-key", "--json"])
    listed = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and "0 dead-lettered chunk(s) and 1 bucket(s)" in listed[-2]
    assert [row["bucket"] for row in json.loads(listed[-1])] == [failed[0].chunk]
    assert main(["status", "one-bad-key", "--no-watch"]) == 0
    shown = capsys.readouterr().out
    assert f"{len(buckets) - 1} of {len(buckets)} succeeded, 0 failed, 1 dead-lettered" in shown
    store = open_state_store(store_url)
    try:
        users = [f"u{i}" for i in range(30)]
        saved = stored_states(store, users, FAULT_NAMESPACE)
        assert "u7" not in saved and len(saved) > 1  # a failed bucket saves nothing
        marker.unlink()
        code, redriven, out = run_cli(capsys, "redrive", "one-bad-key", "--state-store", store_url)
        assert code == 0 and redriven["batch_status"] == "succeeded", out
        expected_valid, expected_states = reference([source])
        assert_close(by_record(valid_rows(output, "one-bad-key")), by_record(expected_valid))
        assert_states(stored_states(store, users, FAULT_NAMESPACE), expected_states)
    finally:
        store.close()


# SIGKILL during the bucket stage, on each kind of store ------------------------------------------


@pytest.fixture
def dynamodb_table(moto_server: str) -> Iterator[str]:
    name = f"states-{uuid.uuid4().hex[:12]}"
    yield name
    client = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    if name in client.list_tables()["TableNames"]:
        client.delete_table(TableName=name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.services),
        pytest.param("dynamodb-on-s3", marks=pytest.mark.services),
    ],
)
def test_kill_9_during_the_bucket_stage_then_run_again_equals_a_clean_run(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    own_ledger: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_path = write_measurements(tmp_path / "m.csv", 3_000, 50, day=1, seed=5)
    source, output, client = str(source_path), tmp_path / "out", None
    endpoint = "http://127.0.0.1:1"  # nothing listens: no AWS call may happen
    if kind == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'states.db'}"
    elif kind == "postgres":
        store_url = request.getfixturevalue("postgres_url")
    else:  # the source and the results on S3, the states in DynamoDB
        endpoint = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        s3 = request.getfixturevalue("s3_client")
        s3.put_object(Bucket=bucket, Key="in/m.csv", Body=source_path.read_bytes())
        source = f"s3://{bucket}/in/m.csv"
        store_url = f"dynamodb://{request.getfixturevalue('dynamodb_table')}"
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    out_uri = f"s3://{bucket}/out" if kind.startswith("dynamodb") else str(output)
    args = run_args(source, out_uri, "killed-buckets", store_url, "--processor", "fault_kalman",
                    "--processor-options", json.dumps({**OPTIONS, "seconds": 0.4}),
                    "--processor-module", MODULES)  # fmt: skip
    ledger = open_ledger(own_ledger)
    log = tmp_path / "killed.log"
    env = {**cli_env(tmp_path, endpoint, own_ledger), **SHORT_LEASE}
    with cli_process(args, env, log) as process:

        def some_buckets_done() -> bool:
            states = ledger.buckets.chunk_states("killed-buckets")
            return sum(s.status == SUCCEEDED for s in states) >= 2

        wait_for(some_buckets_done, "2 buckets succeeded", process, log)
        kill(process)
    states = ledger.buckets.chunk_states("killed-buckets")
    assert 2 <= sum(s.status == SUCCEEDED for s in states) < len(states), states
    wait_for_lease_to_expire(ledger, "killed-buckets")
    if kind.startswith("dynamodb"):
        request.getfixturevalue("aws_endpoint")  # this process's runs reach moto too
    code, resumed, out = run_cli(capsys, *args)  # the same command again
    assert code == 0 and resumed["batch_status"] == "succeeded", out
    assert resumed["records_in"] == resumed["records_out"] + resumed["records_rejected"] == 3_000

    expected_valid, expected_states = reference([source_path])
    if kind.startswith("dynamodb"):
        s3 = request.getfixturevalue("s3_client")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/killed-buckets/valid/")
        rows: list[dict[str, Any]] = []
        for item in listed["Contents"]:
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rows += pq.read_table(pa.BufferReader(body)).to_pylist()
    else:
        rows = valid_rows(output, "killed-buckets")
    assert len(rows) == len(expected_valid)  # nothing lost, nothing twice
    assert_close(by_record(rows), by_record(expected_valid))
    store = open_state_store(store_url, dynamodb_client=client)
    try:
        users = sorted(expected_states)
        stored = store.load(FAULT_NAMESPACE, users)
        assert_states({k: v.state for k, v in stored.items()}, expected_states)
        assert all(v.batch_id == "killed-buckets" and v.before is None for v in stored.values())
    finally:
        store.close()
