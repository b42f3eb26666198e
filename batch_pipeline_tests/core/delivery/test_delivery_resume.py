"""Delivery that stops half-way resumes where the sink stopped accepting: every message is
delivered exactly once, with the same number, body and deduplication id whenever it is sent;
chunks delivered later (a redrive) continue the numbering and keep their totals."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_pipeline.core.common.errors import ConfigError, DeliveryError
from batch_pipeline.core.common.models import (
    BatchSpec,
    ChunkingSettings,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
    join_uri,
)
from batch_pipeline.core.delivery.breaker import CircuitBreaker
from batch_pipeline.core.delivery.deliver import DeliverySummary, deliver_batch_records, file_key
from batch_pipeline.core.delivery.sinks import Message, OnAccepted, SqsSink
from batch_pipeline.core.initialize import prepare_batch
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.pipeline import run_batch
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.conftest import drain_queue

FAULTS = ("batch_pipeline_tests.fault_processors",)
RECORDS = 20


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    rows = [f"{i},lead {i},{'north' if i % 2 else 'south'}" for i in range(RECORDS)]
    path.write_text("\n".join(["id,name,region", *rows]) + "\n")
    return path


def make_spec(
    storage: Storage,
    source: Path,
    *,
    chunk_records: int = 4,
    per_message: int = 1,
    target: str = "none",
    marker: Path | None = None,
    tolerated: int | None = None,
    output: str | None = None,
) -> BatchSpec:
    options: dict[str, Any] = {"column": "id", "value": "13", "kind": "permanent"}
    if marker is not None:
        options["marker"] = str(marker)
    else:
        options["value"] = "nothing matches"
    return prepare_batch(
        storage,
        str(source),
        processor="fault_fail_when",
        processor_options=options,
        processor_modules=FAULTS,
        chunking=ChunkingSettings(chunk_records=chunk_records),
        output=output or str(source.parent / "out"),
        delivery=DeliverySettings(target=target, records_per_message=per_message),
        retry=RetrySettings(max_retries=0),
        failures=FailureSettings(tolerated_failure_count=tolerated),
        batch_id="leads-2026",
    )


class FlakySink:
    """Takes messages in calls of ``group`` (as SQS takes up to 10), reporting each accepted
    call through ``on_accepted``; once ``accept`` messages were taken, refuses the next call
    with a transient DeliveryError. ``accept=None``: takes everything."""

    description = "flaky"

    def __init__(self, accept: int | None = None, group: int = 3) -> None:
        self.accept = accept
        self.group = group
        self.offered: list[Message] = []
        self.accepted: list[Message] = []
        self.calls: list[int] = []

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        self.calls.append(chunk_index)
        for start in range(0, len(messages), self.group):
            group = list(messages[start : start + self.group])
            self.offered += group
            if self.accept is not None and len(group) > self.accept:
                raise DeliveryError(f"sink unavailable at message {group[0].number}")
            self.accepted += group
            if self.accept is not None:
                self.accept -= len(group)
            if on_accepted:
                on_accepted([m.number for m in group])

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        return set()


def deliver(storage: Storage, ledger: Ledger, spec: BatchSpec, sink: Any) -> DeliverySummary:
    return deliver_batch_records(
        storage, ledger, spec.batch_id, file_key(spec.source), spec.delivery, sink
    )


def body(message: Message) -> dict[str, Any]:
    return json.loads(message.body)


def check_exactly_once(messages: Sequence[Message], total: int) -> None:
    """Every number 1..total once, every record once and in input order."""
    assert sorted(m.number for m in messages) == list(range(1, total + 1))
    ordered = sorted(messages, key=lambda m: m.number)
    ids = [record["id"] for m in ordered for record in body(m)["batch_data"]]
    assert ids == [str(i) for i in range(RECORDS)]
    for m in ordered:
        envelope = body(m)
        assert envelope["batch_number"] == m.number
        assert envelope["batch_id"] == m.batch_id == "leads-2026"
        assert m.dedup_id == Message("", "leads-2026", m.number).dedup_id


def test_delivery_resumes_mid_chunk(storage: Storage, ledger: Ledger, source: Path) -> None:
    spec = make_spec(storage, source)  # 5 chunks of 4 records, one record per message
    assert run_batch(storage, spec, ledger).result.status == "succeeded"

    flaky = FlakySink(accept=7, group=3)
    with pytest.raises(DeliveryError, match="sink unavailable at message 8"):
        deliver(storage, ledger, spec, flaky)
    assert [m.number for m in flaky.accepted] == [1, 2, 3, 4, 5, 6, 7]
    sent = {
        s.chunk: (s.messages_sent, s.messages, s.first_message)
        for s in ledger.chunk_states("leads-2026")
    }
    assert sent[0] == (4, 4, 1) and sent[1] == (3, 4, 5)  # recorded call by call
    assert all(sent[i] == (0, 4, 1 + 4 * i) for i in (2, 3, 4))  # numbered before any send

    healthy = FlakySink()
    summary = deliver(storage, ledger, spec, healthy)
    assert [m.number for m in healthy.accepted] == list(range(8, RECORDS + 1))
    assert healthy.calls == [1, 2, 3, 4]  # chunk 0 is not even looked at again
    assert (summary.messages, summary.records, summary.chunks) == (13, 13, 4)
    assert summary.already_delivered_chunks == 1

    check_exactly_once(flaky.accepted + healthy.accepted, RECORDS)
    assert all(body(m)["total_batches"] == RECORDS for m in flaky.accepted + healthy.accepted)
    # The message refused the first time is sent again identically: body, number, dedup id.
    [refused] = [m for m in flaky.offered if m not in flaky.accepted]
    assert refused.number == 8
    assert healthy.accepted[0] == refused and healthy.accepted[0].dedup_id == refused.dedup_id

    # Everything is with the sink: delivering again sends nothing.
    again = FlakySink()
    summary = deliver(storage, ledger, spec, again)
    assert again.calls == [] and again.offered == []
    assert (summary.messages, summary.chunks, summary.already_delivered_chunks) == (0, 0, 5)
    assert all(s.delivered for s in ledger.chunk_states("leads-2026"))


def test_failure_in_the_first_call_of_a_chunk(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source)
    run_batch(storage, spec, ledger)
    first = FlakySink(accept=8, group=4)  # chunks 0 and 1 whole, then nothing of chunk 2
    with pytest.raises(DeliveryError):
        deliver(storage, ledger, spec, first)
    second = FlakySink(accept=0)  # the sink still refuses everything
    with pytest.raises(DeliveryError):
        deliver(storage, ledger, spec, second)
    assert second.accepted == [] and second.calls == [2]
    third = FlakySink()
    deliver(storage, ledger, spec, third)
    check_exactly_once(first.accepted + third.accepted, RECORDS)
    assert [m.number for m in third.accepted] == list(range(9, RECORDS + 1))


def test_redriven_chunks_continue_the_numbering(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    broken = source.parent / "broken"
    broken.write_text("x")
    spec = make_spec(
        storage, source, per_message=2, target="local", marker=broken, tolerated=1
    )  # chunk 3 (ids 12-15) fails; two records per message, two messages per chunk
    first = run_batch(storage, spec, ledger)
    assert first.result.status == "partial"
    assert first.delivery is not None and first.delivery.messages == 8
    outbox = Path(spec.outbox)

    def read_outbox() -> dict[int, list[dict[str, Any]]]:
        return {
            int(p.stem.split("-")[1]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(outbox.glob("chunk-*.jsonl"))
        }

    early = read_outbox()
    assert {
        c: [(m["batch_number"], m["total_batches"]) for m in ms] for c, ms in early.items()
    } == {
        0: [(1, 8), (2, 8)],
        1: [(3, 8), (4, 8)],
        2: [(5, 8), (6, 8)],
        4: [(7, 8), (8, 8)],
    }
    stamps = {p.name: os.stat(p).st_mtime_ns for p in outbox.iterdir()}

    broken.unlink()
    redrive = run_batch(storage, replace(spec, mode="redrive"), ledger)
    assert redrive.result.status == "succeeded"
    assert redrive.delivery is not None
    assert (redrive.delivery.messages, redrive.delivery.chunks) == (2, 1)
    assert redrive.delivery.already_delivered_chunks == 4
    late = read_outbox()
    assert [(m["batch_number"], m["total_batches"]) for m in late[3]] == [(9, 10), (10, 10)]
    assert {c: late[c] for c in early} == early  # delivered messages keep number and total
    assert {p.name: os.stat(p).st_mtime_ns for p in outbox.iterdir() if p.name in stamps} == (
        stamps
    )  # and were not sent again
    numbers = sorted(m["batch_number"] for ms in late.values() for m in ms)
    assert numbers == list(range(1, 11))
    ids = [r["id"] for c in sorted(late) for m in late[c] for r in m["batch_data"]]
    assert ids == [str(i) for i in range(RECORDS)]  # in chunk order, every record once

    # A run after that delivers nothing more.
    done = run_batch(storage, spec, ledger)
    assert done.delivery is not None and done.delivery.messages == 0


def test_a_different_plan_after_delivery_to_another_destination_proceeds(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    """Issue 11, item 13: delivery none (or the local outbox) is not the sink that has the
    messages; a new plan there starts its delivery again instead of being refused."""
    spec = make_spec(storage, source)
    run_batch(storage, spec, ledger)
    with pytest.raises(DeliveryError):
        deliver(storage, ledger, spec, FlakySink(accept=2, group=2))
    replanned = make_spec(storage, source, chunk_records=5)
    run = run_batch(storage, replanned, ledger)
    assert run.result.records_out == RECORDS
    assert [s.messages_sent for s in ledger.chunk_states("leads-2026")] == [0, 0, 0, 0]


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.services)])
def test_a_lost_outbox_is_written_again(
    where: str, request: pytest.FixtureRequest, storage: Storage, ledger: Ledger, source: Path
) -> None:
    """The local outbox is our own folder: a chunk whose file is gone, or holds fewer messages
    than the ledger says it was given, is written again whole by the next run (even one that
    processes nothing), and the run's summary counts what it wrote. Before the fix the ledger
    said "delivered" and the rerun wrote nothing: no outbox, 0 messages, SUCCESS."""
    if where == "s3":
        output = f"s3://{request.getfixturevalue('s3_bucket')}/results"
    else:
        output = str(source.parent / "out")
    spec = make_spec(storage, source, per_message=2, target="local", output=output)
    first = run_batch(storage, spec, ledger)  # 5 chunks of 4 records, 2 messages each
    assert first.delivery is not None and first.delivery.messages == 10

    def outbox() -> dict[str, bytes]:
        return {
            uri.rsplit("/", 1)[1]: storage.read_bytes(uri)
            for uri in sorted(storage.list(spec.outbox))
        }

    written = outbox()
    assert len(written) == 5 and all(len(data.splitlines()) == 2 for data in written.values())

    # The whole batch folder is deleted: the chunks are processed again and every message of
    # every chunk is written again, with the numbers the ledger gave them.
    for uri in storage.list(spec.output):
        storage.delete(uri)
    again = run_batch(storage, spec, ledger)
    assert again.delivery is not None
    assert (again.delivery.messages, again.delivery.records, again.delivery.chunks) == (10, 20, 5)
    assert again.delivery.already_delivered_chunks == 0
    assert outbox() == written

    # One chunk's file is gone and another lost a message; nothing needs processing.
    storage.delete(join_uri(spec.outbox, "chunk-00001.jsonl"))
    cut = join_uri(spec.outbox, "chunk-00003.jsonl")
    storage.write_bytes(cut, storage.read_bytes(cut).splitlines(keepends=True)[1])
    resumed = run_batch(storage, spec, ledger)
    assert resumed.delivery is not None
    assert (resumed.delivery.messages, resumed.delivery.records) == (4, 8)
    assert (resumed.delivery.chunks, resumed.delivery.already_delivered_chunks) == (2, 3)
    assert outbox() == written

    # A forced run processes every chunk again; the outbox is whole, nothing is written.
    storage.delete(join_uri(spec.outbox, "chunk-00004.jsonl"))
    forced = run_batch(storage, replace(spec, mode="force"), ledger)
    assert forced.delivery is not None and forced.delivery.messages == 2
    assert outbox() == written
    assert run_batch(storage, spec, ledger).delivery.messages == 0  # type: ignore[union-attr]


def test_sqs_never_reports_a_message_missing(sqs_client: Any, sqs_queue: str) -> None:
    """An external queue's messages cannot be checked (they are consumed): what the ledger says
    it accepted is never sent to it again."""
    sink = SqsSink(sqs_client, sqs_queue)
    assert sink.missing(0, [1, 2, 3]) == set()
    assert sink.calls == 0


# Against SQS (moto over HTTP) ------------------------------------------------------------------


class FailsAfter:
    """A real boto3 SQS client whose send_message_batch starts failing (503) after ``calls``
    successful calls; everything else goes straight to the client."""

    def __init__(self, client: Any, calls: int) -> None:
        self.client = client
        self.left = calls

    def send_message_batch(self, **kwargs: Any) -> Any:
        if self.left <= 0:
            raise ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable", "Message": "try later"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "SendMessageBatch",
            )
        self.left -= 1
        return self.client.send_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def receive_all(sqs_client: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        response = sqs_client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["MessageDeduplicationId", "MessageGroupId"],
        )
        got = response.get("Messages", [])
        if not got:
            empty += 1
            continue
        empty = 0
        messages += got
        sqs_client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )
    return messages


def test_sqs_delivery_resumes_mid_chunk(
    storage: Storage, ledger: Ledger, source: Path, sqs_client: Any, fifo_queue: str
) -> None:
    spec = make_spec(storage, source, chunk_records=12)  # chunks of 12 and 8 records
    run_batch(storage, spec, ledger)
    failing = SqsSink(
        FailsAfter(sqs_client, calls=1),
        fifo_queue,
        max_attempts=2,
        sleep=lambda _: None,
        breaker=CircuitBreaker(fifo_queue, failure_threshold=100),
    )
    with pytest.raises(DeliveryError) as caught:
        deliver(storage, ledger, spec, failing)
    assert not caught.value.permanent and "[11, 12]" in str(caught.value)
    assert [s.messages_sent for s in ledger.chunk_states("leads-2026")] == [10, 0]

    healthy = SqsSink(sqs_client, fifo_queue)
    summary = deliver(storage, ledger, spec, healthy)
    assert (summary.messages, healthy.calls) == (10, 2)  # 2 left of chunk 0, then 8
    assert deliver(storage, ledger, spec, healthy).messages == 0 and healthy.calls == 2

    received = receive_all(sqs_client, fifo_queue)
    messages = [
        Message(m["Body"], "leads-2026", json.loads(m["Body"])["batch_number"]) for m in received
    ]
    check_exactly_once(messages, RECORDS)
    for raw, message in zip(received, messages, strict=True):
        attributes = raw["Attributes"]
        assert attributes["MessageDeduplicationId"] == message.dedup_id
        assert attributes["MessageGroupId"] == "leads-2026"
    assert [m.number for m in messages] == list(range(1, RECORDS + 1))  # FIFO: in order


class HalfAccepting:
    """A boto3 SQS client that accepts the first half of every batch call and reports the rest
    as failed (not the sender's fault), forever."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        half = max(len(Entries) // 2, 1)
        if len(Entries) == 1:
            half = 0
        accepted = self.client.send_message_batch(QueueUrl=QueueUrl, Entries=Entries[:half]) if (
            half
        ) else {"Successful": []}  # fmt: skip
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "later"}
            for e in Entries[half:]
        ]
        return {"Successful": accepted["Successful"], "Failed": failed}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_messages_accepted_by_a_call_that_failed_in_part_are_never_sent_again(
    storage: Storage, ledger: Ledger, source: Path, sqs_client: Any, sqs_queue: str
) -> None:
    """A batch call accepted in part, whose other entries keep failing until the sink gives
    up: the accepted ones are recorded at once, and the next delivery sends only the others."""
    processed = make_spec(storage, source, chunk_records=20, per_message=1)
    run_batch(storage, processed, ledger)  # delivery off: nothing delivered yet
    spec = replace(processed, delivery=replace(processed.delivery, target=sqs_queue))
    flaky = SqsSink(
        HalfAccepting(sqs_client), sqs_queue, max_attempts=1, sleep=lambda _: None,
        breaker=CircuitBreaker("q", failure_threshold=100),
    )  # fmt: skip
    with pytest.raises(DeliveryError):
        deliver(storage, ledger, spec, flaky)
    [state] = ledger.chunk_states(spec.batch_id)
    assert state.messages_sent == 5 and state.accepted_numbers() == set()  # 1-5 of 1-10 taken

    steady = SqsSink(sqs_client, sqs_queue, sleep=lambda _: None)
    summary = deliver(storage, ledger, spec, steady)
    assert summary.messages == 20 - 5
    bodies = [json.loads(b) for b in drain_queue(sqs_client, sqs_queue)]
    numbers = sorted(b["batch_number"] for b in bodies)
    assert numbers == list(range(1, 21))  # every message exactly once


