"""The dead-letter store: what a chunk that kept failing needs to be understood and redriven.

Each dead letter is a JSON document at ``{output}/{batch_id}/dead_letters/chunk-NNNNN.json`` (a
local folder or an S3 prefix, beside the batch's results) with the chunk's descriptor, the error,
its category, the traceback and the attempts (of the run that gave up); optionally a copy goes to
an SQS dead-letter queue, best effort: the stored document is the record. A keyed batch's
bucket (``core.shuffle``) has its own, ``dead_letters/bucket-NNNNN.json``, with ``bucket`` for
``chunk``: any ``WorkUnit`` does.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from batch_pipeline.core.common.errors import ErrorInfo
from batch_pipeline.core.common.models import BatchSpec
from batch_pipeline.core.delivery.sinks import resolve_queue_url
from batch_pipeline.core.stores.storage import Storage


class WorkUnit(Protocol):
    """What one step works on: a ``Chunk``, or a keyed batch's ``Bucket``."""

    @property
    def index(self) -> int: ...

    @property
    def key(self) -> str: ...  # chunk_00003, bucket_00003

    def describe(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def unit_name(unit: WorkUnit) -> str:
    """``chunk`` or ``bucket``: the word before the index in the unit's key."""
    return unit.key.rsplit("_", 1)[0]


def dead_letter_document(
    spec: BatchSpec, unit: WorkUnit, error: ErrorInfo, traceback: str, attempts: int
) -> dict[str, Any]:
    return {
        "batch_id": spec.batch_id,
        unit_name(unit): unit.index,
        "source": spec.source.uri,
        "descriptor": unit.to_dict(),
        "slice": unit.describe(),
        "error": error.message,
        "category": error.category,
        "transient": error.transient,
        "attempts": attempts,
        "traceback": traceback,
        "dead_lettered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "redrive": f"batch-pipeline redrive {spec.batch_id}",
    }


def write_dead_letter(
    storage: Storage, spec: BatchSpec, unit: WorkUnit, document: dict[str, Any]
) -> str:
    """Store the dead letter; returns where it is. Idempotent: the same chunk always lands on
    the same path."""
    uri = spec.dead_letter_uri(unit.index, unit_name(unit))
    storage.write_bytes(uri, json.dumps(document, indent=1, default=str).encode())
    return uri


def send_dead_letter(sqs_client: Any, queue: str, document: dict[str, Any]) -> None:
    """A copy of the dead letter to an SQS dead-letter queue (``sqs://NAME`` or a URL)."""
    url = resolve_queue_url(sqs_client, queue)
    sqs_client.send_message(QueueUrl=url, MessageBody=json.dumps(document, default=str))
