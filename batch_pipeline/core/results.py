"""Aggregate chunk summaries: check that records are conserved, write the manifest.

The manifest (``{output}/{batch_id}/manifest.json``) is the batch's table of contents, like the
one Step Functions' result writer leaves: result files grouped by status (succeeded, failed,
pending), totals, rejection reasons, the plan, the run's config and ids. ``files.valid`` lists the
Parquet files of valid records in chunk order: read in that order, they give the input's records
in the input's order.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from batch_pipeline.core.errors import ConservationError
from batch_pipeline.core.models import BatchSpec, ChunkSummary, Plan
from batch_pipeline.core.storage import Storage

MANIFEST_VERSION = 1


@dataclass
class BatchResult:
    """The totals of a batch and where its results are."""

    batch_id: str
    manifest_uri: str
    records_in: int
    records_out: int
    records_rejected: int
    chunks: int
    bytes_read: int
    processing_seconds: float
    peak_rss_bytes: int
    valid_files: list[str]
    rejected_files: list[str]
    rejection_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "chunks": len(plan.chunks),
        "chunk_records": plan.chunk_records,
        "reason": plan.reason,
        "total_records": plan.total_records,
        "exact_records": plan.exact_records,
        "descriptors": [asdict(c) for c in plan.chunks],
    }


def write_plan(storage: Storage, spec: BatchSpec, plan: Plan) -> None:
    storage.write_bytes(spec.plan_uri, json.dumps(plan_to_json(plan), indent=1).encode())


def check_conservation(summaries: list[ChunkSummary]) -> None:
    """Every planned chunk reported, and records in = out + rejected for each one."""
    if not summaries:
        raise ConservationError("no chunk reported a summary")
    expected = set(range(summaries[0].count))
    seen = [s.index for s in summaries]
    missing = sorted(expected - set(seen))
    duplicated = sorted(i for i, n in Counter(seen).items() if n > 1)
    if missing or duplicated:
        raise ConservationError(
            f"chunk summaries do not match the plan: missing {missing}, duplicated {duplicated}"
        )
    unbalanced = [s for s in summaries if not s.balanced]
    if unbalanced:
        detail = "; ".join(
            f"{s.key}: {s.records_in} in != {s.records_out} out + {s.records_rejected} rejected"
            for s in unbalanced
        )
        raise ConservationError(f"records not conserved in {len(unbalanced)} chunk(s): {detail}")


def aggregate(
    storage: Storage,
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    run_id: str | None = None,
) -> BatchResult:
    """Check the summaries, write the manifest, and return the batch's totals."""
    summaries = sorted(summaries, key=lambda s: s.index)
    check_conservation(summaries)
    reasons: Counter[str] = Counter()
    for s in summaries:
        reasons.update(s.rejection_reasons)
    result = BatchResult(
        batch_id=spec.batch_id,
        manifest_uri=spec.manifest_uri,
        records_in=sum(s.records_in for s in summaries),
        records_out=sum(s.records_out for s in summaries),
        records_rejected=sum(s.records_rejected for s in summaries),
        chunks=len(summaries),
        bytes_read=sum(s.bytes_read for s in summaries),
        processing_seconds=round(sum(s.seconds for s in summaries), 6),
        peak_rss_bytes=max(s.peak_rss_bytes for s in summaries),
        valid_files=[s.valid_uri for s in summaries],
        rejected_files=[s.rejected_uri for s in summaries if s.rejected_uri],
        rejection_reasons=dict(reasons.most_common()),
    )
    if result.records_in != result.records_out + result.records_rejected:
        raise ConservationError(
            f"batch {spec.batch_id}: {result.records_in} records in != {result.records_out} out "
            f"+ {result.records_rejected} rejected"
        )
    plan = json.loads(storage.read_bytes(spec.plan_uri)) if storage.exists(spec.plan_uri) else {}
    plan.pop("descriptors", None)
    manifest = build_manifest(spec, summaries, result, plan, run_id)
    storage.write_bytes(spec.manifest_uri, json.dumps(manifest, indent=1, default=str).encode())
    return result


def build_manifest(
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    result: BatchResult,
    plan: dict[str, Any],
    run_id: str | None,
) -> dict[str, Any]:
    source = spec.source
    return {
        "manifest_version": MANIFEST_VERSION,
        "batch_id": spec.batch_id,
        "run_id": run_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ids": spec.ids,
        "source": {
            "uri": source.uri,
            "format": source.format,
            "compression": source.compression,
            "size": source.info.size,
            "etag": source.info.etag,
            "mtime": source.info.mtime,
            "fingerprint": source.info.fingerprint,
        },
        "processor": {"name": spec.processor, "options": spec.processor_options},
        "config": spec.config,
        "plan": plan,
        "totals": {
            "records_in": result.records_in,
            "records_out": result.records_out,
            "records_rejected": result.records_rejected,
            "chunks": result.chunks,
            "chunks_succeeded": len(summaries),
            "chunks_failed": 0,
            "chunks_pending": 0,
            "bytes_read": result.bytes_read,
            "processing_seconds": result.processing_seconds,
        },
        "rejection_reasons": result.rejection_reasons,
        "results": {
            "succeeded": [
                {
                    "chunk": s.index,
                    "key": s.key,
                    "valid": s.valid_uri,
                    "rejected": s.rejected_uri,
                    "records_in": s.records_in,
                    "records_out": s.records_out,
                    "records_rejected": s.records_rejected,
                    "seconds": s.seconds,
                }
                for s in summaries
            ],
            "failed": [],
            "pending": [],
        },
        "files": {"valid": result.valid_files, "rejected": result.rejected_files},
    }
