"""Delivery of a batch's valid files, chunk by chunk, to the outbox and to SQS (moto)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batch_pipeline.core.common.errors import DeliveryError
from batch_pipeline.core.common.models import ChunkSummary, DeliverySettings
from batch_pipeline.core.delivery.deliver import DeliverySummary, deliver_batch_records
from batch_pipeline.core.delivery.sinks import Message, OnAccepted, OutboxSink, Sink, SqsSink
from batch_pipeline.core.ledger import SUCCEEDED, Ledger
from batch_pipeline.core.stores.storage import Storage
from batch_pipeline_tests.conftest import drain_queue

BATCH = "leads-0123abcd"
FILE_KEY = "incoming/leads.csv"


def write_chunks(tmp_path: Path, sizes: Sequence[int]) -> tuple[list[str], list[dict[str, Any]]]:
    """Valid files of consecutive records, one per chunk; and all records in order."""
    files, everything, start = [], [], 0
    for index, size in enumerate(sizes):
        rows = [
            {"id": k, "name": f'Zoë "{k}"\n', "score": k / 4 if k % 5 else None}
            for k in range(start, start + size)
        ]
        start += size
        uri = str(tmp_path / "valid" / f"chunk-{index:05d}.parquet")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), uri)
        files.append(uri)
        everything += rows
    return files, everything


def chunk_ledger(batch_id: str, files: Sequence[str]) -> Ledger:
    """A ledger in which ``files`` are the succeeded chunks of ``batch_id``, nothing delivered."""
    ledger = Ledger("sqlite://")
    rows = [
        {
            "batch_id": batch_id,
            "chunk": index,
            "status": SUCCEEDED,
            "attempts": 1,
            "messages_sent": 0,
            "summary": json.dumps(
                ChunkSummary(
                    index, f"chunk_{index:05d}", len(files), 0, 0, 0, 0, 0.0, 0, uri, None
                ).to_dict()
            ),
        }
        for index, uri in enumerate(files)
    ]
    if rows:
        with ledger.engine.begin() as conn:
            conn.execute(sa.insert(ledger.chunks), rows)
    return ledger


def deliver_files(
    storage: Storage,
    batch_id: str,
    file_key: str,
    files: Sequence[str],
    settings: DeliverySettings,
    sink: Sink,
    ledger: Ledger | None = None,
) -> DeliverySummary:
    """Deliver ``files`` as the succeeded chunks of a batch in a ledger of their own (or in
    ``ledger``, which has them already)."""
    if ledger is None:
        ledger = chunk_ledger(batch_id, files)
    return deliver_batch_records(storage, ledger, batch_id, file_key, settings, sink)


def check_messages(bodies: list[str], records: list[dict[str, Any]], per_message: int) -> None:
    messages = [json.loads(body) for body in bodies]
    total = len(messages)
    assert sorted(m["batch_number"] for m in messages) == list(range(1, total + 1))
    messages.sort(key=lambda m: m["batch_number"])
    delivered = []
    for message in messages:
        assert message["batch_id"] == BATCH and message["file_key"] == FILE_KEY
        assert message["total_batches"] == total
        assert 1 <= len(message["batch_data"]) <= per_message
        delivered += message["batch_data"]
    assert delivered == records  # every record once, in order


class Recording:
    """A sink that keeps what it was given."""

    description = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[int, list[Message]]] = []

    def send(
        self, chunk_index: int, messages: Sequence[Message], on_accepted: OnAccepted | None = None
    ) -> None:
        self.sent.append((chunk_index, list(messages)))
        if on_accepted:
            on_accepted([m.number for m in messages])

    def missing(self, chunk_index: int, numbers: Sequence[int]) -> set[int]:
        return set()


def test_deliver_to_the_outbox(tmp_path: Path, storage: Storage) -> None:
    files, records = write_chunks(tmp_path, [7, 0, 5, 3])
    outbox = str(tmp_path / "outbox")
    settings = DeliverySettings(records_per_message=3)
    summary = deliver_files(storage, BATCH, FILE_KEY, files, settings, OutboxSink(storage, outbox))
    assert (summary.messages, summary.records, summary.chunks) == (6, 15, 4)
    assert summary.target == outbox
    per_chunk = {}
    for index in range(4):
        text = (Path(outbox) / f"chunk-{index:05d}.jsonl").read_text(encoding="utf-8")
        per_chunk[index] = [json.loads(line) for line in text.splitlines()]
    # 7 records -> 3 messages, 0 -> none, 5 -> 2, 3 -> 1; numbered across chunks in order.
    assert {i: [m["batch_number"] for m in ms] for i, ms in per_chunk.items()} == {
        0: [1, 2, 3],
        1: [],
        2: [4, 5],
        3: [6],
    }
    bodies = [json.dumps(m) for index in range(4) for m in per_chunk[index]]
    check_messages(bodies, records, 3)
    assert per_chunk[0][0]["batch_data"][0] == {"id": 0, "name": 'Zoë "0"\n', "score": None}


def test_deliver_writes_lost_outbox_files_again(tmp_path: Path, storage: Storage) -> None:
    """A later delivery asks the outbox which messages it lost: a chunk's file deleted or cut
    short is written again whole (the same bytes), an intact one is not touched, and the empty
    file of a chunk with no messages comes back too."""
    files, _ = write_chunks(tmp_path, [7, 0, 5, 3])
    outbox = tmp_path / "outbox"
    settings = DeliverySettings(records_per_message=3)
    sink = OutboxSink(storage, str(outbox))
    ledger = Ledger("sqlite://")
    rows = [
        {
            "batch_id": BATCH, "chunk": index, "status": SUCCEEDED, "attempts": 1,
            "messages_sent": 0,
            "summary": json.dumps(
                ChunkSummary(index, "c", 1, 0, 0, 0, 0, 0.0, 0, uri, None).to_dict()
            ),
        }
        for index, uri in enumerate(files)
    ]  # fmt: skip
    with ledger.engine.begin() as conn:
        conn.execute(sa.insert(ledger.chunks), rows)
    deliver_files(storage, BATCH, FILE_KEY, files, settings, sink, ledger)
    written = {p.name: p.read_bytes() for p in outbox.iterdir()}
    assert sink.missing(0, [1, 2, 3]) == set() and sink.missing(3, [6, 7]) == {7}

    (outbox / "chunk-00000.jsonl").unlink()
    (outbox / "chunk-00001.jsonl").unlink()
    lines = written["chunk-00002.jsonl"].splitlines(keepends=True)
    (outbox / "chunk-00002.jsonl").write_bytes(lines[1])
    assert sink.missing(0, [1, 2, 3]) == {1, 2, 3} and sink.missing(2, [4, 5]) == {4}
    untouched = (outbox / "chunk-00003.jsonl").stat().st_mtime_ns
    summary = deliver_files(storage, BATCH, FILE_KEY, files, settings, sink, ledger)
    assert (summary.messages, summary.records, summary.chunks) == (5, 12, 2)
    assert summary.already_delivered_chunks == 2
    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == written
    assert (outbox / "chunk-00003.jsonl").stat().st_mtime_ns == untouched
    again = deliver_files(storage, BATCH, FILE_KEY, files, settings, sink, ledger)
    assert (again.messages, again.chunks, again.already_delivered_chunks) == (0, 0, 4)


def test_deliver_is_deterministic(tmp_path: Path, storage: Storage) -> None:
    files, _ = write_chunks(tmp_path, [4, 4])
    settings = DeliverySettings(records_per_message=3)
    first, second = Recording(), Recording()
    deliver_files(storage, BATCH, FILE_KEY, files, settings, first)
    deliver_files(storage, BATCH, FILE_KEY, files, settings, second)
    assert first.sent == second.sent
    assert [(i, [m.number for m in ms]) for i, ms in first.sent] == [(0, [1, 2]), (1, [3, 4])]
    assert all(m.batch_id == BATCH for _, ms in first.sent for m in ms)


def test_deliver_respects_the_message_byte_limit(tmp_path: Path, storage: Storage) -> None:
    files, records = write_chunks(tmp_path, [30, 30])
    settings = DeliverySettings(records_per_message=100, max_message_bytes=1024)
    sink = Recording()
    summary = deliver_files(storage, BATCH, FILE_KEY, files, settings, sink)
    bodies = [m.body for _, ms in sink.sent for m in ms]
    assert summary.messages == len(bodies) > 2
    assert all(len(body.encode()) <= 1024 for body in bodies)
    check_messages(bodies, records, 100)


def test_deliver_to_sqs(tmp_path: Path, storage: Storage, sqs_client: Any, sqs_queue: str) -> None:
    files, records = write_chunks(tmp_path, [23, 11, 1])
    settings = DeliverySettings(records_per_message=2)
    sink = SqsSink(sqs_client, sqs_queue)
    summary = deliver_files(storage, BATCH, FILE_KEY, files, settings, sink)
    assert (summary.messages, summary.records, summary.chunks) == (19, 35, 3)
    assert sink.calls == 4  # 12 messages (10 + 2), 6, 1
    check_messages(drain_queue(sqs_client, sqs_queue), records, 2)


def test_too_large_record_fails_before_anything_is_sent(
    tmp_path: Path, storage: Storage, sqs_client: Any, sqs_queue: str
) -> None:
    files, _ = write_chunks(tmp_path, [5, 5])
    huge = str(tmp_path / "valid" / "chunk-00002.parquet")
    pq.write_table(
        pa.table({"id": [100, 101], "name": ["ok", "x" * 5000], "score": [1.0, 2.0]}), huge
    )
    settings = DeliverySettings(records_per_message=10, max_message_bytes=2048)
    outbox = tmp_path / "outbox"
    for sink in (SqsSink(sqs_client, sqs_queue), OutboxSink(storage, str(outbox))):
        with pytest.raises(DeliveryError) as info:
            deliver_files(storage, BATCH, FILE_KEY, [*files, huge], settings, sink)
        assert info.value.permanent
        message = str(info.value)
        assert "chunk 2" in message and huge in message and "record 1" in message
        assert "nothing was sent" in message
    assert drain_queue(sqs_client, sqs_queue) == []
    assert not outbox.exists()


def test_deliver_nothing(tmp_path: Path, storage: Storage) -> None:
    files, _ = write_chunks(tmp_path, [0])
    sink = Recording()
    summary = deliver_files(storage, BATCH, FILE_KEY, files, DeliverySettings(), sink)
    assert (summary.messages, summary.records, summary.chunks) == (0, 0, 1)
    assert sink.sent == [(0, [])]
    assert deliver_files(storage, BATCH, FILE_KEY, [], DeliverySettings(), sink).messages == 0
