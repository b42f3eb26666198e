"""Messages keyed by a record column (``delivery.key_column``): one value per message, each
value's records in input order; Kafka's message key (one partition per value) and a FIFO
queue's MessageGroupId."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.common.models import DeliverySettings, Plan
from batch_pipeline.core.delivery.kafka_sink import MESSAGE_HEADER, KafkaSink
from batch_pipeline.core.delivery.packing import pack
from batch_pipeline.core.delivery.sinks import SqsSink
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.ledger.digests import sent_settings
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.conftest import new_topic
from batch_pipeline_tests.core.delivery.test_deliver import (
    BATCH,
    FILE_KEY,
    Recording,
    deliver_files,
)
from batch_pipeline_tests.fault_helpers import run_cli

KEYED = DeliverySettings(records_per_message=3, key_column="user")


def write_keyed(tmp_path: Path, sizes: list[int], users: int = 4) -> tuple[list[str], list[dict]]:
    """Chunks of records whose ``user`` cycles over ``users`` values (and a null now and
    then); ``seq`` numbers every record in input order."""
    files, everything, seq = [], [], 0
    for index, size in enumerate(sizes):
        rows = []
        for _ in range(size):
            user = None if seq % 7 == 6 else f"u{(seq * 5) % users}"
            rows.append({"seq": seq, "user": user, "value": seq / 3})
            seq += 1
        uri = tmp_path / "valid" / f"chunk-{index:05d}.parquet"
        uri.parent.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([("seq", pa.int64()), ("user", pa.string()), ("value", pa.float64())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), uri)
        files.append(str(uri))
        everything += rows
    return files, everything


def test_pack_with_groups_never_mixes_two_groups() -> None:
    lengths = np.array([10, 10, 10, 10, 10, 10, 10])
    groups = np.array([0, 0, 0, 0, 1, 2, 2])
    assert pack(lengths, 3, 1000, groups) == [(0, 3), (3, 4), (4, 5), (5, 7)]
    assert pack(lengths, 3, 1000) == [(0, 3), (3, 6), (6, 7)]
    assert pack(lengths, 10, 21, groups) == [(0, 2), (2, 4), (4, 5), (5, 7)]  # by size too


def test_keyed_messages_hold_one_value_each_in_input_order(
    tmp_path: Path, storage: Storage
) -> None:
    files, records = write_keyed(tmp_path, [11, 0, 9])
    sink = Recording()
    summary = deliver_files(storage, BATCH, FILE_KEY, files, KEYED, sink)
    messages = [m for _, sent in sink.sent for m in sent]
    assert summary.records == len(records) == 20
    assert [m.number for m in messages] == list(range(1, len(messages) + 1))
    per_key: dict[str | None, list[int]] = defaultdict(list)
    for message in messages:
        body = json.loads(message.body)
        assert 1 <= len(body["batch_data"]) <= 3
        assert {r["user"] for r in body["batch_data"]} == {message.key}
        per_key[message.key] += [r["seq"] for r in body["batch_data"]]
    assert sorted(s for seqs in per_key.values() for s in seqs) == list(range(20))  # all, once
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), key  # a value's records in input order
    assert None in per_key  # records with no value are delivered, in messages with no key


def test_a_missing_or_nested_key_column_fails_delivery_before_sending(
    tmp_path: Path, storage: Storage
) -> None:
    files, _ = write_keyed(tmp_path, [5])
    sink = Recording()
    settings = DeliverySettings(key_column="customer")
    with pytest.raises(DeliveryError, match="column customer is not one of its columns") as raised:
        deliver_files(storage, BATCH, FILE_KEY, files, settings, sink)
    assert raised.value.permanent and "chunk 0" in str(raised.value)
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"user": pa.array([{"a": 1}, {"a": 2}])}), nested)
    with pytest.raises(DeliveryError, match="cannot key a message") as raised:
        deliver_files(storage, BATCH, FILE_KEY, [str(nested)], KEYED, sink)
    assert raised.value.permanent
    assert sink.sent == []


def test_numbers_keep_the_key_column_as_text(tmp_path: Path, storage: Storage) -> None:
    uri = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"user": [7, 8, 7], "v": [1, 2, 3]}), uri)
    sink = Recording()
    deliver_files(storage, BATCH, FILE_KEY, [str(uri)], KEYED, sink)
    assert [(m.key, len(json.loads(m.body)["batch_data"])) for m in sink.sent[0][1]] == [
        ("7", 2),
        ("8", 1),
    ]


def read_partitions(target: str, partitions: int) -> dict[int, list[tuple[str, str, dict]]]:
    """Every message of each partition: (key, value, headers) in offset order."""
    from confluent_kafka import Consumer, TopicPartition

    bootstrap, topic = target[len("kafka://") :].split("/", 1)
    found: dict[int, list[tuple[str, str, dict]]] = {}
    for partition in range(partitions):
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "tests", "enable.auto.commit": False}
        )
        try:
            consumer.assign([TopicPartition(topic, partition, 0)])
            messages: list[tuple[str, str, dict]] = []
            quiet = 0
            while quiet < 10:
                message = consumer.poll(0.1)
                if message is None or message.error() is not None:
                    quiet += 1
                    continue
                quiet = 0
                headers = {k: v.decode() for k, v in message.headers() or []}
                messages.append((message.key().decode(), message.value().decode(), headers))
            found[partition] = messages
        finally:
            consumer.close()
    return found


@pytest.fixture
def partitioned_topic(kafka_broker: str) -> str:
    """A topic of three partitions of this test's own."""
    return new_topic(kafka_broker, partitions=3)


