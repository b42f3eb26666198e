"""A Kafka topic as a sink: ``kafka://HOST:PORT/TOPIC``, through confluent-kafka's producer.

The producer is idempotent (``enable.idempotence``, ``acks=all``): the broker drops a resend of
the producer's own retries. Each message's value is the same envelope body SQS gets
(``Message.body``); its key is the value of the delivery key column its records share
(``delivery.key_column``: one partition per value, so a value's messages keep their order), else
``{batch_id}:{number}``; its header ``batch_pipeline_message`` is always ``{batch_id}:{number}``,
so a consumer can recognise a message delivered twice (a crash between the broker's
acknowledgement and the ledger's record). A
chunk's messages go out in calls of at most ``call_messages``, each flushed: ``on_accepted``
gets the numbers whose delivery report said the broker has them, so a retry, a resume or a
redrive sends only the others. The topic must exist (checked once per sink, against the
broker's list: some brokers create a topic on the first produce, which would hide a typo);
an unknown topic is a permanent ``DeliveryError``; an unreachable broker or a message not
acknowledged within ``timeout_seconds`` is a transient one, counted by the circuit breaker.
Security settings (SASL/TLS) are passed in as librdkafka settings (``security``); the core reads
no environment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from batch_pipeline.core.common.errors import ConfigError, DeliveryError
from batch_pipeline.core.delivery.breaker import CircuitBreaker
from batch_pipeline.core.delivery.sinks import Message, OnAccepted

KAFKA_PREFIX = "kafka://"
MESSAGE_HEADER = "batch_pipeline_message"  # {batch_id}:{number}, whatever the key
# HOST:PORT/TOPIC; a topic name is what Kafka accepts: 1-249 of A-Z a-z 0-9 . _ -
_TARGET = re.compile(
    r"kafka://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})/([A-Za-z0-9._-]{1,249})"
)
# The librdkafka settings a deployment may give for SASL/TLS (settings.kafka_security).
SECURITY_SETTINGS = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
)
# Delivery-report errors that another try cannot fix.
_PERMANENT = {
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_TOPIC",
    "_UNKNOWN_PARTITION",
    "MSG_SIZE_TOO_LARGE",
    "_MSG_SIZE_TOO_LARGE",
    "TOPIC_AUTHORIZATION_FAILED",
    "INVALID_RECORD",
    "TOPIC_EXCEPTION",
}
log = logging.getLogger(__name__)


def is_kafka_target(target: str) -> bool:
    return target.startswith(KAFKA_PREFIX)


def parse_kafka_target(target: str) -> tuple[str, str]:
    """``kafka://HOST:PORT/TOPIC`` -> (``HOST:PORT``, ``TOPIC``); else ConfigError."""
    found = _TARGET.fullmatch(target)
    if found is None or not 0 < int(found.group(2)) < 65536:
        raise ConfigError(
            f"delivery target {target!r} is not kafka://HOST:PORT/TOPIC (a topic name is 1-249 "
            "characters of A-Z a-z 0-9 . _ -; credentials go in the environment, not the URL)"
        )
    return f"{found.group(1)}:{found.group(2)}", found.group(3)


def producer_config(
    bootstrap: str, security: Mapping[str, str] | None = None, timeout_seconds: float = 10.0
) -> dict[str, Any]:
    """The producer's librdkafka settings: idempotent, ``acks=all``, bounded timeouts, and the
    SASL/TLS settings given (only those of ``SECURITY_SETTINGS``)."""
    unknown = set(security or {}) - set(SECURITY_SETTINGS)
    if unknown:
        raise ConfigError(f"unknown Kafka security settings {sorted(unknown)}")
    timeout_ms = max(int(timeout_seconds * 1000), 1000)
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": timeout_ms,
        "socket.connection.setup.timeout.ms": timeout_ms,
        "allow.auto.create.topics": False,
        **dict(security or {}),
    }


