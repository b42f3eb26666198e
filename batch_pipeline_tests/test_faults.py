"""Real faults at job and CLI level, against a moto server over HTTP.

- A run killed with SIGKILL (while processing, and while delivering) and run again ends with
  the same valid records as a clean run, and its queue holds every valid record exactly once.
- Storage and queue calls that fail (HTTP 503, connections dropped) on their way to the server
  are retried: the run's counts are exact and every record is delivered once.
- A chunk that keeps failing is dead-lettered and the run carries on; tolerated failures, the
  failure message, redrive (CLI and job) and the dead-letter queue.
- Chunks completing concurrently (multiprocess executor) leave exact ledger progress.

Faults are real: a process killed by PID, a proxy in front of the server, processors that raise
(``fault_processors``). Nothing in the pipeline is patched.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from dagster import RunConfig

from batch_pipeline.config import RedriveConfig
from batch_pipeline.core.ledger import DEAD_LETTERED, SUCCEEDED, open_ledger
from batch_pipeline.definitions import get_redrive_job
from batch_pipeline_tests.conftest import drain_queue
from batch_pipeline_tests.fault_helpers import (
    CLI,
    FAULTS_MODULE,
    SHORT_LEASE,
    assert_each_once,
    cli_env,
    cli_process,
    csv_input,
    drain_messages,
    kill,
    manifest_of,
    run_cli,
    valid_table,
    wait_for,
    wait_for_lease_to_expire,
)
from batch_pipeline_tests.fault_proxy import S3_SLOW_DOWN, Action, FaultProxy, Request

pytestmark = pytest.mark.slow

MALFORMED = (7, 450, 1313)  # records with an extra field: rejected by the reader


def new_queue(sqs_client: Any, fifo: bool = False) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    if fifo:
        return sqs_client.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
    return sqs_client.create_queue(QueueName=name)["QueueUrl"]


def put_csv(s3_client: Any, bucket: str, key: str, records: int) -> tuple[str, list[str]]:
    data, valid = csv_input(records, MALFORMED)
    s3_client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}", valid


def assert_same_as_clean_run(
    s3_client: Any,
    sqs_client: Any,
    faulted: dict[str, Any],
    faulted_queue: str,
    clean: dict[str, Any],
    clean_queue: str,
    valid_ids: list[str],
) -> None:
    """Both runs succeeded with the same totals and the same valid records in the same order;
    each queue holds every valid record exactly once."""
    for summary in (faulted, clean):
        assert summary["status"] == "SUCCESS", summary
        assert summary["records_in"] == summary["records_out"] + summary["records_rejected"]
    totals = ("records_in", "records_out", "records_rejected", "chunks")
    assert {k: faulted[k] for k in totals} == {k: clean[k] for k in totals}
    assert faulted["records_rejected"] == faulted["records_in"] - len(valid_ids) > 0
    faulted_valid = valid_table(s3_client, manifest_of(s3_client, faulted))
    clean_valid = valid_table(s3_client, manifest_of(s3_client, clean))
    assert faulted_valid.to_pylist() == clean_valid.to_pylist()
    assert faulted_valid.column("id").to_pylist() == valid_ids
    assert_each_once(drain_messages(sqs_client, faulted_queue), valid_ids)
    assert_each_once(drain_messages(sqs_client, clean_queue), valid_ids)


def run_args(source: str, output: str, queue: str, batch_id: str, *extra: str) -> list[str]:
    return [
        "run", source, "--output", output, "--deliver", queue, "--batch-id", batch_id,
        "--processor-module", FAULTS_MODULE, "--retry-delay", "0.05", *extra,
    ]  # fmt: skip


# 1. kill -9 ------------------------------------------------------------------------------------


def test_kill_9_while_processing_then_run_again(
    tmp_path: Path,
    own_ledger: str,
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
    sqs_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, valid_ids = put_csv(s3_client, s3_bucket, "in/kill.csv", 2_000)
    queue, clean_queue = new_queue(sqs_client), new_queue(sqs_client)
    args = run_args(
        source, f"s3://{s3_bucket}/out", queue, "killed-processing",
        "--processor", "fault_slow", "--processor-options", '{"seconds": 0.25}',
        "--chunk-records", "125", "--records-per-message", "20",
    )  # fmt: skip
    ledger = open_ledger(own_ledger)
    log = tmp_path / "killed.log"
    env = {**cli_env(tmp_path, moto_server, own_ledger), **SHORT_LEASE}
    with cli_process(args, env, log) as process:

        def some_done() -> bool:
            progress = ledger.progress("killed-processing")
            return progress.total > 0 and progress.succeeded >= 3

        wait_for(some_done, "3 chunks succeeded", process, log)
        kill(process)
    progress = ledger.progress("killed-processing")
    assert 3 <= progress.succeeded < progress.total == 16, progress
    assert drain_queue(sqs_client, queue) == []  # killed before delivery began

    wait_for_lease_to_expire(ledger, "killed-processing")  # the killed run's
    code, resumed, _ = run_cli(capsys, *args)  # the same command again
    assert code == 0, resumed
    assert ledger.progress("killed-processing").succeeded == 16
    clean_args = run_args(
        source, f"s3://{s3_bucket}/clean", clean_queue, "clean-processing",
        "--processor", "fault_slow", "--processor-options", '{"seconds": 0}',
        "--chunk-records", "125", "--records-per-message", "20",
    )  # fmt: skip
    code, clean, _ = run_cli(capsys, *clean_args)
    assert code == 0, clean
    assert_same_as_clean_run(s3_client, sqs_client, resumed, queue, clean, clean_queue, valid_ids)


def is_send_batch(request: Request) -> bool:
    return request.sqs_action == "SendMessageBatch"


@pytest.mark.parametrize(
    "fifo",
    [
        pytest.param(False, id="standard-queue-call-never-reached-the-queue"),
        pytest.param(True, id="fifo-queue-call-accepted-but-never-recorded"),
    ],
)
def test_kill_9_while_delivering_then_run_again(
    fifo: bool,
    tmp_path: Path,
    own_ledger: str,
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
    sqs_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The run is killed while one of its send_message_batch calls is in flight (held by the
    proxy after 8 accepted calls). Standard queue: the held call is dropped, the queue never
    sees it. FIFO queue: the held call reaches the queue after the kill, so the queue has
    messages the ledger does not know were sent; the run again re-sends them with the same
    deduplication ids. Either way every record arrives exactly once."""
    records = 1_000 if fifo else 2_000
    source, valid_ids = put_csv(s3_client, s3_bucket, "in/deliver.csv", records)
    queue, clean_queue = new_queue(sqs_client, fifo), new_queue(sqs_client, fifo)
    batch_id = f"killed-delivering-{'fifo' if fifo else 'std'}"
    args = run_args(
        source, f"s3://{s3_bucket}/out", queue, batch_id,
        "--chunk-records", "250", "--records-per-message", "10",
    )  # fmt: skip
    ledger = open_ledger(own_ledger)
    log = tmp_path / "killed.log"
    with FaultProxy(moto_server) as proxy:
        proxy.hold(is_send_batch, after=8)
        env = {**cli_env(tmp_path, proxy.url, own_ledger), **SHORT_LEASE}
        with cli_process(args, env, log) as process:
            wait_for(proxy.held.is_set, "a send_message_batch call in flight", process, log)
            kill(process)
        # The ledger records exactly the messages of the calls the queue answered.
        accepted = sum(call.entries for call in proxy.sqs_calls if is_send_batch(call))
        assert sum(s.messages_sent for s in ledger.chunk_states(batch_id)) == accepted
        total = max(s.total_messages or 0 for s in ledger.chunk_states(batch_id))
        assert 0 < accepted < total <= records // 10
        forwarded = proxy.forwarded["sqs"]
        proxy.release("forward" if fifo else "drop")
        in_queue = accepted
        if fifo:
            wait_for(lambda: proxy.forwarded["sqs"] == forwarded + 1, "the held call sent")
            in_queue += proxy.sqs_calls[-1].entries  # accepted, but the ledger never knew
    depth = sqs_client.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(depth) == in_queue

    wait_for_lease_to_expire(ledger, batch_id)  # the killed run's
    code, resumed, _ = run_cli(capsys, *args)  # the same command again (straight to moto)
    assert code == 0, resumed
    assert resumed["delivered_messages"] == total - accepted
    assert sum(s.messages_sent for s in ledger.chunk_states(batch_id)) == total
    clean_args = run_args(
        source, f"s3://{s3_bucket}/clean", clean_queue, f"clean-{batch_id}",
        "--chunk-records", "250", "--records-per-message", "10",
    )  # fmt: skip
    code, clean, _ = run_cli(capsys, *clean_args)
    assert code == 0, clean
    assert_same_as_clean_run(s3_client, sqs_client, resumed, queue, clean, clean_queue, valid_ids)


