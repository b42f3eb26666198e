"""What the ledger tells about batches: a batch's progress (counted from its chunk rows in one
query), the statuses of many batches, the files finished file sets took, and dead letters (of a
batch, or of every batch after a cursor, for alerts).
"""

from __future__ import annotations

import sqlalchemy as sa

from batch_pipeline.core.common.statuses import CHUNK_STATUSES, ChunkStatus
from batch_pipeline.core.ledger.chunks import ChunkRecords
from batch_pipeline.core.ledger.states import ChunkState, Progress


class LedgerQueries(ChunkRecords):
    """Views over the ledger's tables."""

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
        query = sa.select(self.chunks).where(c.status == ChunkStatus.DEAD_LETTERED)
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
