"""The ledger's chunk rows: reading them, and each change of a chunk's status or delivery
progress, one statement or transaction each, so that concurrent steps never lose a count.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.models import ChunkSummary
from batch_pipeline.core.common.statuses import ChunkStatus
from batch_pipeline.core.ledger.engine import LedgerDatabase
from batch_pipeline.core.ledger.states import ChunkState


class ChunkRecords(LedgerDatabase):
    """Reads and atomic updates of ``bp_chunks``."""

    def chunk_states(self, batch_id: str) -> list[ChunkState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.chunks)
                .where(self.chunks.c.batch_id == batch_id)
                .order_by(self.chunks.c.chunk)
            ).all()
        return [ChunkState(**r._mapping) for r in rows]

    def chunk_state(self, batch_id: str, chunk: int) -> ChunkState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.chunks).where(
                    self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk
                )
            ).first()
        return ChunkState(**row._mapping) if row is not None else None

    def _update(self, batch_id: str, chunk: int, **values: Any) -> None:
        with self._write() as conn:
            # Stamped once the write transaction holds the lock (SQLite), so that changes are
            # stamped in the order they commit: the dead-letter alert's cursor relies on it.
            values["updated_at"] = time.time()
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk)
                .values(**values)
            )

    def reset(self, batch_id: str, chunks: list[int]) -> None:
        """Back to pending for another attempt (delivery progress is kept)."""
        if not chunks:
            return
        with self._write() as conn:
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk.in_(chunks))
                .values(status=ChunkStatus.PENDING, updated_at=time.time())
            )

    def mark_running(self, batch_id: str, chunk: int) -> None:
        """An attempt starts: status running, attempts + 1 (atomically)."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                sa.update(self.chunks)
                .where(self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk)
                .values(
                    status=ChunkStatus.RUNNING,
                    attempts=self.chunks.c.attempts + 1,
                    started_at=now,
                    updated_at=now,
                )
            )

    def mark_succeeded(self, batch_id: str, summary: ChunkSummary, fingerprint: str) -> None:
        self._update(
            batch_id,
            summary.index,
            status=ChunkStatus.SUCCEEDED,
            error_category=None,
            error_message=None,
            records_in=summary.records_in,
            records_out=summary.records_out,
            records_rejected=summary.records_rejected,
            bytes_read=summary.bytes_read,
            seconds=summary.seconds,
            peak_rss_bytes=summary.peak_rss_bytes,
            finished_at=time.time(),
            fingerprint=fingerprint,
            summary=json.dumps(summary.to_dict()),
            dead_letter=None,
        )

    def mark_failed(self, batch_id: str, chunk: int, category: str, message: str) -> None:
        """The attempt failed; the chunk waits for a retry (or a redrive/resume)."""
        self._update(
            batch_id,
            chunk,
            status=ChunkStatus.FAILED,
            error_category=category,
            error_message=message[:4000],
            finished_at=time.time(),
        )

    def mark_dead_lettered(
        self, batch_id: str, chunk: int, category: str, message: str, dead_letter: str
    ) -> None:
        self._update(
            batch_id,
            chunk,
            status=ChunkStatus.DEAD_LETTERED,
            error_category=category,
            error_message=message[:4000],
            finished_at=time.time(),
            dead_letter=dead_letter,
        )

    # Delivery --------------------------------------------------------------------------------

    def assign_messages(self, batch_id: str, counts: dict[int, int]) -> None:
        """Number the messages of the chunks in ``counts`` (chunk -> messages) after the highest
        number given so far, in chunk order, and record the batch's message total as of now
        with each of them. Chunks numbered before keep their numbers and totals, so a message
        is always rebuilt identically, whenever it is (re)sent."""
        c = self.chunks.c
        with self._write() as conn:
            self._lock(conn, f"bp_batch:{batch_id}")
            rows = conn.execute(
                sa.select(c.chunk, c.first_message, c.messages)
                .where(c.batch_id == batch_id)
                .with_for_update()
            ).all()
            numbered = {r.chunk for r in rows if r.first_message is not None}
            last = max((r.first_message + r.messages - 1 for r in rows if r.messages), default=0)
            firsts: dict[int, int] = {}
            for chunk in sorted(set(counts) - numbered):
                firsts[chunk] = last + 1
                last += counts[chunk]
            for chunk, first in firsts.items():
                conn.execute(
                    sa.update(self.chunks)
                    .where(c.batch_id == batch_id, c.chunk == chunk)
                    .values(first_message=first, messages=counts[chunk], total_messages=last)
                )

    def mark_sent(
        self, batch_id: str, chunk: int, messages_sent: int, accepted: set[int] | None = None
    ) -> None:
        """The first ``messages_sent`` messages of the chunk are with the sink, and so are the
        messages numbered ``accepted`` (beyond them, accepted out of order)."""
        extra = json.dumps(sorted(accepted)) if accepted else None
        self._update(batch_id, chunk, messages_sent=messages_sent, accepted=extra)
