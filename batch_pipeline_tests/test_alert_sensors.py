"""The alert sensors against real components: failed runs of the real jobs on a temporary
Dagster instance, a real SQLite ledger, and a real webhook (an HTTP server on 127.0.0.1).

- ``batch_run_failure_alert``: a batch_job run that failed in aggregate (a dead-lettered chunk)
  is reported with its batch id (from initialize's output metadata), exact ledger counts, dead
  letter and manifest links and the failed step's error; a run that failed in initialize says
  it had no batch id and names its source; the run's tag and a redrive's run config give the
  batch id; a webhook that keeps failing fails the evaluation and leaves a note on the run.
- ``batch_dead_letter_alert``: the first tick alerts nothing of the history and records where
  it starts; new dead letters give one alert per batch, once; ticks without any skip with a
  reason; the cursor carries across ticks; an unsent alert is never skipped over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    SensorResult,
    build_run_status_sensor_context,
    build_sensor_context,
    execute_job,
    reconstructable,
)

from batch_pipeline.automation.alerts import (
    ALERT_SENSORS,
    BATCH_ID_TAG,
    batch_dead_bucket_alert,
    batch_dead_letter_alert,
    batch_run_failure_alert,
    decode_cursor,
    run_batch_id,
)
from batch_pipeline.automation.requests import BATCH_ID_TAG as UPLOAD_BATCH_ID_TAG
from batch_pipeline.cli.parser import build_parser
from batch_pipeline.cli.run_config import run_config_from_args
from batch_pipeline.core.automation.alerts import ALERT_WEBHOOK_ENV, AlertDeliveryError
from batch_pipeline.core.common.models import BucketPlan
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.definitions import get_batch_job, get_redrive_job
from batch_pipeline.jobs import batch_job, redrive_job
from batch_pipeline.resources import (
    LedgerResource,
    SQSResource,
    StateStoreResource,
    StorageResource,
)
from batch_pipeline_tests.core.automation.test_alerts import WebhookReceiver
from batch_pipeline_tests.core.ledger.test_ledger import make_plan, make_spec, summary_for
from batch_pipeline_tests.fault_helpers import FAULTS_MODULE, csv_input


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookReceiver]:
    """A webhook receiver, named in BATCH_PIPELINE_ALERT_WEBHOOK."""
    with WebhookReceiver() as receiver:
        monkeypatch.setenv(ALERT_WEBHOOK_ENV, receiver.url)
        yield receiver


def test_sensors_load_with_the_jobs_and_resources() -> None:
    defs = Definitions(
        jobs=[batch_job, redrive_job],
        sensors=ALERT_SENSORS,
        resources={
            "ledger": LedgerResource(),
            "storage": StorageResource(),
            "sqs": SQSResource(),
            "state_store": StateStoreResource(),
        },
    )
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} == {
        "batch_run_failure_alert",
        "batch_dead_letter_alert",
        "batch_dead_bucket_alert",
    }
    assert batch_dead_letter_alert.minimum_interval_seconds == 60
    for sensor_def in ALERT_SENSORS:
        assert sensor_def.default_status.value == "STOPPED"
        assert sensor_def.required_resource_keys == {"ledger"}
        assert "BATCH_PIPELINE_ALERT_WEBHOOK" in (sensor_def.description or "")


# Run failures ----------------------------------------------------------------------------------


def run_failing(
    instance: DagsterInstance,
    job_fn: Any,
    run_config: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> Any:
    """Execute a job that fails; its run (as stored) and its run failure event."""
    with execute_job(
        reconstructable(job_fn),
        instance=instance,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    ) as result:
        assert not result.success
        event = result.get_run_failure_event()
        spec = None
        for node in ("initialize", "load_batch"):
            try:
                spec = result.output_for_node(node)
                break
            except Exception:
                continue
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run, event, spec


def evaluate_failure_sensor(instance: DagsterInstance, run: Any, event: Any, ledger_url: str):
    context = build_run_status_sensor_context(
        sensor_name="batch_run_failure_alert",
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=event,
        resources={"ledger": LedgerResource(url=ledger_url)},
    ).for_run_failure()
    return batch_run_failure_alert(context)


def cli_run_config(*args: str) -> dict[str, Any]:
    return run_config_from_args(build_parser().parse_args(["run", *args]))


@pytest.fixture
def dead_letter_run_config(tmp_path: Path) -> dict[str, Any]:
    """batch_job on 20 records in 4 chunks of 5; the chunk with id 7 (chunk 1) fails for good,
    so it is dead-lettered and aggregate fails the run (no failure tolerated)."""
    source = tmp_path / "in.csv"
    source.write_bytes(csv_input(20)[0])
    return cli_run_config(
        str(source),
        "--chunk-records", "5",
        "--output", str(tmp_path / "out"),
        "--deliver", "none",
        "--processor", "fault_fail_when",
        "--processor-options", '{"column": "id", "value": "7", "kind": "permanent"}',
        "--processor-module", FAULTS_MODULE,
    )  # fmt: skip


@pytest.mark.slow
def test_failed_batch_run_alerts_with_batch_id_counts_and_reason(
    instance: DagsterInstance,
    own_ledger: str,
    ledger: Ledger,
    webhook: WebhookReceiver,
    dead_letter_run_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    run, event, spec = run_failing(instance, get_batch_job, dead_letter_run_config)
    batch_id = spec.batch_id
    assert run_batch_id(instance, run) == (batch_id, "initialize output metadata")

    assert evaluate_failure_sensor(instance, run, event, own_ledger) is None
    assert len(webhook.bodies) == 1
    payload = webhook.bodies[0]
    assert payload["kind"] == "run_failure"
    assert payload["batch_id"] == batch_id
    assert payload["run_id"] == run.run_id
    assert payload["job_name"] == "batch_job"
    assert payload["counts"] == {
        "chunks_total": 4,
        "chunks_succeeded": 3,
        "chunks_failed": 0,
        "chunks_dead_lettered": 1,
        "chunks_unfinished": 0,
        "records_in": 15,
        "records_out": 15,
        "records_rejected": 0,
    }
    assert payload["reason"].startswith(f"aggregate: batch {batch_id}: ")
    output = tmp_path / "out" / batch_id
    assert payload["links"] == [
        str(output / "dead_letters" / "chunk-00001.json"),
        str(output / "manifest.json"),
    ]
    assert [(c["chunk"], c["category"]) for c in payload["chunks"]] == [
        (1, ledger.dead_letters(batch_id)[0].error_category)
    ]
    assert "injected permanent fault" in payload["chunks"][0]["error"]
    assert f"batch {batch_id}: run of batch_job failed" in payload["text"]
    assert "chunks: 4 total, 3 succeeded, 0 failed, 1 dead-lettered" in payload["text"]


@pytest.mark.slow
def test_run_failing_in_initialize_says_it_had_no_batch_id(
    instance: DagsterInstance, own_ledger: str, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.csv")
    run, event, _ = run_failing(
        instance, get_batch_job, cli_run_config(missing, "--output", str(tmp_path / "out"))
    )
    assert run_batch_id(instance, run) == (None, "nowhere")
    evaluate_failure_sensor(instance, run, event, own_ledger)
    (payload,) = webhook.bodies
    assert payload["batch_id"] is None
    assert payload["summary"] == (
        f"run of batch_job failed before a batch id existed (source {missing})"
    )
    assert payload["source"] == missing
    assert payload["counts"] == {}
    assert payload["reason"].startswith("initialize: ")
    assert "missing.csv" in payload["reason"]


@pytest.mark.slow
def test_batch_id_from_the_run_tag_and_from_a_redrive_config(
    instance: DagsterInstance, own_ledger: str, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    config = cli_run_config(str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out"))
    assert BATCH_ID_TAG == UPLOAD_BATCH_ID_TAG  # the tag the upload sensor puts on its runs
    run, event, _ = run_failing(instance, get_batch_job, config, tags={BATCH_ID_TAG: "tagged-1"})
    assert run_batch_id(instance, run) == ("tagged-1", f"tag {BATCH_ID_TAG}")
    evaluate_failure_sensor(instance, run, event, own_ledger)

    redrive = {"ops": {"load_batch": {"config": {"batch_id": "never-ran"}}}}
    run, event, _ = run_failing(instance, get_redrive_job, redrive)
    assert run_batch_id(instance, run) == (
        "never-ran",
        "run config ops.load_batch.config.batch_id",
    )
    evaluate_failure_sensor(instance, run, event, own_ledger)

    tagged, redriven = webhook.bodies
    assert tagged["batch_id"] == "tagged-1"
    assert "batch tagged-1 is not in the ledger" in tagged["summary"]
    assert redriven["batch_id"] == "never-ran"
    assert redriven["job_name"] == "redrive_job"
    assert redriven["reason"].startswith("load_batch: ")
    assert "never-ran" in redriven["reason"]


@pytest.mark.slow
def test_webhook_failure_fails_the_evaluation_and_notes_it_on_the_run(
    instance: DagsterInstance, own_ledger: str, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    config = cli_run_config(str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out"))
    run, event, _ = run_failing(instance, get_batch_job, config)
    webhook.statuses = [502, 502, 502]
    with pytest.raises(AlertDeliveryError, match=r"HTTP 502 .*after 3 attempt"):
        evaluate_failure_sensor(instance, run, event, own_ledger)
    assert len(webhook.requests) == 3
    notes = [
        r.event_log_entry.dagster_event.message
        for r in instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT
        ).records
    ]
    assert any("batch_run_failure_alert could not send its alert" in (n or "") for n in notes)


# Dead letters ----------------------------------------------------------------------------------


def tick(
    own_ledger: str, cursor: str | None, sensor: Any = batch_dead_letter_alert
) -> SensorResult:
    context = build_sensor_context(
        cursor=cursor, resources={"ledger": LedgerResource(url=own_ledger)}
    )
    result = sensor(context)
    assert isinstance(result, SensorResult)
    assert result.run_requests == []
    return result


def skip(result: SensorResult) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def dead_letter(ledger: Ledger, batch_id: str, chunk: int, category: str = "processor") -> None:
    time.sleep(0.002)  # distinct updated_at values: the order below is the order of the calls
    ledger.mark_dead_lettered(
        batch_id,
        chunk,
        category,
        f"{category} error in chunk {chunk}",
        f"s3://o/{batch_id}/{chunk}",
    )


def register(ledger: Ledger, batch_id: str, chunks: int) -> None:
    ledger.register_batch(make_spec(batch_id), make_plan(chunks))


@pytest.mark.slow
def test_dead_letter_sensor_starts_from_now_then_alerts_each_batch_once(
    own_ledger: str, ledger: Ledger, webhook: WebhookReceiver
) -> None:
    register(ledger, "b1", 4)
    register(ledger, "b2", 3)
    ledger.mark_succeeded("b1", summary_for(1, 4, records=10, rejected=2), "fp")
    dead_letter(ledger, "b1", 0)  # history: before the sensor was turned on

    first = tick(own_ledger, None)
    assert skip(first).startswith("first tick: starting from now; the 1 dead letter(s) already")
    assert "chunk 0 of batch b1" in skip(first)
    assert webhook.requests == []
    assert first.cursor is not None
    after, _ = decode_cursor(first.cursor)
    assert after is not None and after[1:] == ("b1", 0)

    quiet = tick(own_ledger, first.cursor)
    assert skip(quiet).startswith("no new dead letters since chunk 0 of batch b1 (dead-lettered at")
    assert quiet.cursor == first.cursor
    assert webhook.requests == []

    dead_letter(ledger, "b2", 1, "bad_data")
    dead_letter(ledger, "b1", 2, "timeout")
    dead_letter(ledger, "b2", 0, "processor")
    alerted = tick(own_ledger, quiet.cursor)
    assert skip(alerted) == (
        "alerted 3 new dead letter(s) in 2 batch(es): b2 (2 chunk(s)), b1 (1 chunk(s))"
    )
    b2, b1 = webhook.bodies  # batches in the order of their first new dead letter
    assert b2["kind"] == b1["kind"] == "dead_letter"
    assert (b2["batch_id"], [c["chunk"] for c in b2["chunks"]]) == ("b2", [0, 1])
    assert b2["links"] == ["s3://o/b2/0", "s3://o/b2/1"]
    assert b2["summary"] == "2 chunk(s) dead-lettered (chunk 0, 1; bad_data, processor)"
    assert b2["counts"]["chunks_total"] == 3 and b2["counts"]["chunks_dead_lettered"] == 2
    assert b2["counts"]["chunks_unfinished"] == 1
    # b1's alert is about its new dead letter only; its counts are the whole batch's.
    assert (b1["batch_id"], [c["chunk"] for c in b1["chunks"]]) == ("b1", [2])
    assert b1["reason"] == "chunk 2: timeout: timeout error in chunk 2"
    assert b1["counts"] == {
        "chunks_total": 4,
        "chunks_succeeded": 1,
        "chunks_failed": 0,
        "chunks_dead_lettered": 2,
        "chunks_unfinished": 1,
        "records_in": 10,
        "records_out": 8,
        "records_rejected": 2,
    }

    # The stored cursor carries to the next ticks (a context rebuilt from it): nothing again.
    for _ in range(2):
        again = tick(own_ledger, alerted.cursor)
        assert skip(again).startswith("no new dead letters since chunk 0 of batch b2")
    assert len(webhook.requests) == 2

    # A chunk dead-lettered again after a redrive is a new dead letter.
    ledger.reset("b1", [0])
    dead_letter(ledger, "b1", 0)
    later = tick(own_ledger, alerted.cursor)
    assert [(b["batch_id"], [c["chunk"] for c in b["chunks"]]) for b in webhook.bodies[2:]] == [
        ("b1", [0])
    ]
    assert skip(tick(own_ledger, later.cursor)).startswith("no new dead letters since")


@pytest.mark.slow
def test_first_tick_on_an_empty_ledger_misses_nothing_after_it(
    own_ledger: str, ledger: Ledger, webhook: WebhookReceiver
) -> None:
    first = tick(own_ledger, None)
    assert skip(first).startswith("first tick: no dead-lettered chunks in the ledger at sqlite:///")
    assert skip(tick(own_ledger, first.cursor)).startswith(
        "no new dead letters since the sensor started at "
    )
    register(ledger, "b1", 2)
    dead_letter(ledger, "b1", 1)
    tick(own_ledger, first.cursor)
    assert [b["batch_id"] for b in webhook.bodies] == ["b1"]


@pytest.mark.slow
def test_unsent_dead_letter_alerts_are_not_skipped(
    own_ledger: str, ledger: Ledger, webhook: WebhookReceiver
) -> None:
    register(ledger, "b1", 3)
    register(ledger, "b2", 3)
    start = tick(own_ledger, None).cursor
    dead_letter(ledger, "b1", 0)
    dead_letter(ledger, "b1", 1)
    dead_letter(ledger, "b2", 2)

    # The webhook is down: the tick fails and its cursor stays where it was.
    webhook.statuses = [500, 500, 500]
    with pytest.raises(
        AlertDeliveryError, match="could not send the dead_letter alert of batch b1"
    ):
        tick(own_ledger, start)
    assert webhook.bodies == []

    # It takes b1's alert, then fails on b2's: the cursor stops before b2's dead letter.
    webhook.statuses = [200, 503, 503, 503]
    partial = tick(own_ledger, start)
    assert "sent 1 alert(s) (batch b1 (2 chunk(s))), then FAILED" in skip(partial)
    assert partial.cursor is not None
    after, _ = decode_cursor(partial.cursor)
    assert after is not None and after[1:] == ("b1", 1)
    assert [b["batch_id"] for b in webhook.bodies] == ["b1"]

    # Back up: the next tick sends b2's alert, once.
    done = tick(own_ledger, partial.cursor)
    assert skip(done) == "alerted 1 new dead letter(s) in 1 batch(es): b2 (1 chunk(s))"
    assert [b["batch_id"] for b in webhook.bodies] == ["b1", "b2"]
    assert skip(tick(own_ledger, done.cursor)).startswith("no new dead letters since chunk 2 of b")


def test_unreadable_cursor_is_refused_clearly(own_ledger: str) -> None:
    with pytest.raises(ValueError, match=r"unreadable cursor .*reset the sensor's cursor"):
        tick(own_ledger, "not json")


def test_dead_lettered_buckets_have_their_own_sensor_and_cursor(
    own_ledger: str, ledger: Ledger, webhook: WebhookReceiver
) -> None:
    buckets = BucketPlan(count=3, key_column="user_id", scheme="fnv1a64", reason="test")
    ledger.register_batch(make_spec("keyed"), replace(make_plan(2), buckets=buckets))
    first = tick(own_ledger, None, batch_dead_bucket_alert)
    assert skip(first).startswith("first tick: no dead-lettered buckets in the ledger")
    chunks_first = tick(own_ledger, None)

    time.sleep(0.002)
    ledger.buckets.mark_dead_lettered(
        "keyed", 1, "processor", "fault on key 'u7'", "s3://o/keyed/dead_letters/bucket-00001.json"
    )
    alerted = tick(own_ledger, first.cursor, batch_dead_bucket_alert)
    assert skip(alerted) == "alerted 1 new dead letter(s) in 1 batch(es): keyed (1 bucket(s))"
    (body,) = webhook.bodies
    assert body["summary"].startswith("1 bucket(s) dead-lettered (bucket 1; processor)")
    assert [c["bucket"] for c in body["chunks"]] == [1]
    assert body["links"] == ["s3://o/keyed/dead_letters/bucket-00001.json"]
    # The chunks' sensor does not see bucket rows; the bucket's alert is not sent twice.
    assert skip(tick(own_ledger, chunks_first.cursor)).startswith("no new dead letters")
    assert skip(tick(own_ledger, alerted.cursor, batch_dead_bucket_alert)).startswith(
        "no new dead letters since bucket 1 of batch keyed"
    )
    assert len(webhook.bodies) == 1
