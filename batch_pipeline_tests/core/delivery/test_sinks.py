"""Sinks: the local outbox, and SQS (moto over HTTP, and a scripted fake for failures)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.delivery.breaker import CircuitBreaker
from batch_pipeline.core.delivery.packing import envelope
from batch_pipeline.core.delivery.sinks import (
    Message,
    OutboxSink,
    SqsSink,
    is_sqs_target,
    resolve_queue_url,
)
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.conftest import drain_queue


def messages(count: int, batch_id: str = "batch-1", start: int = 1, size: int = 0) -> list[Message]:
    return [
        Message(
            body=json.dumps({"batch_number": n, "pad": "x" * size, "text": 'é"\n'}),
            batch_id=batch_id,
            number=n,
        )
        for n in range(start, start + count)
    ]


# Outbox ------------------------------------------------------------------------------------------


def test_outbox_writes_one_jsonl_file_per_chunk(tmp_path: Path, storage: Storage) -> None:
    sink = OutboxSink(storage, str(tmp_path / "outbox"))
    first, second = messages(3), messages(2, start=4)
    sink.send(0, first)
    sink.send(12, second)
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert files == ["chunk-00000.jsonl", "chunk-00012.jsonl"]
    text = (tmp_path / "outbox" / "chunk-00000.jsonl").read_text(encoding="utf-8")
    assert text == "".join(m.body + "\n" for m in first)
    lines = (tmp_path / "outbox" / "chunk-00012.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["batch_number"] for line in lines] == [4, 5]
    assert sink.description == str(tmp_path / "outbox")


def test_outbox_resend_never_rewrites_with_less(tmp_path: Path, storage: Storage) -> None:
    """Issue 11, item 5: a partial resend (the second half) or an empty one left only what it
    was given in the chunk's file; every message delivered before must stay."""
    sink = OutboxSink(storage, str(tmp_path / "outbox"))
    path = tmp_path / "outbox" / "chunk-00000.jsonl"
    first = [
        Message(envelope("b", "k", b'{"id": "%d"}' % n, n, 6).decode(), "b", n) for n in range(1, 7)
    ]
    sink.send(0, first[:3])
    sink.send(0, first[3:])  # the second half, as a resumed delivery sends it
    assert path.read_text().splitlines() == [m.body for m in first]
    sink.send(0, [])
    assert path.read_text().splitlines() == [m.body for m in first]
    sink.send(0, first[4:5])  # a resend of one message replaces it, in its place
    assert path.read_text().splitlines() == [m.body for m in first]
    # Bodies in another layout are read by their batch_number.
    other = messages(4)
    sink.send(1, other[2:])
    sink.send(1, other[:2])
    lines = (tmp_path / "outbox" / "chunk-00001.jsonl").read_text().splitlines()
    assert [json.loads(line)["batch_number"] for line in lines] == [1, 2, 3, 4]
    sink.send(2, [])  # a chunk with no messages still gets its (empty) file
    assert (tmp_path / "outbox" / "chunk-00002.jsonl").read_bytes() == b""
    (tmp_path / "outbox" / "chunk-00003.jsonl").write_text("not a message\n")
    with pytest.raises(DeliveryError, match="holds a line that is not a message"):
        sink.send(3, messages(1))


def test_message_ids_are_deterministic() -> None:
    a = Message(body="x", batch_id="b", number=1)
    assert a.dedup_id == Message(body="other", batch_id="b", number=1).dedup_id
    assert a.dedup_id != Message(body="x", batch_id="b", number=2).dedup_id
    assert a.dedup_id != Message(body="x", batch_id="c", number=1).dedup_id
    assert len(a.dedup_id) <= 128
    assert a.group_id == "b"
    odd = Message(body="x", batch_id="my batch ü", number=1)  # SQS refuses spaces and non-ASCII
    assert odd.group_id.isascii() and " " not in odd.group_id and len(odd.group_id) <= 128
    assert odd.group_id == Message(body="y", batch_id="my batch ü", number=9).group_id
    assert len(Message(body="x", batch_id="b" * 200, number=1).group_id) <= 128


# SQS against moto --------------------------------------------------------------------------------


