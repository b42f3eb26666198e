"""The ledger's batch rows: registering a batch and its plan (``register_batch``, which keeps or
restarts delivery progress by the rules of ``destinations.py``), where its messages went, its
status, and force-completing it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from batch_pipeline.core.common.errors import BatchBusyError, ConfigError
from batch_pipeline.core.common.models import BatchSpec, Plan
from batch_pipeline.core.common.statuses import BatchStatus, ChunkStatus
from batch_pipeline.core.ledger.chunks import ChunkRecords
from batch_pipeline.core.ledger.destinations import (
    Destination,
    current_destination,
    delivery_change,
    is_external,
    sink_key,
)
from batch_pipeline.core.ledger.digests import (
    delivery_digest,
    output_digest,
    plan_hash,
    sent_settings,
)
from batch_pipeline.core.ledger.states import BatchState, ChunkState, Lease


class BatchRecords(ChunkRecords):
    """Reads and writes of ``bp_batches``, ``bp_members`` and ``bp_deliveries``."""

    def register_batch(
        self, spec: BatchSpec, plan: Plan, run_id: str | None = None
    ) -> list[ChunkState]:
        """Record the batch and its planned chunks (and a keyed batch's buckets).

        A batch seen before keeps its chunk rows when its plan is the same; another plan
        replaces them. Delivery progress (message numbering, what the sink took) is kept while
        the destination and what is sent stay the same; otherwise it starts again, except that
        a change is refused (ConfigError naming the setting) when it would deliver records
        twice to the same external sink (see ``destinations.delivery_change``).
        ``spec.redeliver`` starts delivery again whatever the sink has. A force-completed batch
        stays so, unless the run is forced."""
        now = time.time()
        digest = plan_hash(plan)
        outputs, deliveries = output_digest(spec), delivery_digest(spec)
        settings = sent_settings(spec, plan)
        config = json.dumps(spec.config, default=str)
        d = self.deliveries.c
        with self._write() as conn:
            self._lock(conn, f"bp_batch:{spec.batch_id}")
            row = conn.execute(
                sa.select(self.batches).where(self.batches.c.batch_id == spec.batch_id)
            ).first()
            destinations = {
                r.target: r
                for r in conn.execute(sa.select(self.deliveries).where(d.batch_id == spec.batch_id))
            }
            progress = [
                row
                for table in (self.chunks, self.bucket_table)
                for row in conn.execute(
                    sa.select(table.c.messages_sent, table.c.accepted).where(
                        table.c.batch_id == spec.batch_id
                    )
                )
            ]
            sent = sum(r.messages_sent for r in progress) + sum(
                len(json.loads(r.accepted)) for r in progress if r.accepted
            )
            current = current_destination(row, destinations, spec)
            reset = delivery_change(spec, plan, settings, current, destinations, sent, row)
            replanned = row is not None and row.plan_hash != digest
            moved = current is not None and (reset or replanned) and is_external(current.target)
            if moved and sent:  # what the sink took, before the chunk rows forget it
                assert current is not None
                self._record_sent(conn, spec.batch_id, current, sent, now)
            for table in (self.chunks, self.bucket_table):
                if replanned:
                    conn.execute(sa.delete(table).where(table.c.batch_id == spec.batch_id))
                elif reset:
                    conn.execute(
                        sa.update(table)
                        .where(table.c.batch_id == spec.batch_id)
                        .values(first_message=None, messages=None, total_messages=None,
                                messages_sent=0, accepted=None)
                    )  # fmt: skip
            self._set_destination(conn, spec, settings, run_id, now)
            forced = (
                row is not None
                and row.status == BatchStatus.COMPLETED_FORCED
                and spec.mode == "run"
            )
            values = {
                "source_uri": spec.source.uri,
                "fingerprint": spec.source.info.fingerprint,
                "status": BatchStatus.COMPLETED_FORCED if forced else BatchStatus.RUNNING,
                "chunks": len(plan.chunks),
                "plan_hash": digest,
                "output_digest": outputs,
                "delivery_digest": deliveries,
                "config": config,
                "run_id": run_id,
                "reason": row.reason if forced else None,
                "updated_at": now,
            }
            if row is None:
                conn.execute(
                    sa.insert(self.batches).values(batch_id=spec.batch_id, created_at=now, **values)
                )
            else:
                conn.execute(
                    sa.update(self.batches)
                    .where(self.batches.c.batch_id == spec.batch_id)
                    .values(**values)
                )
            if spec.source.members and (row is None or row.plan_hash != digest):
                # The files of a set batch (another set under a reused batch id replaces them).
                conn.execute(
                    sa.delete(self.members).where(self.members.c.batch_id == spec.batch_id)
                )
                conn.execute(
                    sa.insert(self.members),
                    [
                        {"batch_id": spec.batch_id, "uri": m.uri, "fingerprint": m.fingerprint}
                        for m in spec.source.members
                    ],
                )
            existing = {
                r.chunk
                for r in conn.execute(
                    sa.select(self.chunks.c.chunk).where(self.chunks.c.batch_id == spec.batch_id)
                )
            }
            new_rows = [
                {
                    "batch_id": spec.batch_id,
                    "chunk": c.index,
                    "status": ChunkStatus.PENDING,
                    "attempts": 0,
                    "messages_sent": 0,
                    "descriptor": json.dumps(c.to_dict(), default=str),
                    "updated_at": now,
                }
                for c in plan.chunks
                if c.index not in existing
            ]
            if new_rows:
                conn.execute(sa.insert(self.chunks), new_rows)
            self._register_buckets(conn, spec.batch_id, plan, now)
        return self.chunk_states(spec.batch_id)

    def _register_buckets(self, conn: sa.Connection, batch_id: str, plan: Plan, now: float) -> None:
        """A row per bucket of a keyed batch's plan (kept when there is one: same plan); none
        for a batch of one stage. Descriptors come when the shuffle has written the parts."""
        u = self.bucket_table.c
        if plan.buckets is None:
            conn.execute(sa.delete(self.bucket_table).where(u.batch_id == batch_id))
            return
        existing = {
            r.chunk for r in conn.execute(self._select(u.chunk).where(u.batch_id == batch_id))
        }
        rows = [
            {"batch_id": batch_id, "chunk": index, "status": ChunkStatus.PENDING, "attempts": 0,
             "messages_sent": 0, "updated_at": now}
            for index in range(plan.buckets.count)
            if index not in existing
        ]  # fmt: skip
        if rows:
            conn.execute(sa.insert(self.bucket_table), rows)

    def _set_destination(
        self,
        conn: sa.Connection,
        spec: BatchSpec,
        settings: dict[str, str],
        run_id: str | None,
        now: float,
    ) -> None:
        """This run's destination becomes the current one, with what it is sent."""
        d = self.deliveries.c
        target = sink_key(spec.delivery.target)
        conn.execute(
            sa.update(self.deliveries)
            .where(d.batch_id == spec.batch_id, d.target != target)
            .values(current=False)
        )
        values = {
            "settings": json.dumps(settings, sort_keys=True),
            "output": spec.output_root,
            "current": True,
            "run_id": run_id,
            "updated_at": now,
        }
        known = conn.execute(
            sa.select(d.target).where(d.batch_id == spec.batch_id, d.target == target)
        ).first()
        if known is not None:
            conn.execute(
                sa.update(self.deliveries)
                .where(d.batch_id == spec.batch_id, d.target == target)
                .values(**values)
            )
        else:
            conn.execute(
                sa.insert(self.deliveries).values(
                    batch_id=spec.batch_id, target=target, messages=0, **values
                )
            )

    def _record_sent(
        self, conn: sa.Connection, batch_id: str, where: Destination, sent: int, now: float
    ) -> None:
        """Remember that ``where`` (an external sink) took ``sent`` messages of the batch."""
        d = self.deliveries.c
        known = conn.execute(
            sa.select(d.messages).where(d.batch_id == batch_id, d.target == where.target)
        ).first()
        if known is not None:
            conn.execute(
                sa.update(self.deliveries)
                .where(d.batch_id == batch_id, d.target == where.target)
                .values(messages=max(known.messages, sent), updated_at=now)
            )
        else:  # a ledger from before bp_deliveries
            conn.execute(
                sa.insert(self.deliveries).values(
                    batch_id=batch_id, target=where.target, settings="{}",
                    output=where.output or "", messages=sent, current=False, updated_at=now,
                )
            )  # fmt: skip

    def destinations(self, batch_id: str) -> list[Destination]:
        """Where the batch's messages went or go (the current destination first)."""
        d = self.deliveries.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.deliveries)
                .where(d.batch_id == batch_id)
                .order_by(d.current.desc(), d.target)
            ).all()
        return [Destination.from_row(r) for r in rows]

    def batch(self, batch_id: str) -> BatchState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.batches).where(self.batches.c.batch_id == batch_id)
            ).first()
        return BatchState(**row._mapping) if row is not None else None

    def set_batch_status(
        self, batch_id: str, status: str, reason: str | None = None, run_id: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "reason": reason, "updated_at": time.time()}
        if run_id:
            values["run_id"] = run_id
        with self._write() as conn:
            conn.execute(
                sa.update(self.batches).where(self.batches.c.batch_id == batch_id).values(**values)
            )

    def force_complete(self, batch_id: str, reason: str) -> BatchState:
        """Mark a batch complete whatever its chunks say, with the operator's reason. Refused
        (BatchBusyError, naming the run and when its lease expires) while a run holds the
        batch's lease and it has not expired: that run would finish its chunks under a batch
        already marked complete. Checked and written in one transaction, under the lease's
        lock, so that no run takes the lease in between."""
        if not reason.strip():
            raise ConfigError("force-complete needs a reason")
        batches, leases = self.batches, self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            found = conn.execute(
                sa.select(batches.c.batch_id).where(batches.c.batch_id == batch_id)
            ).first()
            if found is None:
                raise ConfigError(f"batch {batch_id} is not in the ledger at {self.safe_url}")
            row = conn.execute(sa.select(leases).where(leases.c.batch_id == batch_id)).first()
            now = time.time()
            if row is not None and row.expires_at > now:
                raise BatchBusyError(
                    f"batch {batch_id} is being processed by {Lease(**row._mapping).describe(now)}"
                    "; it cannot be completed while that run holds it: wait for it, or stop it "
                    f"first (ledger {self.safe_url})"
                )
            conn.execute(
                sa.update(batches)
                .where(batches.c.batch_id == batch_id)
                .values(status=BatchStatus.COMPLETED_FORCED, reason=reason, updated_at=now)
            )
        state = self.batch(batch_id)
        assert state is not None
        return state
