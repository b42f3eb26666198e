"""``{output}/{batch_id}/delivery.json``: what was delivered where, kept beside the results.

The ledger is the record of delivery progress, but it can be lost (a SQLite file deleted,
truncated or replaced; a fresh database). After every delivery, ``record_delivery`` writes per
destination (``sink_key``: one name per queue) the target, where it resolved to, how many of
the batch's messages and records the sink has, when, by which run and from which ledger. A
run of a batch the ledger does not know checks it first (``refuse_if_delivered``): a batch
that went to the same external sink before is refused unless the run says ``redeliver``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import BatchSpec, join_uri
from batch_pipeline.core.ledger import SUCCEEDED, Ledger, LedgerQueries, is_external, sink_key
from batch_pipeline.core.stores.storage import Storage

DELIVERY_RECORD = "delivery.json"


def delivery_record_uri(spec: BatchSpec) -> str:
    return join_uri(spec.output, DELIVERY_RECORD)


def read_delivery_record(storage: Storage, spec: BatchSpec) -> dict[str, Any]:
    """The batch's delivery record, {} when there is none. Raises ConfigError when it exists
    but cannot be read as one (refusing is the safe side: it may say the batch went out)."""
    uri = delivery_record_uri(spec)
    if not storage.exists(uri):
        return {}
    try:
        record = json.loads(storage.read_bytes(uri))
        if not isinstance(record, dict) or not isinstance(record.get("deliveries", {}), dict):
            raise ValueError("not a delivery record")
    except ValueError as exc:
        raise ConfigError(
            f"{uri} cannot be read ({exc}); it may record that batch {spec.batch_id} was "
            "delivered. Nothing was done: repair or remove it, or run with --redeliver "
            "(redeliver: true) to deliver the batch again"
        ) from exc
    return record


def record_delivery(
    storage: Storage,
    ledger: LedgerQueries,
    spec: BatchSpec,
    destination: str,
    run_id: str | None,
) -> dict[str, Any]:
    """Write what the sink of ``spec.delivery.target`` has of the batch now (from the ledger's
    rows: a keyed batch's buckets', ``Ledger.buckets``), keeping what the record says of other
    destinations. Returns this destination's entry."""
    states = ledger.chunk_states(spec.batch_id)
    messages = sum(
        min(s.messages_sent, s.messages or 0) + len(s.accepted_numbers()) for s in states
    )
    records = sum(s.records_out or 0 for s in states if s.status == SUCCEEDED and s.delivered)
    try:
        record = read_delivery_record(storage, spec)
    except ConfigError:
        record = {}  # unreadable: replaced by what the ledger says now
    entry = {
        "target": spec.delivery.target,
        "destination": destination,
        "messages": messages,
        "records": records,
        "chunks": sum(1 for s in states if s.delivered),
        "delivered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_id": run_id,
        "ledger": ledger.safe_url,
    }
    deliveries = dict(record.get("deliveries") or {})
    deliveries[sink_key(spec.delivery.target)] = entry
    document = {"batch_id": spec.batch_id, "source": spec.source.uri, "deliveries": deliveries}
    storage.write_bytes(delivery_record_uri(spec), json.dumps(document, indent=1).encode())
    return entry


def refuse_if_delivered(storage: Storage, ledger: Ledger, spec: BatchSpec) -> None:
    """For a batch the ledger has no row of: raise ConfigError when its delivery record says
    it went to this run's external sink already (unless ``spec.redeliver``)."""
    if spec.redeliver or not is_external(spec.delivery.target):
        return
    entry = (read_delivery_record(storage, spec).get("deliveries") or {}).get(
        sink_key(spec.delivery.target)
    )
    if not entry or not entry.get("messages"):
        return
    raise ConfigError(
        f"batch {spec.batch_id} was delivered to {entry.get('target')} on "
        f"{entry.get('delivered_at')} ({entry.get('messages')} message(s), "
        f"{entry.get('records')} record(s); {delivery_record_uri(spec)}), but the ledger at "
        f"{ledger.safe_url} has no record of it: the ledger was reset, truncated or replaced. "
        "Nothing was done; run with --redeliver (redeliver: true) to process and deliver it "
        "again"
    )