class KafkaSink:
    """A Kafka topic reached with a confluent-kafka ``Producer``, behind a circuit breaker."""

    def __init__(
        self,
        target: str,
        security: Mapping[str, str] | None = None,
        breaker: CircuitBreaker | None = None,
        timeout_seconds: float = 10.0,
        call_messages: int = 100,
    ) -> None:
        self.bootstrap, self.topic = parse_kafka_target(target)
        self.config = producer_config(self.bootstrap, security, timeout_seconds)
        self.breaker = breaker or CircuitBreaker(target)
        self.timeout_seconds = timeout_seconds
        self.call_messages = max(call_messages, 1)
        self.description = target
        self.calls = 0
        self._producer: Any = None
        self._topic_checked = False

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        if not messages:
            return
        self._check_topic()
        for start in range(0, len(messages), self.call_messages):
            self._send_call(messages[start : start + self.call_messages], on_accepted)

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        """None: a topic's messages are consumed downstream; what it acknowledged is never
        resent."""
        return set()

    def close(self) -> None:
        """Flushes what is still queued (bounded) and drops the producer."""
        if self._producer is not None:
            self._producer.flush(self.timeout_seconds)
            self._producer = None

    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self.config, logger=log)
        return self._producer

    def _check_topic(self) -> None:
        """The topic exists on the broker: else a permanent DeliveryError (checked once)."""
        if self._topic_checked:
            return
        from confluent_kafka import KafkaException

        self.breaker.before_call()
        try:
            metadata = self.producer().list_topics(timeout=self.timeout_seconds)
        except KafkaException as exc:
            self.breaker.record_failure()
            raise DeliveryError(
                f"Kafka broker {self.bootstrap} unreachable (no answer within "
                f"{self.timeout_seconds:g}s): {exc.args[0] if exc.args else exc}"
            ) from exc
        self.breaker.record_success()
        if self.topic not in metadata.topics:
            raise DeliveryError(
                f"Kafka topic {self.topic!r} does not exist on {self.bootstrap}: create it "
                "(with the partitions and retention its consumers need) or fix the target",
                permanent=True,
            )
        self._topic_checked = True

    def _send_call(self, call: Sequence[Message], on_accepted: OnAccepted | None) -> None:
        """Produce ``call``, wait for its delivery reports, report what was acknowledged."""
        from confluent_kafka import KafkaException

        acknowledged: list[int] = []
        failed: dict[int, Any] = {}

        def report(err: Any, msg: Any, number: int) -> None:
            if err is None:
                acknowledged.append(number)
            else:
                failed[number] = err

        self.breaker.before_call()  # raises CircuitOpenError while the broker keeps failing
        self.calls += 1
        producer = self.producer()
        try:
            for message in call:
                message_id = f"{message.batch_id}:{message.number}".encode()
                producer.produce(
                    self.topic,
                    value=message.body.encode(),
                    key=message.key.encode() if message.key is not None else message_id,
                    headers=[(MESSAGE_HEADER, message_id)],
                    on_delivery=lambda err, msg, n=message.number: report(err, msg, n),
                )
        except (KafkaException, BufferError) as exc:
            failed.setdefault(-1, exc)
        # Past message.timeout.ms every message has its report; what is still queued then is
        # purged, so that it cannot reach the broker after the ledger counted it unsent.
        queued = producer.flush(self.timeout_seconds + 2)
        if queued:
            producer.purge()
            producer.flush(1)
        if acknowledged and on_accepted:
            on_accepted(sorted(acknowledged))
        if failed or queued:
            self._producer = None  # the next call starts with a fresh producer
        self._raise_for(call, acknowledged, failed, queued)

    def _raise_for(
        self, call: Sequence[Message], acknowledged: list[int], failed: dict[int, Any], queued: int
    ) -> None:
        if not failed and not queued:
            self.breaker.record_success()
            return
        unsent = sorted(m.number for m in call if m.number not in set(acknowledged))
        names = {_name(err) for err in failed.values()}
        detail = "; ".join(sorted({str(err) for err in failed.values()}))
        if names & _PERMANENT:
            raise DeliveryError(
                f"{self.description} refused messages {unsent}: {detail}", permanent=True
            )
        self.breaker.record_failure()
        waited = f"{queued} still queued after {self.timeout_seconds:g}s" if queued else ""
        raise DeliveryError(
            f"{len(unsent)} message(s) {unsent} not acknowledged by {self.description}: "
            + "; ".join(part for part in (detail, waited) if part)
        )


def _name(err: Any) -> str:
    """The name of a confluent-kafka error (``KafkaError.name()``), or of an exception."""
    inner = err.args[0] if isinstance(err, Exception) and err.args else err
    name = getattr(inner, "name", None)
    return str(name()) if callable(name) else type(err).__name__
