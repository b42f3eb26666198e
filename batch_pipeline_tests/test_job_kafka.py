"""batch_job delivering to a Kafka topic on a real Kafka-protocol broker (Tansu)."""

import socket
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, RunConfig

from batch_pipeline.config import BatchConfig, ChunkingConfig, DeliveryConfig, RetryConfig
from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample
from batch_pipeline.definitions import get_batch_job
from batch_pipeline_tests.conftest import read_topic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def leads(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("leads")
    csv_path, _ = write_sample(str(directory), 1_000, invalid_fraction=0.05)
    return Path(csv_path)


def config(leads: Path, output: Path, target: str, **delivery) -> BatchConfig:
    return BatchConfig(
        source=str(leads),
        processor="validate",
        processor_options=DEMO_SCHEMA,
        chunking=ChunkingConfig(chunk_records=300),
        output=str(output),
        delivery=DeliveryConfig(target=target, records_per_message=40, **delivery),
        retry=RetryConfig(max_retries=0),
    )


def run(batch: BatchConfig, raise_on_error: bool = True):
    return get_batch_job().execute_in_process(
        run_config=RunConfig(ops={"initialize": batch}), raise_on_error=raise_on_error
    )


def test_batch_job_delivers_to_kafka_what_the_outbox_gets(
    leads: Path, tmp_path: Path, kafka_topic: str
) -> None:
    result = run(config(leads, tmp_path / "kafka", kafka_topic))
    delivered = result.output_for_node("deliver")
    assert delivered.target == kafka_topic and delivered.messages > 1
    again = run(config(leads, tmp_path / "kafka", kafka_topic))  # nothing left to send
    assert again.output_for_node("deliver").messages == 0
    local = run(config(leads, tmp_path / "local", "local"))
    batch_id = local.output_for_node("aggregate").batch_id
    outbox = tmp_path / "local" / batch_id / "outbox"
    lines = [line for f in sorted(outbox.iterdir()) for line in f.read_text().splitlines()]

    found = read_topic(kafka_topic)
    assert [value for _, value in found] == lines  # same bodies, in the same order, once
    assert [key for key, _ in found] == [
        f"{batch_id}:{n}" for n in range(1, delivered.messages + 1)
    ]


def test_an_unreachable_broker_fails_the_run_clearly(leads: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    target = f"kafka://127.0.0.1:{port}/leads"
    result = run(config(leads, tmp_path, target, breaker_failures=1), raise_on_error=False)
    assert not result.success
    failures = [
        e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type == DagsterEventType.STEP_FAILURE
    ]
    assert len(failures) == 1
    assert f"Kafka broker 127.0.0.1:{port} unreachable" in failures[0]
    assert time.monotonic() - started < 40