def test_out_of_order_acceptance_is_kept_beyond_the_prefix(
    storage: Storage, ledger: Ledger, source: Path
) -> None:
    spec = make_spec(storage, source, chunk_records=20, per_message=1)
    run_batch(storage, spec, ledger)

    class SkipsTwo:
        description = "skips two"

        def send(self, chunk_index: int, messages: Sequence[Message], on_accepted: Any) -> None:
            on_accepted([m.number for m in messages if m.number != 2])
            raise DeliveryError("message 2 failed")

        def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
            return set()

    spec_local = replace(spec, delivery=replace(spec.delivery, target="local"))
    with pytest.raises(DeliveryError):
        deliver(storage, ledger, spec_local, SkipsTwo())
    [state] = ledger.chunk_states(spec.batch_id)
    assert state.messages_sent == 1 and state.accepted_numbers() == set(range(3, 21))
    sink = FlakySink()
    deliver(storage, ledger, spec_local, sink)
    assert [m.number for m in sink.accepted] == [2]


def test_a_different_plan_after_delivery_to_the_same_queue_is_refused(
    storage: Storage, ledger: Ledger, source: Path, sqs_client: Any, sqs_queue: str
) -> None:
    """The records went to a queue; the same batch cut into other chunks, to the same queue,
    would send them again: refused, saying what changed and what to do; nothing is sent.
    With redeliver it sends every record again, as asked."""
    spec = make_spec(storage, source, target=sqs_queue)
    run_batch(storage, spec, ledger, sqs_client)
    assert len(drain_queue(sqs_client, sqs_queue)) == RECORDS
    replanned = make_spec(storage, source, chunk_records=5, target=sqs_queue)
    with pytest.raises(ConfigError) as refused:
        run_batch(storage, replanned, ledger, sqs_client)
    assert "the chunk plan (5 chunks before, 4 now)" in str(refused.value)
    assert "--redeliver" in str(refused.value)
    assert [s.messages_sent for s in ledger.chunk_states("leads-2026")] == [4] * 5
    assert drain_queue(sqs_client, sqs_queue) == []
    again = run_batch(storage, replace(replanned, redeliver=True), ledger, sqs_client)
    assert again.delivery is not None and again.delivery.messages == RECORDS
    assert len(drain_queue(sqs_client, sqs_queue)) == RECORDS
