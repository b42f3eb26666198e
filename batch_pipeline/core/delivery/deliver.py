"""Deliver a batch's valid records, chunk by chunk, in order.

Two passes over the valid files: the first packs records into messages to learn
``total_batches`` (and to fail before sending anything when a record cannot fit in a message);
the second sends. Message numbers follow chunk order, so the same batch always produces the
same messages with the same numbers and deduplication ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from batch_pipeline.core.delivery.packing import (
    SerializedRecords,
    envelope,
    envelope_overhead,
    pack,
    serialize_records,
)
from batch_pipeline.core.delivery.sinks import Message, Sink
from batch_pipeline.core.errors import DeliveryError
from batch_pipeline.core.models import DeliverySettings
from batch_pipeline.core.storage import Storage


@dataclass
class DeliverySummary:
    target: str
    messages: int
    records: int
    chunks: int
    seconds: float


def _chunk_records(storage: Storage, uri: str) -> SerializedRecords:
    with storage.open_input_file(uri) as f:
        return serialize_records(pq.read_table(f))


def deliver_files(
    storage: Storage,
    batch_id: str,
    file_key: str,
    valid_files: list[str],
    settings: DeliverySettings,
    sink: Sink,
) -> DeliverySummary:
    """Send the records of ``valid_files`` (in chunk order) through ``sink``."""
    started = time.perf_counter()
    budget = settings.max_message_bytes - envelope_overhead(batch_id, file_key)
    plans: list[list[tuple[int, int]]] = []
    for index, uri in enumerate(valid_files):
        lengths = _chunk_records(storage, uri).lengths
        try:
            plans.append(pack(lengths, settings.records_per_message, budget))
        except DeliveryError as exc:
            raise DeliveryError(
                f"chunk {index} ({uri}), {exc}; nothing was sent", permanent=True
            ) from exc
    total = sum(len(p) for p in plans)
    number = 0
    records = 0
    for index, (uri, ranges) in enumerate(zip(valid_files, plans, strict=True)):
        rows = _chunk_records(storage, uri)
        messages = []
        for a, b in ranges:
            number += 1
            body = envelope(batch_id, file_key, rows.joined(a, b), number, total)
            messages.append(Message(body=body.decode(), batch_id=batch_id, number=number))
        sink.send(index, messages)
        records += len(rows)
    return DeliverySummary(
        target=sink.description,
        messages=total,
        records=records,
        chunks=len(valid_files),
        seconds=round(time.perf_counter() - started, 6),
    )