# 2. transient storage and queue faults ---------------------------------------------------------


def test_transient_503_and_dropped_connections_are_retried_with_exact_counts(
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
    sqs_client: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A seeded 20% of the S3 and SQS requests fail before they reach the server, half with
    HTTP 503 SlowDown, half with a dropped connection."""
    source, valid_ids = put_csv(s3_client, s3_bucket, "in/flaky.csv", 3_000)
    queue, clean_queue = new_queue(sqs_client), new_queue(sqs_client)
    common = ("--chunk-records", "1000", "--records-per-message", "20", "--max-retries", "5")
    faults = FaultProxy(moto_server, fault_rate=0.2, seed=7)
    with faults as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        args = run_args(source, f"s3://{s3_bucket}/flaky", queue, "flaky", *common)
        code, faulted, out = run_cli(capsys, *args)
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    assert code == 0, out
    for kind in ("503", "drop"):
        for service in ("s3", "sqs"):
            assert proxy.injected[kind, service] > 0, (kind, service, proxy.injected)
    assert proxy.forwarded["s3"] > 0 and proxy.forwarded["sqs"] > 0

    clean_args = run_args(source, f"s3://{s3_bucket}/steady", clean_queue, "steady", *common)
    code, clean, _ = run_cli(capsys, *clean_args)
    assert code == 0, clean
    assert faulted["records_in"] == 3_000
    assert_same_as_clean_run(s3_client, sqs_client, faulted, queue, clean, clean_queue, valid_ids)


class SlowDownOnce:
    """A proxy rule: 503 SlowDown to the first range GET shorter than S3's error body."""

    def __init__(self) -> None:
        self.spent = False

    def __call__(self, request: Request) -> Action | None:
        small = (request.range_bytes or 1 << 30) < len(S3_SLOW_DOWN)
        if self.spent or request.method != "GET" or not small:
            return None
        self.spent = True
        return "503"


def test_503_on_a_range_read_shorter_than_the_error_body_is_retried(
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyarrow's AWS SDK cannot read a 503 body longer than the range it asked for ('Failed to
    flush response stream') and does not retry it; a whole object smaller than the error body
    is read with such a range. Storage retries it."""
    body = b"id,name\n1,a\n2,b\n3,c\n"
    assert len(body) < len(S3_SLOW_DOWN)
    s3_client.put_object(Bucket=s3_bucket, Key="in/tiny.csv", Body=body)
    once = SlowDownOnce()
    with FaultProxy(moto_server, rule=once) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        code, summary, out = run_cli(
            capsys, "run", f"s3://{s3_bucket}/in/tiny.csv", "--output", str(tmp_path / "out"),
            "--deliver", "none",
        )  # fmt: skip
    assert once.spent, "no small range read happened"
    assert code == 0, out
    assert summary["records_in"] == 3


# 3. chunks that keep failing ------------------------------------------------------------------


POISON = "250"  # the id of a record in chunk 2 of 5 (100 records per chunk)


@pytest.fixture
def poisoned(tmp_path: Path) -> dict[str, Any]:
    """A local CSV of 500 records, and the options of a processor that fails permanently on
    the chunk holding record 250 while a marker file exists."""
    data, valid = csv_input(500)
    source = tmp_path / "leads.csv"
    source.write_bytes(data)
    marker = tmp_path / "fault-on"
    marker.write_text("on")
    options = {"column": "id", "value": POISON, "kind": "permanent", "marker": str(marker)}
    return {"source": str(source), "valid": valid, "marker": marker, "options": options}


def poisoned_args(
    poisoned: dict[str, Any], output: Path, queue: str, batch_id: str, *extra: str
) -> list[str]:
    return [
        *run_args(poisoned["source"], str(output), queue, batch_id, *extra),
        "--processor", "fault_fail_when",
        "--processor-options", json.dumps(poisoned["options"]),
        "--chunk-records", "100", "--records-per-message", "25",
    ]  # fmt: skip


def test_permanent_failure_is_dead_lettered_fails_the_run_and_redrive_completes_it(
    poisoned: dict[str, Any],
    tmp_path: Path,
    own_ledger: str,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "out"
    args = poisoned_args(poisoned, output, sqs_queue, "poisoned")
    code, summary, out = run_cli(capsys, *args)
    assert code == 1
    assert summary["status"] == "FAILURE" and summary["batch_status"] == "failed"
    dead_letter = output / "poisoned" / "dead_letters" / "chunk-00002.json"
    assert "1 of 5 chunk(s) failed" in summary["error"], summary["error"]
    assert f"dead letters under {output / 'poisoned'}/dead_letters/" in summary["error"]
    assert "Traceback" not in out
    document = json.loads(dead_letter.read_text())
    assert document["chunk"] == 2 and document["attempts"] == 1  # permanent: no retry
    assert f"injected permanent fault: record with id={POISON}" in document["error"]
    assert document["category"] == "processor" and document["transient"] is False
    assert document["redrive"] == "batch-pipeline redrive poisoned"

    manifest = json.loads((output / "poisoned" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert [s["chunk"] for s in manifest["results"]["succeeded"]] == [0, 1, 3, 4]
    [failed] = manifest["results"]["failed"]
    assert failed["chunk"] == 2 and failed["status"] == DEAD_LETTERED
    assert failed["dead_letter"] == str(dead_letter)
    assert manifest["totals"]["records_in"] == 400 == manifest["totals"]["records_out"]
    assert drain_queue(sqs_client, sqs_queue) == []  # a failed batch delivers nothing

    assert run_cli(capsys, "dead-letters", "poisoned")[1] == [
        {
            "chunk": 2,
            "attempts": 1,
            "category": "processor",
            "error": failed["error"],
            "dead_letter": str(dead_letter),
        }
    ]

    poisoned["marker"].unlink()  # the fault is fixed
    code, redriven, out = run_cli(capsys, "redrive", "poisoned")
    assert code == 0, out
    assert redriven["batch_status"] == "succeeded"
    assert redriven["records_in"] == 500 == redriven["records_out"]
    states = open_ledger(own_ledger).chunk_states("poisoned")
    assert [s.status for s in states] == [SUCCEEDED] * 5
    assert [s.attempts for s in states] == [1, 1, 2, 1, 1]  # only chunk 2 ran again
    assert_each_once(drain_messages(sqs_client, sqs_queue), poisoned["valid"])


@pytest.mark.parametrize(
    ("tolerance", "redrive_with"),
    [
        pytest.param(("--tolerated-failure-count", "1"), "cli", id="count-then-cli-redrive"),
        pytest.param(
            ("--tolerated-failure-percentage", "20"), "job", id="percentage-then-redrive-job"
        ),
    ],
)
def test_tolerated_failure_delivers_the_rest_and_redrive_delivers_the_remainder(
    tolerance: tuple[str, str],
    redrive_with: str,
    poisoned: dict[str, Any],
    tmp_path: Path,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "out"
    code, summary, out = run_cli(
        capsys, *poisoned_args(poisoned, output, sqs_queue, "p", *tolerance)
    )
    assert code == 0, out
    assert summary["batch_status"] == "partial"
    assert summary["records_in"] == 400 and summary["chunks_failed"] == 1
    assert [f["chunk"] for f in summary["failed_chunks"]] == [2]
    assert (output / "p" / "dead_letters" / "chunk-00002.json").exists()
    first = drain_messages(sqs_client, sqs_queue)
    without_chunk_2 = [i for i in poisoned["valid"] if not 200 <= int(i) < 300]
    assert_each_once(first, without_chunk_2)

    poisoned["marker"].unlink()
    if redrive_with == "cli":
        code, redriven, out = run_cli(capsys, "redrive", "p")
        assert code == 0, out
        assert redriven["batch_status"] == "succeeded" and redriven["records_in"] == 500
    else:
        result = get_redrive_job().execute_in_process(
            run_config=RunConfig(ops={"load_batch": RedriveConfig(batch_id="p")})
        )
        assert result.success
        batch = result.output_for_node("aggregate")
        assert batch.status == "succeeded" and batch.records_in == 500
        assert result.output_for_node("deliver").records == 100
    second = drain_messages(sqs_client, sqs_queue)
    assert_each_once(first + second, poisoned["valid"])
    assert {m["batch_number"] for m in second} == set(range(17, 21))  # numbering continues


def test_transient_failure_that_recovers_within_max_retries_leaves_no_dead_letter(
    poisoned: dict[str, Any],
    tmp_path: Path,
    own_ledger: str,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    counter = tmp_path / "attempts"
    poisoned["options"].update(kind="transient", times=2, counter=str(counter))
    output = tmp_path / "out"
    code, summary, out = run_cli(
        capsys, *poisoned_args(poisoned, output, sqs_queue, "flaky-chunk", "--max-retries", "3")
    )
    assert code == 0, out
    assert summary["batch_status"] == "succeeded" and summary["records_in"] == 500
    assert counter.read_text() == "3"  # failed twice, then succeeded
    ledger = open_ledger(own_ledger)
    assert [s.attempts for s in ledger.chunk_states("flaky-chunk")] == [1, 1, 3, 1, 1]
    assert ledger.dead_letters("flaky-chunk") == []
    assert not (output / "flaky-chunk" / "dead_letters").exists()
    assert_each_once(drain_messages(sqs_client, sqs_queue), poisoned["valid"])


def test_transient_failure_beyond_max_retries_goes_to_the_dead_letter_queue(
    poisoned: dict[str, Any],
    tmp_path: Path,
    own_ledger: str,
    sqs_client: Any,
    sqs_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    poisoned["options"].update(kind="transient")
    dead_letter_queue = new_queue(sqs_client)
    output = tmp_path / "out"
    code, summary, out = run_cli(
        capsys,
        *poisoned_args(
            poisoned, output, sqs_queue, "to-dlq",
            "--max-retries", "2", "--dead-letter-queue", dead_letter_queue,
            "--tolerated-failure-count", "1",
        ),
    )  # fmt: skip
    assert code == 0, out
    assert summary["batch_status"] == "partial"
    [state] = open_ledger(own_ledger).dead_letters("to-dlq")
    assert state.chunk == 2 and state.attempts == 3 and state.error_category == "connection"
    [message] = drain_messages(sqs_client, dead_letter_queue)
    assert message == json.loads(
        (output / "to-dlq" / "dead_letters" / "chunk-00002.json").read_text()
    )
    assert message["batch_id"] == "to-dlq" and message["chunk"] == 2
    assert message["transient"] is True and message["attempts"] == 3
    assert "injected transient fault" in message["error"]
    sqs_client.delete_queue(QueueUrl=dead_letter_queue)


# 4. concurrent completion --------------------------------------------------------------------


def test_multiprocess_run_leaves_exact_progress(tmp_path: Path, own_ledger: str) -> None:
    """20 chunks on the multiprocess executor (forkserver, 2 at once) complete concurrently,
    each writing the ledger from its own process; progress ends at exactly 100%.

    The run is a process of its own: a forkserver keeps the environment it started with, so
    in this (pytest) process, where another test may have started one already, steps could
    see another test's BATCH_PIPELINE_LEDGER_URL."""
    data, valid = csv_input(2_000, MALFORMED)
    source = tmp_path / "rows.csv"
    source.write_bytes(data)
    env = cli_env(tmp_path, "http://127.0.0.1:9", own_ledger)
    done = subprocess.run(
        [CLI, "run", str(source), "--output", str(tmp_path / "out"), "--chunk-records", "100",
         "--batch-id", "concurrent", "--executor", "multiprocess", "--max-concurrent", "2",
         "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    progress = open_ledger(own_ledger).progress("concurrent")
    assert progress.total == progress.succeeded == 20 == summary["chunks"]
    assert progress.percent == 100.0
    assert progress.pending == progress.running == progress.failed == 0
    assert progress.records_in == 2_000 == summary["records_in"]
    assert progress.records_out == len(valid) == summary["records_out"]
    assert progress.records_rejected == len(MALFORMED) == summary["records_rejected"]