def test_kafka_keys_put_each_value_on_one_partition_in_order(
    tmp_path: Path, storage: Storage, partitioned_topic: str
) -> None:
    files, records = write_keyed(tmp_path, [30, 25], users=6)
    settings = DeliverySettings(records_per_message=2, key_column="user")
    summary = deliver_files(storage, BATCH, FILE_KEY, files, settings, KafkaSink(partitioned_topic))
    found = read_partitions(partitioned_topic, 3)
    assert sum(len(m) for m in found.values()) == summary.messages
    partition_of: dict[str, set[int]] = defaultdict(set)
    seqs_of: dict[str, list[int]] = defaultdict(list)
    numbers = []
    for partition, messages in found.items():
        for key, value, headers in messages:
            body = json.loads(value)
            numbers.append(body["batch_number"])
            assert headers[MESSAGE_HEADER] == f"{BATCH}:{body['batch_number']}"
            users = {r["user"] for r in body["batch_data"]}
            if key.startswith(f"{BATCH}:"):  # records with no user: keyed by message
                assert users == {None} and key == headers[MESSAGE_HEADER]
                continue
            assert users == {key}
            partition_of[key].add(partition)
            seqs_of[key] += [r["seq"] for r in body["batch_data"]]
    assert sorted(numbers) == list(range(1, summary.messages + 1))  # each message once
    assert len(partition_of) == 6 and all(len(p) == 1 for p in partition_of.values())
    assert len({p for ps in partition_of.values() for p in ps}) > 1  # spread over partitions
    for key, seqs in seqs_of.items():
        expected = [r["seq"] for r in records if r["user"] == key]
        assert seqs == expected, key  # the partition's order is the value's input order


def test_a_fifo_queue_groups_by_the_key_value(
    tmp_path: Path, storage: Storage, sqs_client: Any, fifo_queue: str
) -> None:
    files, _ = write_keyed(tmp_path, [14])
    deliver_files(storage, BATCH, FILE_KEY, files, KEYED, SqsSink(sqs_client, fifo_queue))
    groups: dict[str, list[list[int]]] = defaultdict(list)
    for _ in range(20):
        response = sqs_client.receive_message(
            QueueUrl=fifo_queue,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["MessageGroupId"],
            VisibilityTimeout=60,
        )
        batch = response.get("Messages", [])
        if not batch:
            break
        for message in batch:
            body = json.loads(message["Body"])
            users = {r["user"] for r in body["batch_data"]}
            group = message["Attributes"]["MessageGroupId"]
            assert users == ({None} if group == BATCH else {group})
            groups[group].append([r["seq"] for r in body["batch_data"]])
            sqs_client.delete_message(QueueUrl=fifo_queue, ReceiptHandle=message["ReceiptHandle"])
    assert set(groups) == {"u0", "u1", "u2", "u3", BATCH}
    assert sum(len(s) for seqs in groups.values() for s in seqs) == 14
    for seqs in groups.values():
        flat = [s for part in seqs for s in part]
        assert flat == sorted(flat)  # FIFO within a group: input order


def test_the_key_column_is_part_of_the_packing_a_ledger_compares(
    tmp_path: Path, storage: Storage
) -> None:
    source = tmp_path / "data.csv"
    source.write_text("user,v\na,1\n")
    spec = prepare_batch(storage, str(source), output=str(tmp_path / "out"))
    keyed = replace(spec, delivery=replace(spec.delivery, key_column="user"))
    other = replace(spec, delivery=replace(spec.delivery, key_column="account"))
    plan = Plan(chunks=[], chunk_records=1, reason="", total_records=0, exact_records=True)
    digests = [sent_settings(s, plan)["packing"] for s in (spec, keyed, other)]
    assert len(set(digests)) == 3
    # Without a key the digest is the one ledgers from before the setting hold.
    assert digests[0] == hashlib.sha256(json.dumps([100, 262144]).encode()).hexdigest()


def test_the_command_line_delivers_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "events.csv"
    rows = [f"{i},u{i % 3},{i * 2}" for i in range(45)]
    source.write_text("seq,user,value\n" + "\n".join(rows) + "\n")
    code, summary, out = run_cli(
        capsys, "run", str(source), "--output", str(tmp_path / "out"), "--chunk-records", "15",
        "--records-per-message", "4", "--deliver-key", "user",
    )  # fmt: skip
    assert code == 0, out
    per_chunk = [
        [json.loads(line) for line in f.read_text().splitlines()]
        for f in sorted((Path(summary["output"]) / "outbox").iterdir())
    ]
    seqs: dict[str, list[int]] = defaultdict(list)
    for bodies in per_chunk:
        users: Counter[str] = Counter()
        for body in bodies:
            (user,) = {r["user"] for r in body["batch_data"]}  # one user per message
            users[user] += len(body["batch_data"])
            seqs[user] += [int(r["seq"]) for r in body["batch_data"]]
        assert len(bodies) == sum(-(-n // 4) for n in users.values())  # packed tight, per user
    assert sorted(s for ss in seqs.values() for s in ss) == list(range(45))
    assert all(ss == sorted(ss) for ss in seqs.values())
