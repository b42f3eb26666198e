"""Deliver a batch's valid records, chunk by chunk, in order, each message once.

The ledger says, per chunk, which message numbers it owns and which of them the sink has
accepted (a prefix, plus any accepted out of order by a call that failed in part). Delivery
first numbers the messages of every succeeded chunk not numbered yet (packing them, which also
fails before anything is sent when a record cannot fit in a message), then sends what each
chunk's sink has not accepted yet, recording acceptance after every call. A retry, a resume
after a crash or a redrive therefore resends nothing the sink accepted, unless the sink no
longer holds it: the local outbox is our own folder, and a chunk whose file was deleted or cut
short (``Sink.missing``) is written again whole, with the numbers it had (an external queue
never reports a message missing). The one window left is a crash between the sink accepting a
call and the ledger recording it (one call: at most 10 messages to SQS, 100 to Kafka); FIFO
queues drop such a resend when it comes within their 5-minute deduplication interval, and a
Kafka consumer recognises it by its key (``{batch_id}:{number}``).

In a batch whose chunks all succeed at once, ``batch_number`` runs 1..``total_batches`` in input
order. Chunks delivered later (a redrive after tolerated failures) continue the numbering and
carry the total known when they were numbered; a message is never renumbered.

``deliver_batch`` is what the ``deliver`` op (and ``run_batch``) calls: it sends what the sink
does not have yet and records ``delivery.json``; ``open_sink`` makes the sink of the batch's
delivery target, and ``file_key`` is the seed message format's name of the source.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_pipeline.core.common.errors import ConfigError, DeliveryError
from batch_pipeline.core.common.models import BatchSpec, DeliverySettings, SourceSpec
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.delivery.breaker import breaker_for
from batch_pipeline.core.delivery.kafka_sink import KafkaSink, is_kafka_target
from batch_pipeline.core.delivery.packing import (
    SerializedRecords,
    envelope,
    envelope_overhead,
    pack,
    serialize_records,
)
from batch_pipeline.core.delivery.record import record_delivery
from batch_pipeline.core.delivery.sinks import (
    Message,
    OutboxSink,
    Sink,
    SqsSink,
    resolve_queue_url,
)
from batch_pipeline.core.ledger import SUCCEEDED, ChunkState, Ledger, LedgerQueries
from batch_pipeline.core.processing.processors.keyed import key_order, key_text
from batch_pipeline.core.stores.storage import Storage, split_s3

PACKED_CACHE_BYTES = 256 << 20


@dataclass
class DeliverySummary:
    target: str
    messages: int
    records: int
    chunks: int
    seconds: float
    already_delivered_chunks: int = 0


@dataclass
class _Packed:
    """A chunk's records as JSON, the ranges of its messages and each message's key."""

    rows: SerializedRecords
    ranges: list[tuple[int, int]]
    keys: list[str | None]


def deliver_batch_records(
    storage: Storage,
    ledger: LedgerQueries,
    batch_id: str,
    file_key: str,
    settings: DeliverySettings,
    sink: Sink,
) -> DeliverySummary:
    """Send every succeeded chunk's records that the sink does not have yet: those never
    accepted, and every message of a chunk some of whose accepted messages the sink no longer
    holds (``Sink.missing``: the local outbox's file deleted or cut short). ``ledger``: the
    rows whose outputs are delivered (a keyed batch's: ``Ledger.buckets``)."""
    started = time.perf_counter()
    budget = settings.max_message_bytes - envelope_overhead(batch_id, file_key)
    states = [s for s in ledger.chunk_states(batch_id) if s.status == SUCCEEDED]
    lost = {s.chunk for s in states if sink.missing(s.chunk, sorted(_given(s)))}
    for state in states:  # a chunk of no messages: the outbox's empty file, if it is gone
        if state.delivered and state.messages == 0:
            sink.send(state.chunk, [])
    todo = [s for s in states if not s.delivered or s.chunk in lost]
    counts: dict[int, int] = {}
    packed: dict[int, _Packed] = {}
    kept = 0
    for state in todo:
        if state.first_message is None:
            chunk = _pack(storage, state, settings, budget, ledger.unit)
            counts[state.chunk] = len(chunk.ranges)
            if kept + len(chunk.rows.data) <= PACKED_CACHE_BYTES:  # spare small batches a re-read
                packed[state.chunk] = chunk
                kept += len(chunk.rows.data)
    ledger.assign_messages(batch_id, counts)
    numbered = {s.chunk: s for s in ledger.chunk_states(batch_id)}
    messages = records = 0
    for state in todo:
        state = numbered[state.chunk]
        cached = packed.pop(state.chunk, None)
        chunk = cached or _pack(storage, state, settings, budget, ledger.unit)
        rows, ranges = chunk.rows, chunk.ranges
        if len(ranges) != state.messages:
            raise DeliveryError(
                f"{ledger.unit} {state.chunk}: its valid records now pack into {len(ranges)} "
                f"messages, but {state.messages} were numbered for it; its output changed after "
                "delivery began",
                permanent=True,
            )
        assert state.first_message is not None and state.total_messages is not None
        first = state.first_message
        if state.chunk in lost:  # written again whole; the sink merges by number
            sent, accepted = 0, set()
        else:
            sent, accepted = state.messages_sent, state.accepted_numbers()
        done = first + sent  # every number below is with the sink
        unsent = [
            (i, a, b)
            for i, (a, b) in enumerate(ranges)
            if first + i >= done and first + i not in accepted
        ]
        batch = [
            Message(
                body=envelope(
                    batch_id, file_key, rows.joined(a, b), first + i, state.total_messages
                ).decode(),
                batch_id=batch_id,
                number=first + i,
                key=chunk.keys[i],
            )
            for i, a, b in unsent
        ]

        record = _Acceptance(ledger, batch_id, state.chunk, first, sent, accepted)
        sink.send(state.chunk, batch, on_accepted=record)
        messages += len(batch)
        records += sum(b - a for _, a, b in unsent)
    return DeliverySummary(
        target=sink.description,
        messages=messages,
        records=records,
        chunks=len(todo),
        seconds=round(time.perf_counter() - started, 6),
        already_delivered_chunks=len(states) - len(todo),
    )


def file_key(source: SourceSpec) -> str:
    """The seed message format's ``file_key``: the S3 key, or the local path."""
    if source.uri.startswith("s3://"):
        return split_s3(source.uri)[1]
    return source.uri


def open_sink(
    storage: Storage,
    spec: BatchSpec,
    sqs_client: Any = None,
    kafka_security: Mapping[str, str] | None = None,
) -> Sink | None:
    """The sink for ``spec.delivery.target``; None when delivery is off. ``kafka_security``:
    the SASL/TLS librdkafka settings of a Kafka target (``settings.kafka_security``)."""
    target = spec.delivery.target
    if target == "none":
        return None
    if target == "local":
        return OutboxSink(storage, spec.outbox)
    if is_kafka_target(target):
        breaker = breaker_for(
            target, spec.delivery.breaker_failures, spec.delivery.breaker_cooldown_seconds
        )
        return KafkaSink(target, kafka_security, breaker=breaker)
    if sqs_client is None:
        raise ConfigError(f"delivery target {target} needs an SQS client")
    url = resolve_queue_url(sqs_client, target)
    breaker = breaker_for(
        url, spec.delivery.breaker_failures, spec.delivery.breaker_cooldown_seconds
    )
    return SqsSink(sqs_client, url, max_batch_bytes=spec.delivery.max_batch_bytes, breaker=breaker)


def deliver_batch(
    storage: Storage, ledger: Ledger, spec: BatchSpec, sink: Sink, run_id: str | None = None
) -> DeliverySummary:
    """Send what the sink does not have yet, then record in ``delivery.json`` beside the
    results what it has (so that a lost ledger cannot make a run deliver it again). A keyed
    batch (one with bucket rows) delivers its buckets' valid records, bucket by bucket, its
    messages numbered and tracked in the bucket rows (the outbox: ``bucket-NNNNN.jsonl``)."""
    rows: LedgerQueries = ledger
    if ledger.buckets.chunk_states(spec.batch_id):
        rows = ledger.buckets
        if isinstance(sink, OutboxSink):
            sink = OutboxSink(storage, sink.directory, unit="bucket")
    summary = deliver_batch_records(
        storage, rows, spec.batch_id, file_key(spec.source), spec.delivery, sink
    )
    record_delivery(storage, rows, spec, sink.description, run_id)
    return summary


def _given(state: ChunkState) -> set[int]:
    """The message numbers of a chunk that the ledger says its sink accepted."""
    if state.first_message is None or not state.messages:
        return set()
    prefix = min(state.messages_sent, state.messages)
    return set(range(state.first_message, state.first_message + prefix)) | (
        state.accepted_numbers()
    )


class _Acceptance:
    """Records in the ledger the messages of a chunk that the sink accepted: the prefix of
    numbers accepted without a gap, and those accepted beyond it."""

    def __init__(
        self,
        ledger: LedgerQueries,
        batch_id: str,
        chunk: int,
        first: int,
        sent: int,
        accepted: set[int],
    ) -> None:
        self.ledger, self.batch_id, self.chunk = ledger, batch_id, chunk
        self.first, self.sent, self.accepted = first, sent, accepted

    def __call__(self, numbers: Sequence[int]) -> None:
        self.accepted.update(numbers)
        while self.first + self.sent in self.accepted:
            self.accepted.discard(self.first + self.sent)
            self.sent += 1
        self.ledger.mark_sent(self.batch_id, self.chunk, self.sent, self.accepted)


def _pack(
    storage: Storage, state: ChunkState, settings: DeliverySettings, budget: int, unit: str
) -> _Packed:
    """A chunk's (or bucket's: ``unit``) valid records packed into messages; by
    ``settings.key_column``'s values when set (a message per run of one value, values in order
    of first appearance)."""
    summary = state.chunk_summary()
    assert summary is not None and summary.valid_uri is not None
    with storage.open_input_file(summary.valid_uri) as f:
        table = pq.read_table(f)
    where = f"{unit} {state.chunk} ({summary.valid_uri})"
    keys: pa.Array | None = None
    groups = None
    # A chunk or bucket without records has no message to key (a keyed batch's empty bucket
    # has no column at all).
    if settings.key_column is not None and table.num_rows:
        if settings.key_column not in table.column_names:
            raise DeliveryError(
                f"{where}: the delivery key column {shown(settings.key_column)} is not one of "
                f"its columns ({', '.join(shown(n) for n in table.column_names)}); nothing of "
                "it was sent",
                permanent=True,
            )
        try:
            keys = key_text(table.column(settings.key_column))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DeliveryError(
                f"{where}: the delivery key column {shown(settings.key_column)} holds "
                f"{table.schema.field(settings.key_column).type} values, which cannot key a "
                f"message ({exc}); nothing was sent",
                permanent=True,
            ) from exc
        order = pa.array(key_order(keys))
        table, keys = table.take(order), keys.take(order)
        groups = _runs(keys)
    rows = serialize_records(table)
    try:
        ranges = pack(rows.lengths, settings.records_per_message, budget, groups)
    except DeliveryError as exc:
        raise DeliveryError(f"{where}, {exc}; nothing was sent", permanent=True) from exc
    names = keys.to_pylist() if keys is not None else None
    return _Packed(rows, ranges, [names[a] if names else None for a, _ in ranges])


def _runs(keys: pa.Array) -> np.ndarray:
    """A code per record, the same along each run of equal keys (nulls one run)."""
    encoded = pc.dictionary_encode(keys)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
