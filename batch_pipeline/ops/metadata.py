"""The metadata the ops attach, named once so that every run uses the same keys and the UI can
plot them across runs (README, "Metadata").

Unprefixed keys describe the whole batch (counted from the ledger); ``chunk_`` keys describe the
one chunk a ``process_chunk`` step did. Statuses go to Dagster as plain text (``str``): it
serializes no enum it does not know, such as ``ChunkStatus`` and ``BatchStatus``.
"""

from __future__ import annotations

import time
from typing import Any

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from batch_pipeline.core.aggregation import BatchResult
from batch_pipeline.core.common.models import BatchSpec, ChunkSummary, join_uri
from batch_pipeline.core.ledger import ChunkState, Progress

CHUNK_TIMINGS_SCHEMA = TableSchema(
    columns=[
        TableColumn("chunk", "int"),
        TableColumn("status", "string"),
        TableColumn("attempts", "int"),
        TableColumn("records_in", "int"),
        TableColumn("records_rejected", "int"),
        TableColumn("seconds", "float"),
        TableColumn("records_per_second", "float"),
        TableColumn("peak_rss_mib", "float"),
    ]
)
REJECTION_SCHEMA = TableSchema(
    columns=[TableColumn("reason", "string"), TableColumn("records", "int")]
)
MAX_TABLE_ROWS = 1000  # the UI's tables stay responsive; the manifest has every chunk


def progress_metadata(progress: Progress, since: float | None) -> dict[str, Any]:
    """The batch's counters, as Step Functions' DescribeMapRun reports them. The rate counts the
    records of chunks finished since ``since`` (this run's start) per second of wall time."""
    return {
        "chunks_total": progress.total,
        "chunks_pending": progress.pending,
        "chunks_running": progress.running,
        "chunks_succeeded": progress.succeeded,
        "chunks_failed": progress.failed,
        "chunks_dead_lettered": progress.dead_lettered,
        "records_processed": progress.records_in,
        "records_rejected": progress.records_rejected,
        "percent_complete": progress.percent,
        "records_per_second": progress.records_per_second(since, time.time()),
    }


def chunk_metadata(summary: ChunkSummary) -> dict[str, Any]:
    """What one chunk did."""
    rate = summary.records_in / summary.seconds if summary.seconds else 0.0
    return {
        "chunk": summary.index,
        "chunk_status": str(summary.status),
        "chunk_records_in": summary.records_in,
        "chunk_records_out": summary.records_out,
        "chunk_records_rejected": summary.records_rejected,
        "chunk_bytes_read": summary.bytes_read,
        "chunk_seconds": summary.seconds,
        "chunk_records_per_second": round(rate, 1),
        "chunk_peak_rss_bytes": summary.peak_rss_bytes,
        "chunk_valid": MetadataValue.path(summary.valid_uri or ""),
        "chunk_rejection_reasons": MetadataValue.json(summary.rejection_reasons),
        **({"chunk_counts": MetadataValue.json(summary.counts)} if summary.counts else {}),
    }


def chunk_timings(states: list[ChunkState]) -> MetadataValue:
    rows = []
    for s in states[:MAX_TABLE_ROWS]:
        seconds = s.seconds or 0.0
        rows.append(
            TableRecord(
                {
                    "chunk": s.chunk,
                    "status": str(s.status),
                    "attempts": s.attempts,
                    "records_in": s.records_in or 0,
                    "records_rejected": s.records_rejected or 0,
                    "seconds": round(seconds, 3),
                    "records_per_second": round((s.records_in or 0) / seconds, 1)
                    if seconds
                    else 0.0,
                    "peak_rss_mib": round((s.peak_rss_bytes or 0) / 2**20, 1),
                }
            )
        )
    return MetadataValue.table(rows, schema=CHUNK_TIMINGS_SCHEMA)


def result_metadata(
    spec: BatchSpec,
    result: BatchResult,
    states: list[ChunkState],
    progress: Progress,
    run_started: float | None,
    processed_this_run: int,
) -> dict[str, Any]:
    """The batch's final figures, for the ``batch_results`` materialization."""
    wall = time.time() - run_started if run_started else 0.0
    reasons = [
        TableRecord({"reason": reason, "records": count})
        for reason, count in list(result.rejection_reasons.items())[:MAX_TABLE_ROWS]
    ]
    # The processor's own totals, each a number of its own (leads_inserted...), never in the
    # place of one of ours.
    counts = {name: int(count) for name, count in result.counts.items()}
    return counts | {
        "batch_id": spec.batch_id,
        "source": spec.source.uri,
        "status": str(result.status),
        "processor": spec.processor,
        **progress_metadata(progress, run_started),
        "records_in": result.records_in,
        "records_out": result.records_out,
        "records_rejected": result.records_rejected,
        "rejection_rate": round(result.records_rejected / result.records_in, 6)
        if result.records_in
        else 0.0,
        "chunks_processed_this_run": processed_this_run,
        "chunk_records": result.chunk_records or 0,
        "plan_reason": result.plan_reason or "",
        "bytes_read": result.bytes_read,
        "processing_seconds": result.processing_seconds,
        "wall_seconds": round(wall, 3),
        "peak_rss_bytes": result.peak_rss_bytes,
        "rejection_reasons": MetadataValue.table(reasons, schema=REJECTION_SCHEMA),
        "chunk_timings": chunk_timings(states),
        "failed_chunks": MetadataValue.json(result.failed_chunks),
        "warnings": MetadataValue.json(list(spec.warnings)),
        "manifest": MetadataValue.path(result.manifest_uri),
        "results": MetadataValue.path(join_uri(spec.output, "valid")),
        "rejected": MetadataValue.path(join_uri(spec.output, "rejected")),
        "dead_letters": MetadataValue.path(join_uri(spec.output, "dead_letters")),
        # The optimizer's decision, when chunking.auto chose the size (README, Chunks).
        **{k: v for k, v in (spec.config.get("tuning") or {}).items() if k.startswith("tuning_")},
    }
