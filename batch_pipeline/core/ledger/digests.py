"""Digests of what shapes a batch's output and messages, which the ledger keeps to notice a change.

``output_digest`` covers what shapes the output files (parse, processor, chunking, output root),
``delivery_digest`` where messages go and how they are packed, ``chunk_fingerprint`` one chunk's
input and settings, ``plan_hash`` the chunk plan (and a keyed batch's buckets). ``sent_settings``
digests, piece by piece (``SENT_SETTINGS``), everything that decides which messages a batch sends,
so that a refusal can say which piece changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from batch_pipeline.core.common.models import BatchSpec, Chunk, Plan


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def output_digest(spec: BatchSpec) -> str:
    """Everything besides the source's content that shapes a batch's output files: how the
    source is parsed, the processor and its options, the chunking, where outputs go."""
    return _digest(
        {
            "parse": parse_settings(spec),
            "processor": spec.processor,
            "options": spec.processor_options,
            "modules": spec.processor_modules,
            "chunking": chunking_settings(spec),
            "output": spec.output_root,
        }
    )


def delivery_digest(spec: BatchSpec) -> str:
    """What shapes a batch's messages: where they go and how records are packed."""
    return _digest([spec.delivery.target, *_packing(spec)])


def _packing(spec: BatchSpec) -> list[Any]:
    """The settings that pack records into messages (a key column only when there is one, so
    that a ledger from before the setting keeps its digests)."""
    d = spec.delivery
    return [d.records_per_message, d.max_message_bytes] + (
        [d.key_column] if d.key_column is not None else []
    )


def parse_settings(spec: BatchSpec) -> dict[str, Any]:
    source = spec.source
    return {
        "format": source.format,
        "compression": source.compression,
        "csv": asdict(source.csv) if source.csv else None,
        "json_records_path": source.json_records_path,
        "excel_sheets": source.excel_sheets,
    }


def chunking_settings(spec: BatchSpec) -> dict[str, Any]:
    """The chunking as digests and ``plan.json`` compare it: without ``max_buckets``, whose one
    effect, a keyed batch's bucket count, the plan carries (``Plan.buckets``, in
    ``plan_hash``); so a batch planned before the setting existed keeps its digests."""
    return {k: v for k, v in asdict(spec.chunking).items() if k != "max_buckets"}


def chunk_fingerprint(spec: BatchSpec, chunk: Chunk) -> str:
    """Changes whenever the chunk's output could: another source content, another slice,
    other parse, processor, chunking or output settings."""
    return _digest(
        {
            "source": spec.source.info.fingerprint,
            "chunk": chunk.to_dict(),
            "out": output_digest(spec),
        }
    )


def plan_hash(plan: Plan) -> str:
    """The chunk descriptors, and a keyed batch's bucket plan (count, key column, hash)."""
    chunks = [c.to_dict() for c in plan.chunks]
    if plan.buckets is None:
        return _digest(chunks)
    b = plan.buckets
    return _digest({"chunks": chunks, "buckets": [b.count, b.key_column, b.scheme]})


# What a batch's messages are made of, piece by piece (so that a refusal can say which changed).
SENT_SETTINGS = {
    "source": "the source's content",
    "plan": "the chunk plan",
    "parse": "the parse settings (format, compression, CSV options, JSON path, sheets)",
    "processor": "the processor or its options",
    "chunking": "the chunking (chunk_records, max_chunks, chunk_bytes, scan)",
    "packing": "the message packing (records_per_message, max_message_bytes, key_column)",
}


def sent_settings(spec: BatchSpec, plan: Plan) -> dict[str, str]:
    """Digests of everything that decides which messages a batch sends (not where)."""
    return {
        "source": spec.source.info.fingerprint,
        "plan": plan_hash(plan),
        "parse": _digest(parse_settings(spec)),
        "processor": _digest([spec.processor, spec.processor_options, spec.processor_modules]),
        # heavy_records only routes chunks to other workers: it changes no message.
        "chunking": _digest(
            {k: v for k, v in chunking_settings(spec).items() if k != "heavy_records"}
        ),
        "packing": _digest(_packing(spec)),
    }
