"""Aggregate a batch from the ledger: check that records are conserved, apply the tolerated
failures, write the manifest.

The manifest (``{output}/{batch_id}/manifest.json``) is the batch's table of contents, like the
one Step Functions' result writer leaves: result files grouped by status (succeeded, failed,
pending), totals, rejection reasons, the plan, the run's config and ids. ``files.valid`` lists
the Parquet files of valid records in chunk order: read in that order, they give the input's
records in the input's order (minus the records of failed chunks, which the manifest lists with
their dead letters).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from batch_pipeline.core.aggregation.unify import unify_files
from batch_pipeline.core.common.errors import ConservationError
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary, FailureSettings
from batch_pipeline.core.inputs.filesets import FILE_COLUMN
from batch_pipeline.core.ledger import (
    COMPLETED_FORCED,
    DEAD_LETTERED,
    FAILED,
    SUCCEEDED,
    BatchStatus,
    ChunkState,
)
from batch_pipeline.core.processing.run import REJECT_META
from batch_pipeline.core.stores.storage import Storage

MANIFEST_VERSION = 1


@dataclass
class BatchResult:
    """The totals of a batch and where its results are.

    ``status``: ``succeeded`` (every chunk), ``partial`` (failures within the tolerance),
    ``failed`` (beyond it; ``failure`` says why) or ``completed_forced`` (by an operator)."""

    batch_id: str
    manifest_uri: str
    status: str
    records_in: int
    records_out: int
    records_rejected: int
    chunks: int
    chunks_succeeded: int
    chunks_failed: int
    chunks_pending: int
    bytes_read: int
    processing_seconds: float
    peak_rss_bytes: int
    valid_files: list[str]
    rejected_files: list[str]
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    failed_chunks: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    chunk_records: int | None = None
    plan_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance_failure(failed: int, total: int, settings: FailureSettings) -> str | None:
    """Why ``failed`` of ``total`` chunks fail the batch, or None when that is tolerated.
    As in Step Functions: with neither tolerance set, one failure is too many; with either
    set, going above any set threshold fails the batch."""
    if not failed:
        return None
    count, percentage = settings.tolerated_failure_count, settings.tolerated_failure_percentage
    share = 100.0 * failed / total if total else 100.0
    head = f"{failed} of {total} chunk(s) failed ({share:.1f}%)"
    if count is None and percentage is None:
        return f"{head}; no failure is tolerated (tolerated_failure_count/percentage unset)"
    if count is not None and failed > count:
        return f"{head}, above tolerated_failure_count={count}"
    if percentage is not None and share > percentage:
        return f"{head}, above tolerated_failure_percentage={percentage}"
    return None


def aggregate(
    storage: Storage,
    spec: BatchSpec,
    states: list[ChunkState],
    run_id: str | None = None,
    forced: str | None = None,
) -> BatchResult:
    """Build the batch's result from its ledger rows and write the manifest (always, also when
    the batch fails: it lists every succeeded and every failed chunk). ``forced`` is the reason
    an operator force-completed the batch: its unfinished chunks then fail nothing, and its
    status is ``completed_forced``. Raises ConservationError when a succeeded chunk's counts do
    not add up, or when every chunk succeeded but the records read are not the total that an
    exact plan counted."""
    summaries: list[ChunkSummary] = []
    for state in states:
        if state.status == SUCCEEDED:
            summary = state.chunk_summary()
            if summary is None:
                raise ConservationError(f"chunk {state.chunk} succeeded without a summary")
            summaries.append(summary)
    unbalanced = [s for s in summaries if not s.balanced]
    if unbalanced:
        detail = "; ".join(
            f"{s.key}: {s.records_in} in != {s.records_out} out + {s.records_rejected} rejected"
            for s in unbalanced
        )
        raise ConservationError(f"records not conserved in {len(unbalanced)} chunk(s): {detail}")
    failed = [s for s in states if s.status in (FAILED, DEAD_LETTERED)]
    pending = [s for s in states if s.status not in (SUCCEEDED, FAILED, DEAD_LETTERED)]
    reasons: Counter[str] = Counter()
    for s in summaries:
        reasons.update(s.rejection_reasons)
    failure = tolerance_failure(len(failed) + len(pending), len(states), spec.failures)
    status = (
        BatchStatus.FAILED
        if failure
        else (BatchStatus.PARTIAL if failed or pending else BatchStatus.SUCCEEDED)
    )
    if forced is not None:
        failure, status = None, COMPLETED_FORCED
    result = BatchResult(
        batch_id=spec.batch_id,
        manifest_uri=spec.manifest_uri,
        status=status,
        records_in=sum(s.records_in for s in summaries),
        records_out=sum(s.records_out for s in summaries),
        records_rejected=sum(s.records_rejected for s in summaries),
        chunks=len(states),
        chunks_succeeded=len(summaries),
        chunks_failed=len(failed),
        chunks_pending=len(pending),
        bytes_read=sum(s.bytes_read for s in summaries),
        processing_seconds=round(sum(s.seconds for s in summaries), 6),
        peak_rss_bytes=max((s.peak_rss_bytes for s in summaries), default=0),
        valid_files=[s.valid_uri for s in summaries if s.valid_uri],
        rejected_files=[s.rejected_uri for s in summaries if s.rejected_uri],
        rejection_reasons=dict(reasons.most_common()),
        failed_chunks=[_failed_entry(s) for s in failed],
        failure=failure,
    )
    if failure and pending:
        result.failure = f"{failure}; {len(pending)} chunk(s) never finished: run again to resume"
    if failure and result.failed_chunks:
        first = result.failed_chunks[0]
        result.failure = (
            f"{result.failure}; dead letters under {spec.output}/dead_letters/; first failure: "
            f"chunk_{first['chunk']:05d} {first['category']}: {(first['error'] or '')[:300]}"
        )
    unify_files(storage, result.valid_files, trailing=(FILE_COLUMN,))
    unify_files(storage, result.rejected_files, trailing=(FILE_COLUMN, *REJECT_META))
    plan = json.loads(storage.read_bytes(spec.plan_uri)) if storage.exists(spec.plan_uri) else {}
    plan.pop("descriptors", None)
    _check_planned_total(spec, plan, result)
    result.chunk_records = plan.get("chunk_records")
    result.plan_reason = plan.get("reason")
    manifest = build_manifest(spec, summaries, states, result, plan, run_id, forced)
    storage.write_bytes(spec.manifest_uri, json.dumps(manifest, indent=1, default=str).encode())
    return result


def _check_planned_total(spec: BatchSpec, plan: dict[str, Any], result: BatchResult) -> None:
    """A run whose every chunk succeeded read the plan's total, when the plan counted it
    exactly (``exact_records``: scanned text, Parquet, staged parts)."""
    total = plan.get("total_records")
    if not plan.get("exact_records") or total is None or result.chunks_succeeded != result.chunks:
        return
    if result.records_in != total:
        raise ConservationError(
            f"batch {spec.batch_id}: {result.records_in:,} records read over its "
            f"{result.chunks} chunk(s), but the plan counted {total:,} in {spec.source.uri}: "
            "records were lost or invented between planning and reading"
        )


def _failed_entry(state: ChunkState) -> dict[str, Any]:
    return {
        "chunk": state.chunk,
        "status": state.status,
        "attempts": state.attempts,
        "category": state.error_category,
        "error": state.error_message,
        "dead_letter": state.dead_letter,
    }


def build_manifest(
    spec: BatchSpec,
    summaries: list[ChunkSummary],
    states: list[ChunkState],
    result: BatchResult,
    plan: dict[str, Any],
    run_id: str | None,
    forced: str | None = None,
) -> dict[str, Any]:
    source = spec.source
    return {
        "manifest_version": MANIFEST_VERSION,
        "batch_id": spec.batch_id,
        "run_id": run_id,
        "status": result.status,
        "failure": result.failure,
        "forced_reason": forced,
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
        "warnings": list(spec.warnings),
        "config": spec.config,
        "plan": plan,
        "totals": {
            "records_in": result.records_in,
            "records_out": result.records_out,
            "records_rejected": result.records_rejected,
            "chunks": result.chunks,
            "chunks_succeeded": result.chunks_succeeded,
            "chunks_failed": result.chunks_failed,
            "chunks_pending": result.chunks_pending,
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
            "failed": result.failed_chunks,
            "pending": [
                {"chunk": s.chunk, "status": s.status, "attempts": s.attempts}
                for s in states
                if s.status not in (SUCCEEDED, FAILED, DEAD_LETTERED)
            ],
        },
        "files": {"valid": result.valid_files, "rejected": result.rejected_files},
    }
