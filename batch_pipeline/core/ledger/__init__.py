"""The chunk ledger (see ``store.py``): what each chunk of each batch has done, the batch's
lease, and where its messages went. Callers import from here."""

from batch_pipeline.core.common.statuses import (
    CHUNK_STATUSES,
    COMPLETED_FORCED,
    DEAD_LETTERED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BatchStatus,
    ChunkStatus,
)
from batch_pipeline.core.ledger.chunks import LedgerQueries
from batch_pipeline.core.ledger.destinations import Destination, is_external, sink_key
from batch_pipeline.core.ledger.digests import (
    SENT_SETTINGS,
    chunk_fingerprint,
    chunking_settings,
    delivery_digest,
    output_digest,
    parse_settings,
    plan_hash,
    sent_settings,
)
from batch_pipeline.core.ledger.engine import safe_url, url_password
from batch_pipeline.core.ledger.lease import LeaseKeeper, LeaseSettings
from batch_pipeline.core.ledger.states import BatchState, ChunkState, Lease, Progress
from batch_pipeline.core.ledger.store import Ledger, open_ledger

__all__ = [
    "CHUNK_STATUSES",
    "COMPLETED_FORCED",
    "DEAD_LETTERED",
    "FAILED",
    "PENDING",
    "RUNNING",
    "SENT_SETTINGS",
    "SUCCEEDED",
    "BatchState",
    "BatchStatus",
    "ChunkState",
    "ChunkStatus",
    "Destination",
    "Lease",
    "LeaseKeeper",
    "LeaseSettings",
    "Ledger",
    "LedgerQueries",
    "Progress",
    "chunk_fingerprint",
    "chunking_settings",
    "delivery_digest",
    "is_external",
    "open_ledger",
    "output_digest",
    "parse_settings",
    "plan_hash",
    "safe_url",
    "sent_settings",
    "sink_key",
    "url_password",
]