class Recording:
    """Wraps a boto3 client and records the entries of each send_message_batch call."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[list[dict[str, Any]]] = []

    def send_message_batch(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs["Entries"])
        return self.client.send_message_batch(**kwargs)


def test_sqs_delivers_every_message_once_intact(sqs_client: Any, sqs_queue: str) -> None:
    recording = Recording(sqs_client)
    sink = SqsSink(recording, sqs_queue)
    sent = messages(25)
    sink.send(0, sent[:13])
    sink.send(1, sent[13:])
    assert [len(c) for c in recording.calls] == [10, 3, 10, 2]
    assert sink.calls == 4
    bodies = drain_queue(sqs_client, sqs_queue)
    assert sorted(bodies) == sorted(m.body for m in sent)
    assert len(bodies) == len(set(bodies)) == 25
    for entries in recording.calls:
        assert all("MessageGroupId" not in e for e in entries)  # a standard queue


def test_sqs_batch_byte_limit_splits_calls(sqs_client: Any, sqs_queue: str) -> None:
    recording = Recording(sqs_client)
    sent = messages(9, size=1000)
    body_size = len(sent[0].body.encode())
    sink = SqsSink(recording, sqs_queue, max_batch_bytes=3 * body_size)
    sink.send(0, sent)
    assert [len(c) for c in recording.calls] == [3, 3, 3]
    for entries in recording.calls:
        assert sum(len(e["MessageBody"].encode()) for e in entries) <= 3 * body_size
    # One byte less: only two bodies fit in a call.
    recording.calls.clear()
    SqsSink(recording, sqs_queue, max_batch_bytes=3 * body_size - 1).send(1, sent)
    assert [len(c) for c in recording.calls] == [2, 2, 2, 2, 1]
    assert sorted(drain_queue(sqs_client, sqs_queue)) == sorted(m.body for m in sent * 2)


def test_sqs_fifo_gets_group_and_dedup_ids(sqs_client: Any, fifo_queue: str) -> None:
    sink = SqsSink(sqs_client, fifo_queue)
    assert sink.fifo
    sent = messages(12, batch_id="batch-fifo")
    sink.send(0, sent)
    received: list[dict[str, Any]] = []
    while True:
        response = sqs_client.receive_message(
            QueueUrl=fifo_queue,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            VisibilityTimeout=60,
        )
        batch = response.get("Messages", [])
        if not batch:
            break
        received += batch
        sqs_client.delete_message_batch(
            QueueUrl=fifo_queue,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    assert [m["Body"] for m in received] == [m.body for m in sent]  # FIFO: in order
    for message, original in zip(received, sent, strict=True):
        assert message["Attributes"]["MessageGroupId"] == "batch-fifo"
        assert message["Attributes"]["MessageDeduplicationId"] == original.dedup_id


def test_sqs_fifo_drops_a_resent_message(sqs_client: Any, fifo_queue: str) -> None:
    sink = SqsSink(sqs_client, fifo_queue)
    sent = messages(3, batch_id="again")
    sink.send(0, sent)
    sink.send(0, sent)  # a re-run of the chunk: same ids, deduplicated by SQS
    assert sorted(drain_queue(sqs_client, fifo_queue)) == sorted(m.body for m in sent)


def test_sqs_fifo_batch_id_that_sqs_refuses_as_a_group(sqs_client: Any, fifo_queue: str) -> None:
    sent = messages(2, batch_id="leads 2024 é")
    SqsSink(sqs_client, fifo_queue).send(0, sent)
    assert sorted(drain_queue(sqs_client, fifo_queue)) == sorted(m.body for m in sent)


def test_resolve_queue_url(sqs_client: Any, sqs_queue: str) -> None:
    name = sqs_queue.rsplit("/", 1)[-1]
    assert resolve_queue_url(sqs_client, f"sqs://{name}") == sqs_queue
    assert resolve_queue_url(sqs_client, sqs_queue) == sqs_queue
    with pytest.raises(DeliveryError, match="no-such-queue") as info:
        resolve_queue_url(sqs_client, "sqs://no-such-queue")
    assert info.value.permanent
    assert is_sqs_target("sqs://q") and is_sqs_target(sqs_queue)
    assert not is_sqs_target("local") and not is_sqs_target("none")


def test_sqs_missing_queue_is_permanent_without_retries(sqs_client: Any, sqs_queue: str) -> None:
    slept: list[float] = []
    gone = sqs_queue + "-gone"
    sink = SqsSink(sqs_client, gone, sleep=slept.append)
    with pytest.raises(DeliveryError) as info:
        sink.send(0, messages(2))
    assert info.value.permanent
    assert sink.calls == 1 and slept == []


# SQS failures, scripted --------------------------------------------------------------------------


class FakeSqs:
    """Records send_message_batch calls and answers from a script: for call k, the set of
    entry bodies' batch numbers to fail, and whether the failure is the sender's."""

    def __init__(
        self,
        fail: dict[int, set[int]] | None = None,
        sender_fault: bool = False,
        fail_always: set[int] | None = None,
        raise_on: dict[int, Exception] | None = None,
    ) -> None:
        self.fail = fail or {}
        self.sender_fault = sender_fault
        self.fail_always = fail_always or set()
        self.raise_on = raise_on or {}
        self.calls: list[list[dict[str, Any]]] = []
        self.accepted: list[str] = []

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries: list[dict[str, Any]] = kwargs["Entries"]
        call = len(self.calls)
        self.calls.append([dict(e) for e in entries])
        if call in self.raise_on:
            raise self.raise_on[call]
        failing = self.fail.get(call, set()) | self.fail_always
        successful, failed = [], []
        for entry in entries:
            number = json.loads(entry["MessageBody"])["batch_number"]
            if number in failing:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": self.sender_fault,
                        "Code": "InvalidMessageContents" if self.sender_fault else "InternalError",
                        "Message": "scripted failure",
                    }
                )
            else:
                successful.append({"Id": entry["Id"], "MessageId": uuid.uuid4().hex})
                self.accepted.append(entry["MessageBody"])
        response: dict[str, Any] = {"Successful": successful}
        if failed:
            response["Failed"] = failed
        return response


def numbers_of(entries: list[dict[str, Any]]) -> list[int]:
    return [json.loads(e["MessageBody"])["batch_number"] for e in entries]


def test_failed_entries_are_retried_and_only_those() -> None:
    fake = FakeSqs(fail={0: {2, 5}, 1: {5}})
    slept: list[float] = []
    sink = SqsSink(fake, "https://sqs.test/123/q", base_delay=0.5, sleep=slept.append)
    sent = messages(12)
    sink.send(0, sent)
    assert [numbers_of(c) for c in fake.calls] == [
        list(range(1, 11)),
        [2, 5],  # the two failures, retried
        [5],  # the one that failed again
        [11, 12],  # the next batch
    ]
    ids = [[e["Id"] for e in c] for c in fake.calls]
    assert ids[1] == [ids[0][1], ids[0][4]]  # entries keep their ids across attempts
    assert sorted(fake.accepted) == sorted(m.body for m in sent)
    assert len(fake.accepted) == 12  # nothing accepted twice
    assert len(slept) == 2
    assert 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 1.0  # full jitter under the backoff cap


def test_backoff_is_capped_by_max_delay() -> None:
    fake = FakeSqs(fail={k: {1} for k in range(6)})
    slept: list[float] = []
    sink = SqsSink(
        fake,
        "https://sqs.test/123/q",
        max_attempts=8,
        base_delay=1.0,
        max_delay=3.0,
        sleep=slept.append,
        breaker=CircuitBreaker("q", failure_threshold=100),  # this test is about the backoff
    )
    sink.send(0, messages(1))
    assert len(slept) == 6
    assert all(0 <= s <= cap for s, cap in zip(slept, [1, 2, 3, 3, 3, 3], strict=True))


def test_sender_fault_entries_raise_permanent_errors() -> None:
    fake = FakeSqs(fail={0: {3}}, sender_fault=True)
    slept: list[float] = []
    sink = SqsSink(fake, "https://sqs.test/123/q", sleep=slept.append)
    with pytest.raises(DeliveryError) as info:
        sink.send(0, messages(4))
    assert info.value.permanent
    assert "message 3" in str(info.value) and "InvalidMessageContents" in str(info.value)
    assert len(fake.calls) == 1 and slept == []


def test_persistent_failure_names_the_messages_after_max_attempts() -> None:
    fake = FakeSqs(fail_always={4, 7})
    slept: list[float] = []
    sink = SqsSink(fake, "https://sqs.test/123/q", max_attempts=3, sleep=slept.append)
    with pytest.raises(DeliveryError) as info:
        sink.send(0, messages(8))
    assert not info.value.permanent
    message = str(info.value)
    assert "[4, 7]" in message and "after 3 attempts" in message and "InternalError" in message
    assert len(fake.calls) == 3 and len(slept) == 2
    assert [numbers_of(c) for c in fake.calls[1:]] == [[4, 7], [4, 7]]


def test_transient_call_errors_are_retried() -> None:
    throttled = ClientError(
        {
            "Error": {"Code": "RequestThrottled", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "SendMessageBatch",
    )
    unreachable = EndpointConnectionError(endpoint_url="https://sqs.test")
    fake = FakeSqs(raise_on={0: throttled, 1: unreachable})
    slept: list[float] = []
    sink = SqsSink(fake, "https://sqs.test/123/q", sleep=slept.append)
    sent = messages(3)
    sink.send(0, sent)
    assert len(fake.calls) == 3 and len(slept) == 2
    assert fake.accepted == [m.body for m in sent]


def test_sender_call_errors_are_permanent() -> None:
    too_long = ClientError(
        {
            "Error": {"Code": "AWS.SimpleQueueService.BatchRequestTooLong", "Message": "too long"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "SendMessageBatch",
    )
    fake = FakeSqs(raise_on={0: too_long})
    slept: list[float] = []
    with pytest.raises(DeliveryError, match="BatchRequestTooLong") as info:
        SqsSink(fake, "https://sqs.test/123/q", sleep=slept.append).send(0, messages(2))
    assert info.value.permanent
    assert len(fake.calls) == 1 and slept == []


def test_fifo_entries_carry_ids_in_the_fake() -> None:
    fake = FakeSqs()
    sent = messages(2, batch_id="b-9")
    SqsSink(fake, "https://sqs.test/123/q.fifo").send(0, sent)
    assert [(e["MessageGroupId"], e["MessageDeduplicationId"]) for e in fake.calls[0]] == [
        ("b-9", m.dedup_id) for m in sent
    ]
