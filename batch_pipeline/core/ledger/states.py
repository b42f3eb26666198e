"""The ledger's rows as Python objects: ``Lease`` (who holds a batch, until when), ``ChunkState``
(a row of ``bp_chunks``), ``BatchState`` (a row of ``bp_batches``) and ``Progress`` (a batch's
counters, counted from its chunk rows).

Statuses are kept as the text the tables hold; compare them with the members of
``ChunkStatus`` and ``BatchStatus`` (``batch_pipeline.core.common.statuses``), which equal it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from batch_pipeline.core.common.models import Chunk, ChunkSummary


@dataclass(frozen=True)
class Lease:
    """Who holds a batch (``holder``: a run id) and until when, as epoch seconds."""

    batch_id: str
    holder: str
    acquired_at: float
    heartbeat_at: float
    expires_at: float

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        seen = max(0.0, now - self.heartbeat_at)
        left = self.expires_at - now
        expiry = f"expires at {_iso(self.expires_at)}" if left > 0 else "has expired"
        return (
            f"run {self.holder} (since {_iso(self.acquired_at)}, last seen {seen:.0f}s ago; its "
            f"lease {expiry})"
        )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class ChunkState:
    """One row of the chunk ledger."""

    batch_id: str
    chunk: int
    status: str
    attempts: int = 0
    error_category: str | None = None
    error_message: str | None = None
    records_in: int | None = None
    records_out: int | None = None
    records_rejected: int | None = None
    bytes_read: int | None = None
    seconds: float | None = None
    peak_rss_bytes: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    fingerprint: str | None = None
    descriptor: str | None = None
    summary: str | None = None
    dead_letter: str | None = None
    first_message: int | None = None
    messages: int | None = None
    total_messages: int | None = None
    messages_sent: int = 0
    accepted: str | None = None
    updated_at: float | None = None

    def chunk_summary(self) -> ChunkSummary | None:
        return ChunkSummary(**json.loads(self.summary)) if self.summary else None

    @property
    def delivered(self) -> bool:
        return self.messages is not None and self.messages_sent >= self.messages

    def chunk_descriptor(self) -> Chunk | None:
        return Chunk.from_dict(json.loads(self.descriptor)) if self.descriptor else None

    def accepted_numbers(self) -> set[int]:
        """Message numbers the sink accepted beyond the first ``messages_sent`` (out of order,
        from a batch call that was accepted in part)."""
        return set(json.loads(self.accepted)) if self.accepted else set()


@dataclass
class BatchState:
    """One row of the batch table."""

    batch_id: str
    source_uri: str
    fingerprint: str
    status: str
    chunks: int
    plan_hash: str | None
    output_digest: str | None
    delivery_digest: str | None
    config: str | None
    run_id: str | None
    reason: str | None
    created_at: float
    updated_at: float

    def config_dict(self) -> dict[str, Any]:
        return json.loads(self.config) if self.config else {}


@dataclass
class Progress:
    """A batch's counters, as Step Functions' DescribeMapRun reports them, plus how far its
    delivery got. ``records_*`` count succeeded chunks only."""

    batch_id: str
    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    dead_lettered: int
    records_in: int
    records_out: int
    records_rejected: int
    status: str | None = None
    messages: int = 0
    messages_sent: int = 0
    first_started_at: float | None = None
    last_finished_at: float | None = None
    records_since: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.dead_lettered

    @property
    def finished(self) -> bool:
        """No chunk is pending, running, or failed and waiting for a retry."""
        return self.pending == 0 and self.running == 0 and self.failed == 0

    @property
    def percent(self) -> float:
        return round(100.0 * self.succeeded / self.total, 2) if self.total else 100.0

    def records_per_second(self, since: float | None = None, now: float | None = None) -> float:
        """Records of the chunks that succeeded since ``since`` (as passed to ``progress``) per
        second of wall time from ``since`` (default: the first chunk's start) to ``now``
        (default: the last chunk's end)."""
        start = since if since is not None else self.first_started_at
        end = now if now is not None else self.last_finished_at
        if start is None or end is None or end <= start:
            return 0.0
        return round(self.records_since / (end - start), 1)
