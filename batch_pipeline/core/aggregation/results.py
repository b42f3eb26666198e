"""Aggregate a batch from the ledger: check that records are conserved, apply the tolerated
failures, write the manifest.

The manifest (``{output}/{batch_id}/manifest.json``) is the batch's table of contents, like the
one Step Functions' result writer leaves: result files grouped by status (succeeded, failed,
pending), totals, rejection reasons, the plan, the run's config and ids. ``files.valid`` lists
the Parquet files of valid records in chunk order: read in that order, they give the input's
records in the input's order (minus the records of failed chunks, which the manifest lists with
their dead letters). A keyed batch's valid files are its buckets' (``keyed``), in bucket order,
each key's records in its own order.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from batch_pipeline.core.aggregation.keyed import (
    bucket_results,
    check_shuffle,
    failed_entry,
    keyed_stage,
    succeeded_summaries,
)
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
    # A keyed batch's buckets (``core.shuffle``); zero and empty for a batch of one stage.
    buckets: int = 0
    buckets_succeeded: int = 0
    buckets_failed: int = 0
    buckets_pending: int = 0
    failed_buckets: list[dict[str, Any]] = field(default_factory=list)
    # The processor's own totals over the batch's succeeded chunks and buckets
    # (``ChunkSummary.counts``: the leads processor's ``leads_inserted``...).
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance_failure(
    failed: int, total: int, settings: FailureSettings, unit: str = "chunk"
) -> str | None:
    """Why ``failed`` of ``total`` chunks (a keyed batch's: buckets, ``unit``) fail the batch,
    or None when that is tolerated. As in Step Functions: with neither tolerance set, one
    failure is too many; with either set, going above any set threshold fails the batch."""
    if not failed:
        return None
    count, percentage = settings.tolerated_failure_count, settings.tolerated_failure_percentage
    share = 100.0 * failed / total if total else 100.0
    head = f"{failed} of {total} {unit}(s) failed ({share:.1f}%)"
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
    buckets: list[ChunkState] | None = None,
) -> BatchResult:
    """Build the batch's result from its ledger rows and write the manifest (always, also when
    the batch fails: it lists every succeeded and every failed chunk). ``forced`` is the reason
    an operator force-completed the batch: its unfinished chunks then fail nothing, and its
    status is ``completed_forced``. ``buckets``: a keyed batch's bucket rows
    (``ledger.buckets.chunk_states``), whose outputs are then the batch's (see ``keyed``).
    Raises ConservationError when a succeeded chunk's counts do not add up, or when every chunk
    succeeded but the records read are not the total that an exact plan counted."""
    summaries = succeeded_summaries(states, "chunk")
    stage = keyed_stage(spec, summaries, buckets)
    failed = [s for s in states if s.status in (FAILED, DEAD_LETTERED)]
    pending = [s for s in states if s.status not in (SUCCEEDED, FAILED, DEAD_LETTERED)]
    if stage is None:
        outputs, units = summaries, (failed, pending, len(states), "chunk")
        failure = None
    else:
        check_shuffle(spec, states, summaries, stage)
        outputs, units = stage.summaries, (stage.failed, stage.pending, len(stage.states), "bucket")
        failure = stage.failure(states)
    unit_failed, unit_pending, unit_total, unit = units
    failure = failure or tolerance_failure(
        len(unit_failed) + len(unit_pending), unit_total, spec.failures, unit
    )
    reasons: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for s in summaries + (stage.summaries if stage else []):
        reasons.update(s.rejection_reasons)
        counts.update(s.counts)
    unfinished = failed or pending or unit_failed or unit_pending
    status = (
        BatchStatus.FAILED
        if failure
        else (BatchStatus.PARTIAL if unfinished else BatchStatus.SUCCEEDED)
    )
    if forced is not None:
        failure, status = None, COMPLETED_FORCED
    result = BatchResult(
        batch_id=spec.batch_id,
        manifest_uri=spec.manifest_uri,
        status=status,
        records_in=sum(s.records_in for s in summaries),
        records_out=sum(s.records_out for s in outputs),
        records_rejected=sum(s.records_rejected for s in summaries)
        + (sum(s.records_rejected for s in stage.summaries) if stage else 0),
        chunks=len(states),
        chunks_succeeded=len(summaries),
        chunks_failed=len(failed),
        chunks_pending=len(pending),
        bytes_read=sum(s.bytes_read for s in summaries),
        processing_seconds=round(sum(s.seconds for s in summaries + outputs), 6),
        peak_rss_bytes=max((s.peak_rss_bytes for s in summaries + outputs), default=0),
        valid_files=[s.valid_uri for s in outputs if s.valid_uri],
        rejected_files=[s.rejected_uri for s in summaries if s.rejected_uri]
        + ([s.rejected_uri for s in stage.summaries if s.rejected_uri] if stage else []),
        rejection_reasons=dict(reasons.most_common()),
        failed_chunks=[failed_entry(s) for s in failed],
        failure=failure,
        counts=dict(sorted(counts.items())),
    )
    if stage is not None:
        result.buckets, result.buckets_succeeded = len(stage.states), len(stage.summaries)
        result.buckets_failed, result.buckets_pending = len(stage.failed), len(stage.pending)
        result.failed_buckets = [failed_entry(s, "bucket") for s in stage.failed]
    if failure and unit_pending:
        result.failure = (
            f"{failure}; {len(unit_pending)} {unit}(s) never finished: run again to resume"
        )
    firsts = result.failed_chunks or result.failed_buckets
    if failure and firsts:
        first = firsts[0]
        which = (
            f"chunk_{first['chunk']:05d}" if "chunk" in first else f"bucket_{first['bucket']:05d}"
        )
        result.failure = (
            f"{result.failure}; dead letters under {spec.output}/dead_letters/; first failure: "
            f"{which} {first['category']}: {(first['error'] or '')[:300]}"
        )
    unify_files(storage, result.valid_files, trailing=(FILE_COLUMN,))
    unify_files(storage, result.rejected_files, trailing=(FILE_COLUMN, *REJECT_META))
    plan = json.loads(storage.read_bytes(spec.plan_uri)) if storage.exists(spec.plan_uri) else {}
    plan.pop("descriptors", None)
    _check_planned_total(spec, plan, result)
    result.chunk_records = plan.get("chunk_records")
    result.plan_reason = plan.get("reason")
    manifest = build_manifest(spec, summaries, states, result, plan, run_id, forced)
    if stage is not None:
        manifest["results"]["buckets"] = bucket_results(stage)
        manifest["totals"].update(
            {k: getattr(result, k) for k in ("buckets", "buckets_succeeded", "buckets_failed",
                                            "buckets_pending")}
        )  # fmt: skip
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
        "counts": result.counts,
        "results": {
            "succeeded": [s.manifest_entry() for s in summaries],
            "failed": result.failed_chunks,
            "pending": [
                {"chunk": s.chunk, "status": s.status, "attempts": s.attempts}
                for s in states
                if s.status not in (SUCCEEDED, FAILED, DEAD_LETTERED)
            ],
        },
        "files": {"valid": result.valid_files, "rejected": result.rejected_files},
    }
