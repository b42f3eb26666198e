"""The chunk ledger: the single record of what each chunk of each batch has done.

One row per batch and chunk (``bp_chunks``): status, attempts, last error and its category, records
in/out/rejected, timings, the chunk's input fingerprint, its dead letter, and how far its delivery
got; the same per bucket of a keyed batch (``bp_buckets``, ``Ledger.buckets``). A row per batch
(``bp_batches``) keeps the batch's source, config (for redrive), plan and outcome. Progress, resume,
redrive, force-complete and the dead-letter view all read these tables.

SQLite is the embedded default; any SQLAlchemy URL works, and ``postgresql://...`` (the database
of a production Dagster instance) is the production choice. Every update is one statement or one
transaction, so concurrent steps never lose a count; batch progress is counted from the chunk
rows, never kept as a counter that two steps could both overwrite. All SQL is built by
SQLAlchemy with bound parameters.

A lease per batch (``bp_leases``) keeps two runs of the same batch apart: the run holding it
(its Dagster run id) renews it while it works; another run is refused until it is released,
expires, or (under Dagster) its holder's run is known to have finished. ``bp_deliveries`` keeps,
per batch and external sink, what a batch's messages were made from and how many the sink took,
so that a change which would deliver records twice to the same sink is refused.

``Ledger`` is assembled from one class per subject: the database (``engine.py``), chunk rows
and the views over them (``chunks.py``), batch rows and destinations (``batches.py``) and leases
(``lease.py``). ``open_ledger`` gives one ``Ledger`` per URL and process; the URL is the
caller's to choose (``batch_pipeline.settings.default_ledger_url`` when none is configured).
Statuses are in ``batch_pipeline.core.common.statuses``.
"""

from __future__ import annotations

import threading

from batch_pipeline.core.ledger.batches import BatchRecords
from batch_pipeline.core.ledger.chunks import LedgerQueries
from batch_pipeline.core.ledger.lease import LeaseRecords


class Ledger(BatchRecords, LeaseRecords, LedgerQueries):
    """Reads and atomically updates the chunk ledger. Thread- and process-safe on a SQLite file
    or Postgres; the in-memory ``sqlite://`` ledger (run_batch's default) is for one thread."""

    @property
    def buckets(self) -> LedgerQueries:
        """A keyed batch's bucket rows (``bp_buckets``), read and changed as chunk rows are:
        ``ledger.buckets.mark_running(batch_id, bucket)``, ``.chunk_states(batch_id)``..."""
        return self.rows_of(self.bucket_table, "bucket")


_LEDGERS: dict[tuple[str, str | None], Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def open_ledger(url: str, schema: str | None = None) -> Ledger:
    """The ledger at ``url``, one per process and URL."""
    key = (url, schema)
    with _LEDGERS_LOCK:
        if key not in _LEDGERS:
            _LEDGERS[key] = Ledger(*key)
        return _LEDGERS[key]
