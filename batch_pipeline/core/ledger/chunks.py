"""The ledger's chunk rows: reading them, and each change of a chunk's status or delivery
progress, one statement or transaction each, so that concurrent steps never lose a count
(``ChunkRecords``). A keyed batch's bucket rows (``bp_buckets``) are read and changed by the
same code: ``rows_of`` gives these operations over that table (``Ledger.buckets``).

What the ledger tells about batches (``LedgerQueries``): a batch's progress (counted from its
chunk rows in one query), the statuses of many batches, the files finished file sets took, and
dead letters (of a batch, or of every batch after a cursor, for alerts).
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.models import ChunkSummary
from batch_pipeline.core.common.statuses import CHUNK_STATUSES, ChunkStatus
from batch_pipeline.core.ledger.engine import LedgerDatabase
from batch_pipeline.core.ledger.states import ChunkState, Progress


class ChunkRecords(LedgerDatabase):
    """Reads and atomic updates of ``bp_chunks`` (or, through ``rows_of``, ``bp_buckets``)."""

    unit = "chunk"  # what a row is about, for messages: "bucket" over bp_buckets

    def _select(self, *columns: sa.Column) -> sa.Select:
        """A SELECT of ``columns`` (default: every column of the rows' table) under their keys,
        so that a bucket row reads as a chunk row (its ``bucket`` column is keyed ``chunk``)."""
        return sa.select(*(c.label(c.key) for c in (columns or tuple(self.chunks.c))))

    def chunk_states(self, batch_id: str) -> list[ChunkState]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                self._select()
                .where(self.chunks.c.batch_id == batch_id)
                .order_by(self.chunks.c.chunk)
            ).all()
        return [ChunkState(**r._mapping) for r in rows]

    def chunk_state(self, batch_id: str, chunk: int) -> ChunkState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                self._select().where(
                    self.chunks.c.batch_id == batch_id, self.chunks.c.chunk == chunk
                )
            ).first()
        return ChunkState(**row._mapping) if row is not None else None

    def set_descriptors(self, batch_id: str, descriptors: dict[int, str]) -> None:
        """Replace the descriptors (JSON) of rows ``descriptors`` names, in one transaction."""
        c = self.chunks.c
        with self._write() as conn:
            for index, descriptor in descriptors.items():
                conn.execute(
                    sa.update(self.chunks)
                    .where(c.batch_id == batch_id, c.chunk == index)
                    .values(descriptor=descriptor)
                )

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
                self._select(c.chunk, c.first_message, c.messages)
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


class LedgerQueries(ChunkRecords):
    """Views over the ledger's tables."""

    def rows_of(self, table: sa.Table, unit: str) -> LedgerQueries:
        """These reads, updates and views over ``table`` (a table with ``bp_chunks``' columns,
        such as ``bp_buckets``) instead of ``bp_chunks``, on the same database."""
        view = LedgerQueries.__new__(LedgerQueries)
        view.__dict__.update(self.__dict__)
        view.chunks, view.unit = table, unit
        return view

    def progress(self, batch_id: str, since: float | None = None) -> Progress:
        """Counted from the chunk rows in one query: exact under concurrent updates.
        ``records_since`` counts the records of chunks that succeeded at or after ``since``
        (all of them when None), for a rate of this run only."""
        c = self.chunks.c
        recent = c.finished_at >= since if since is not None else sa.true()
        sent_expr = sa.case((c.messages_sent < c.messages, c.messages_sent), else_=c.messages)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    c.status,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(c.records_in), 0),
                    sa.func.coalesce(sa.func.sum(c.records_out), 0),
                    sa.func.coalesce(sa.func.sum(c.records_rejected), 0),
                    sa.func.coalesce(sa.func.sum(c.messages), 0),
                    sa.func.coalesce(sa.func.sum(sent_expr), 0),
                    sa.func.min(c.started_at),
                    sa.func.max(c.finished_at),
                    sa.func.coalesce(sa.func.sum(sa.case((recent, c.records_in), else_=0)), 0),
                )
                .where(c.batch_id == batch_id)
                .group_by(c.status)
            ).all()
            status = conn.execute(
                sa.select(self.batches.c.status).where(self.batches.c.batch_id == batch_id)
            ).scalar()
        counts = {s: 0 for s in CHUNK_STATUSES}
        records = [0, 0, 0]
        messages = sent = since_records = 0
        starts: list[float] = []
        ends: list[float] = []
        for st, count, r_in, r_out, r_rej, msgs, msgs_sent, started, finished, r_since in rows:
            counts[st] = int(count)
            messages += int(msgs)
            sent += int(msgs_sent)
            if started is not None:
                starts.append(float(started))
            if st == ChunkStatus.SUCCEEDED:
                records = [int(r_in), int(r_out), int(r_rej)]
                since_records = int(r_since)
                if finished is not None:
                    ends.append(float(finished))
        return Progress(
            batch_id,
            sum(counts.values()),
            pending=counts[ChunkStatus.PENDING],
            running=counts[ChunkStatus.RUNNING],
            succeeded=counts[ChunkStatus.SUCCEEDED],
            failed=counts[ChunkStatus.FAILED],
            dead_lettered=counts[ChunkStatus.DEAD_LETTERED],
            records_in=records[0],
            records_out=records[1],
            records_rejected=records[2],
            status=status,
            messages=messages,
            messages_sent=sent,
            first_started_at=min(starts) if starts else None,
            last_finished_at=max(ends) if ends else None,
            records_since=since_records,
        )

    def batch_statuses(self, batch_ids: list[str]) -> dict[str, str]:
        """The status of each of ``batch_ids`` the ledger knows (one query per 500 ids)."""
        found: dict[str, str] = {}
        b = self.batches.c
        with self.engine.connect() as conn:
            for i in range(0, len(batch_ids), 500):
                part = batch_ids[i : i + 500]
                query = sa.select(b.batch_id, b.status).where(b.batch_id.in_(part))
                found.update({row.batch_id: row.status for row in conn.execute(query)})
        return found

    def processed_members(self, uris: list[str], statuses: frozenset[str]) -> dict[str, set[str]]:
        """URI -> fingerprints of those of ``uris`` that are files of file-set batches whose
        status is in ``statuses`` (the nightly schedule: small files a finished set took).
        One query per 500 URIs."""
        m, b = self.members.c, self.batches.c
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(uris), 500):
                query = (
                    sa.select(m.uri, m.fingerprint)
                    .join(self.batches, b.batch_id == m.batch_id)
                    .where(m.uri.in_(uris[i : i + 500]), b.status.in_(sorted(statuses)))
                )
                for row in conn.execute(query):
                    found.setdefault(row.uri, set()).add(row.fingerprint)
        return found

    def dead_letters_since(
        self, after: tuple[float, str, int] | None = None, limit: int = 1000
    ) -> list[ChunkState]:
        """Dead-lettered chunks of every batch, oldest change first, after the position
        ``(updated_at, batch_id, chunk)`` of the last one seen (a cursor for alerts)."""
        c = self.chunks.c
        query = self._select().where(c.status == ChunkStatus.DEAD_LETTERED)
        if after is not None:
            at, batch_id, chunk = after
            query = query.where(
                sa.or_(
                    c.updated_at > at,
                    sa.and_(
                        c.updated_at == at,
                        sa.or_(c.batch_id > batch_id, sa.and_(c.batch_id == batch_id,
                                                             c.chunk > chunk)),
                    ),
                )
            )  # fmt: skip
        query = query.order_by(c.updated_at, c.batch_id, c.chunk).limit(limit)
        with self.engine.connect() as conn:
            return [ChunkState(**r._mapping) for r in conn.execute(query)]

    def dead_letters(self, batch_id: str) -> list[ChunkState]:
        return [s for s in self.chunk_states(batch_id) if s.status == ChunkStatus.DEAD_LETTERED]
