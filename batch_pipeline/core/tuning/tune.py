"""Tuning a batch: ``tune_batch`` gives a prepared batch the chunk size its workload's history
calls for (``chunking.auto``), or the size it was planned with when the ledger knows it, and
``estimate_total_records`` says how many records its source holds before planning."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from batch_pipeline.core.common.models import BatchSpec, SourceSpec
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.tuning.decision import Decision
from batch_pipeline.core.tuning.history import history_from_ledger, workload_key
from batch_pipeline.core.tuning.rules import choose_chunk_records
from batch_pipeline.core.tuning.settings import TuningSettings


def estimate_total_records(source: SourceSpec) -> int | None:
    """Records of a source before planning, from what initialize learned: exact for Parquet,
    sheet rows for Excel, size / sampled bytes per record for uncompressed CSV and JSON Lines
    and for file sets (the first file's); None for JSON documents and compressed text (known
    only once staged)."""
    layout = source.layout
    if source.is_file_set:  # its size over the first file's bytes per record
        per_file_set_record = layout.get("record_bytes_estimate")
        return round(source.info.size / float(per_file_set_record)) if per_file_set_record else None
    if source.needs_staging:
        return None
    if source.format == "parquet":
        return int(layout.get("num_rows") or sum(layout.get("row_groups", [])))
    if source.format == "excel":
        sheets = [s for s in layout.get("sheets", []) if not s.get("empty")]
        return sum(max(int(s["max_row"] or 0) - int(s["header_row"] or 0), 0) for s in sheets)
    per_record = layout.get("bytes_per_record")
    if not per_record:
        return None
    return max(0, round((source.info.size - source.data_start) / float(per_record)))


def tune_batch(
    ledger: Ledger, spec: BatchSpec, settings: TuningSettings | None = None
) -> tuple[BatchSpec, Decision | None]:
    """``spec`` with the chunk size the history of its workload calls for, and the decision.

    A batch the ledger knows already keeps the size it was planned with (resume and redrive
    must cut the same chunks): the spec comes back with that size and no decision. The
    decision goes into the spec's stored config (``config["tuning"]``, with
    ``workload_chunk_records`` for the next decision to start from)."""
    state = ledger.batch(spec.batch_id)
    if state is not None:
        stored = state.config_dict().get("chunking", {}).get("chunk_records")
        if isinstance(stored, int) and stored > 0:
            return _with_size(spec, stored, state.config_dict().get("tuning")), None
    history = history_from_ledger(ledger, workload_key(spec), exclude_batch_id=spec.batch_id)
    decision = choose_chunk_records(history, settings, estimate_total_records(spec.source))
    tuning = {"workload_chunk_records": decision.workload_chunk_records, **decision.to_metadata()}
    return _with_size(spec, decision.chunk_records, tuning), decision


def _with_size(spec: BatchSpec, records: int, tuning: Any) -> BatchSpec:
    config = dict(spec.config)
    config["chunking"] = {**dict(config.get("chunking") or {}), "chunk_records": records}
    if tuning is not None:
        config["tuning"] = tuning
    return replace(spec, chunking=replace(spec.chunking, chunk_records=records), config=config)
