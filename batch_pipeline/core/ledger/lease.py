"""One run per batch at a time: the batch's lease in the ledger, and its heartbeat.

A run takes its batch's lease (``Ledger.acquire_lease``, holder: its run id) before its first
write (planning); a second run of the same batch is refused with ``BatchBusyError`` naming the
holder. Every later step renews the lease before it writes (a run that lost it stops with
``LeaseLostError``), and ``LeaseKeeper`` renews it in a background thread while a step works, so
that a live run's lease never expires. A run gives the lease back when it ends; a run that died
(a killed process) stops renewing, and its lease expires ``ttl_seconds`` after its last
heartbeat. Under Dagster, a holder whose run the instance knows has finished is taken over at
once.

The caller gives the ``LeaseSettings``: the Dagster steps read them from the environment when a
run or step starts (``batch_pipeline.settings.lease_settings``:
``BATCH_PIPELINE_LEASE_TTL_SECONDS``, default 60, and ``BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS``,
default 10 and at most a third of the TTL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType

import sqlalchemy as sa

from batch_pipeline.core.common.errors import BatchBusyError, LeaseLostError
from batch_pipeline.core.ledger.engine import LedgerDatabase
from batch_pipeline.core.ledger.states import Lease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    """How long a lease lasts without a heartbeat, and how often a working step renews it."""

    ttl_seconds: float = 60.0
    heartbeat_seconds: float = 10.0


class LeaseRecords(LedgerDatabase):
    """Taking, renewing and giving back a batch's lease (``bp_leases``), each one transaction
    under the batch's lease lock."""

    def acquire_lease(
        self,
        batch_id: str,
        holder: str,
        ttl: float,
        holder_finished: Callable[[str], bool] | None = None,
    ) -> Lease:
        """Take the batch's lease for ``holder`` for ``ttl`` seconds: when nobody holds it, its
        lease expired, it is ours already, or ``holder_finished(other)`` says its holder's run
        has ended. Otherwise raise BatchBusyError naming the holder, when it was last seen
        and when its lease expires. Each attempt is one transaction."""
        taken = self._take_lease(batch_id, holder, ttl, None)
        # Whether the holder's run ended is asked outside the transaction.
        if taken.holder != holder and holder_finished and holder_finished(taken.holder):
            taken = self._take_lease(batch_id, holder, ttl, taken.holder)
        if taken.holder == holder:
            return taken
        raise BatchBusyError(
            f"batch {batch_id} is being processed by another run: {taken.describe()}. This run "
            "did nothing. Wait for that run to end; if it died, run the batch again once its "
            f"lease has expired (ledger {self.safe_url})"
        )

    def _take_lease(self, batch_id: str, holder: str, ttl: float, finished: str | None) -> Lease:
        """Our lease if we could take it, else the holder's."""
        table = self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            now = time.time()
            row = conn.execute(sa.select(table).where(table.c.batch_id == batch_id)).first()
            if row is None:
                lease = Lease(batch_id, holder, now, now, now + ttl)
                conn.execute(sa.insert(table).values(**asdict(lease)))
                return lease
            current = Lease(**row._mapping)
            free = current.expires_at <= now or current.holder in (holder, finished)
            if not free:
                return current
            since = current.acquired_at if current.holder == holder else now
            lease = Lease(batch_id, holder, since, now, now + ttl)
            conn.execute(
                sa.update(table).where(table.c.batch_id == batch_id).values(**asdict(lease))
            )
            return lease

    def renew_lease(self, batch_id: str, holder: str, ttl: float) -> Lease:
        """Extend ``holder``'s lease by ``ttl`` seconds from now (also one that expired, as long
        as nobody took it). Raises LeaseLostError when another run holds it, or nobody does."""
        table = self.leases
        with self._write() as conn:
            self._lock(conn, f"bp_lease:{batch_id}")
            now = time.time()
            row = conn.execute(sa.select(table).where(table.c.batch_id == batch_id)).first()
            if row is None or row.holder != holder:
                who = (
                    f"{Lease(**row._mapping).describe(now)} holds it now"
                    if row is not None
                    else "nobody holds it (it was released, or the ledger was reset)"
                )
                raise LeaseLostError(
                    f"batch {batch_id}: this run ({holder}) no longer holds the batch's lease: "
                    f"{who}. This step stopped before writing anything; run the batch again "
                    "once the other run has ended"
                )
            conn.execute(
                sa.update(table)
                .where(table.c.batch_id == batch_id)
                .values(heartbeat_at=now, expires_at=now + ttl)
            )
            return Lease(batch_id, holder, row.acquired_at, now, now + ttl)

    def release_lease(self, batch_id: str, holder: str) -> bool:
        """Give the batch's lease back, if ``holder`` holds it (never another run's)."""
        table = self.leases
        with self._write() as conn:
            result = conn.execute(
                sa.delete(table).where(table.c.batch_id == batch_id, table.c.holder == holder)
            )
        return bool(result.rowcount)

    def release_leases(self, holder: str) -> list[str]:
        """Give back every lease ``holder`` holds (a run that failed); the batch ids."""
        table = self.leases
        with self._write() as conn:
            held = conn.execute(sa.select(table.c.batch_id).where(table.c.holder == holder))
            batch_ids = [r.batch_id for r in held]
            if batch_ids:
                conn.execute(sa.delete(table).where(table.c.holder == holder))
        return batch_ids

    def lease(self, batch_id: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.leases).where(self.leases.c.batch_id == batch_id)
            ).first()
        return Lease(**row._mapping) if row is not None else None


class LeaseKeeper:
    """``with LeaseKeeper(...)``: renew the lease now (LeaseLostError when another run has
    it: the block never runs), then every ``heartbeat_seconds`` in a thread until the block
    ends. A renewal that finds the lease lost stops the heartbeat, and the block's end raises
    LeaseLostError (a caller may ``check()`` before it writes). A renewal that fails for
    another reason (the ledger briefly unreachable) is logged and tried again at the next beat.
    The in-memory ledger gets no thread: nothing else can see it."""

    def __init__(
        self, ledger: LeaseRecords, batch_id: str, holder: str, settings: LeaseSettings
    ) -> None:
        self.ledger = ledger
        self.batch_id = batch_id
        self.holder = holder
        self.settings = settings
        self.lost: LeaseLostError | None = None
        self.lease: Lease | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self.lease = self.ledger.renew_lease(self.batch_id, self.holder, self.settings.ttl_seconds)
        if not self.ledger.in_memory:
            self._thread = threading.Thread(
                target=self._beat, name=f"lease-{self.batch_id}", daemon=True
            )
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.lease = self.ledger.renew_lease(
                    self.batch_id, self.holder, self.settings.ttl_seconds
                )
            except LeaseLostError as exc:
                self.lost = exc
                return
            except Exception as exc:  # the next beat tries again; the TTL covers a few misses
                log.warning("could not renew the lease of batch %s: %s", self.batch_id, exc)

    def check(self) -> None:
        """Raise LeaseLostError if the heartbeat found the lease taken."""
        if self.lost is not None:
            raise self.lost

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc_type is None:
            self.check()
